"""Every format: write then read back (writable ones), or read a fixture written in the
format (read-only ones), checking the fields the format can carry."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_helpers import png_bytes, ranked_record

from mmrlhf.data.formats import FormatError, detect_format, get_format
from mmrlhf.data.io import load_records, save_records
from mmrlhf.data.pairs import derive_pairs
from mmrlhf.data.record import ImageRef, Preference, Record


def _load(path: Path, root: Path, fmt: str = "auto") -> list[Record]:
    recs, report = load_records(path, format=fmt, media_root=root)
    assert report.ok, report.messages()
    return recs


def _pairs_by_text(rec: Record, **kw: str) -> list[tuple[str, str]]:
    return [
        (rec.responses[p.chosen].text, rec.responses[p.rejected].text)
        for p in derive_pairs(rec, **kw)
    ]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_own_formats_are_lossless(fmt: str, records, media_root: Path, tmp_path: Path) -> None:
    out = tmp_path / f"out.{fmt}"
    assert save_records(records, out) == len(records)
    assert detect_format(out) == fmt
    back = _load(out, media_root)
    assert [r.to_dict() for r in back] == [r.to_dict() for r in records]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_embedded_images_round_trip(fmt: str, records, media_root: Path, tmp_path: Path) -> None:
    out = tmp_path / f"emb.{fmt}"
    save_records(records, out, media_root=media_root, embed_images=True)
    # read from elsewhere: the bytes make the file self-contained (the video is not embedded)
    back = _load(out, media_root)
    assert back[0].images[0].data == (media_root / "imgs/red.png").read_bytes()
    assert back[0].images[0].path == "imgs/red.png"
    back_nomedia, rep = load_records(out, media_root=tmp_path / "nowhere", mode="skip")
    assert [r.id for r in back_nomedia] == ["q1", "q2", "q3"]  # q4's video is not embedded
    assert rep.counts == {"missing_media": 1}


def test_mmrlhf_pairs_round_trip(records, media_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "pairs.jsonl"
    n = save_records(records, out, format="mmrlhf_pairs", ties="keep", margin="given")
    assert n == 6 + 1 + 3 + 1
    assert detect_format(out) == "mmrlhf_pairs"
    back = {r.id: r for r in _load(out, media_root)}
    for rec in records:
        b = back[rec.id]
        assert [r.text for r in b.responses] == [r.text for r in rec.responses]
        assert [r.source for r in b.responses] == [r.source for r in rec.responses]
        assert b.conversation == rec.conversation
        assert [im.path for im in b.images] == [im.path for im in rec.images]
        assert b.video == (None if rec.video is None else type(rec.video)(rec.video.path))
        assert b.category == (rec.category or "imgs")  # no category: from the image path
        assert _pairs_by_text(b, ties="keep") == _pairs_by_text(rec, ties="keep")
    assert back["q2"].preferences[0].margin == 2.5
    assert back["q1"].preferences[-1].is_tie


def test_mmrlhf_pairs_reader_on_published_columns(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "image": "mcq/1.png", "prompt": "Q?", "chosen": "x", "rejected": "y",
         "chosen_reason": "good", "rejected_reason": "bad", "reference_chosen_logp": -3.0,
         "reference_rejected_logp": -4.0, "scaling": 0.4, "extra": 7},
        {"id": "a", "image": "mcq/1.png", "prompt": "Q?", "chosen": "x", "rejected": "z",
         "chosen_reason": "good", "rejected_reason": "worse", "is_tie": True},
        {"id": "b", "video": "video/v1", "prompt": "V?", "chosen": "p", "rejected": "q",
         "chosen_reason": "", "rejected_reason": ""},
    ]  # fmt: skip
    path = tmp_path / "dpo_pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    a, b = _load_nomedia(path)
    assert [r.text for r in a.responses] == ["x", "y", "z"]  # "x" deduplicated
    assert a.responses[0].meta == {"reason": "good"} and a.responses[0].ref_logp == -3.0
    assert a.responses[1].ref_logp == -4.0
    assert [(p.chosen, p.rejected, p.is_tie, p.margin) for p in a.preferences] == [
        (0, 1, False, 0.4),
        (0, 2, True, None),
    ]
    assert a.preferences[0].meta == {"extra": 7}
    assert a.category == "mcq" and b.category == "video" and b.video.path == "video/v1"
    assert b.responses[0].meta == {}  # empty reasons are no reasons
    # written back, the published columns come out again
    out = tmp_path / "again.jsonl"
    save_records([a, b], out, format="mmrlhf_pairs", ties="keep")
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert again[0]["margin"] == 0.4  # read from "scaling", written as "margin"
    assert again[0]["extra"] == 7
    assert again[0]["reference_chosen_logp"] == -3.0 and again[1]["is_tie"] is True
    assert again[1]["rejected_reason"] == "worse"


def _load_nomedia(path: Path, fmt: str = "auto") -> list[Record]:
    recs, report = load_records(path, format=fmt, check_media=False)
    assert report.ok, report.messages()
    return recs


def test_mmrlhf_annotation_fixture_and_round_trip(tmp_path: Path) -> None:
    obj = {
        "id": "long/000123",
        "image": "long/000123.jpg",
        "question": "Describe the scene.",
        "responses": [
            {"model": "gpt-4o", "response": "A cat on a mat.",
             "helpfulness": {"score": 4, "reason": "clear"},
             "faithfulness": {"score": 5, "reason": "all true"},
             "ethics": {"score": 5, "reason": "harmless"}, "critique": "Accurate and concise."},
            {"model": "llava-ov", "response": "A dog.", "helpfulness": 2,
             "faithfulness": {"score": 1, "reason": "wrong animal"}, "ethics": 5},
            {"model": "qwen2-vl", "response": "An animal.", "helpfulness": {"score": 2},
             "faithfulness": {"score": 3}, "ethics": {"score": 5}, "latency_ms": 80},
        ],
        "ranking": "1>2=3",
        "ranking_reason": "1 is faithful, 2 and 3 equally poor",
        "is_tie": True,
        "annotator": "a17",
    }  # fmt: skip
    path = tmp_path / "annot.jsonl"
    path.write_text(json.dumps(obj) + "\n")
    assert detect_format(path) == "mmrlhf_annotation"
    [rec] = _load_nomedia(path)
    assert rec.id == "long/000123" and rec.category == "long"
    assert rec.query == "Describe the scene."
    r0, r1, r2 = rec.responses
    assert (r0.source, r0.helpfulness.value, r0.helpfulness.reason) == ("gpt-4o", 4, "clear")
    assert r0.critique == "Accurate and concise." and r1.faithfulness.reason == "wrong animal"
    assert r1.helpfulness.value == 2 and r2.meta == {"latency_ms": 80}
    assert rec.ranking.groups == [[0], [1, 2]] and rec.ranking.reason.startswith("1 is")
    assert rec.meta == {"annotator": "a17"}
    out = tmp_path / "annot2.jsonl"
    save_records([rec], out, format="mmrlhf_annotation")
    [back] = _load_nomedia(out)
    assert back.to_dict() == rec.to_dict()
    # and it round-trips through our records too
    save_records([rec], tmp_path / "r.jsonl")
    assert _load_nomedia(tmp_path / "r.jsonl")[0].to_dict() == rec.to_dict()


def test_rlaif_v_parquet_fixture(tmp_path: Path) -> None:
    img = png_bytes()
    table = pa.table(
        {
            "ds_name": ["RLAIF-V", "RLAIF-V"],
            "image": [{"bytes": img, "path": "a.png"}, {"bytes": img, "path": "b.png"}],
            "question": ["What is this?", "Colour?"],
            "chosen": ["A red square.", "Red."],
            "rejected": ["A blue circle.", "Blue."],
            "origin_dataset": ["COCO", "VQAv2"],
            "origin_split": [
                json.dumps({"model": "OmniLMM-12B", "feedback_model": "LLaVA-NeXT",
                            "type": "detailed_description"}),
                "not json",
            ],
            "idx": [7, 8],
            "image_path": ["coco/a.png", "vqa/b.png"],
            "logps": [json.dumps([-10.0, -1.0, [-1.0] * 10, -20.0, -2.0, [-2.0] * 10]),
                      json.dumps({"weird": 1})],
        }
    )  # fmt: skip
    path = tmp_path / "rlaif.parquet"
    pq.write_table(table, path)
    assert detect_format(path) == "rlaif_v"
    recs, report = load_records(path)  # bytes are embedded: media check passes
    assert report.ok and len(recs) == 2
    r = recs[0]
    assert r.id == "RLAIF-V-7" and r.query == "What is this?"
    assert [x.text for x in r.responses] == ["A red square.", "A blue circle."]
    assert [(p.chosen, p.rejected) for p in r.preferences] == [(0, 1)]
    assert r.images[0].data == img and r.images[0].path == "coco/a.png"
    assert r.meta["origin_split"]["model"] == "OmniLMM-12B"
    assert (r.responses[0].ref_logp, r.responses[1].ref_logp) == (-10.0, -20.0)
    assert recs[1].meta["origin_split"] == "not json"
    assert recs[1].responses[0].ref_logp is None
    assert [n.kind for n in report.notices] == ["logps_ignored"]


def test_llava_rlhf_preference_fixture(tmp_path: Path) -> None:
    data = [
        {"id": "lr1", "image": "COCO_train2014_000000000009.jpg",
         "conversations": [{"from": "human", "value": "<image>\nWhat is on the plate?"}],
         "output_1": {"from": "llava", "value": "Broccoli and bread."},
         "output_2": {"from": "llava", "value": "A pizza."},
         "preference": 1, "hallucination": 2},
        {"image": "COCO_train2014_000000000025.jpg",
         "conversations": [{"from": "human", "value": "What animal?\n<image>"},
                           {"from": "gpt", "value": "A giraffe."},
                           {"from": "human", "value": "How many?"}],
         "output_1": {"value": "Three."}, "output_2": {"value": "One."}, "preference": 2},
    ]  # fmt: skip
    path = tmp_path / "human_preference.json"
    path.write_text(json.dumps(data, indent=1))
    assert detect_format(path) == "llava_rlhf"
    a, b = _load_nomedia(path)
    assert a.id == "lr1" and a.query == "What is on the plate?"  # <image> stripped
    assert [r.text for r in a.responses] == ["Broccoli and bread.", "A pizza."]
    assert [(p.chosen, p.rejected) for p in a.preferences] == [(0, 1)]
    assert a.meta == {"hallucination": 2} and a.images[0].path.endswith("009.jpg")
    assert b.id == "COCO_train2014_000000000025.jpg#1"
    assert [t.role for t in b.conversation] == ["user", "assistant", "user"]
    assert b.conversation[0].text == "What animal?"
    assert [(p.chosen, p.rejected) for p in b.preferences] == [(1, 0)]


def test_llava_rlhf_ppo_fixture_is_prompts_only(tmp_path: Path) -> None:
    data = [
        {"id": "ppo1", "image": "COCO_1.jpg",
         "conversations": [{"from": "human", "value": "<image>\nDescribe it."},
                           {"from": "gpt", "value": ""}],
         "captions": ["A man rides a horse.", "A horse on a beach."],
         "caption_type": 2, "length_bonus": 0.5},
    ]  # fmt: skip
    path = tmp_path / "ppo_prompts.json"
    path.write_text(json.dumps(data))
    assert detect_format(path) == "llava_rlhf_ppo"
    [r] = _load_nomedia(path)
    assert r.responses == [] and r.query == "Describe it."
    assert r.facts.captions == ["A man rides a horse.", "A horse on a beach."]
    assert r.meta == {"caption_type": 2, "length_bonus": 0.5, "reference_response": ""}
    # K >= 2 applies to preference data only
    _, rep = load_records(path, check_media=False, mode="skip", task="preference")
    assert rep.counts == {"too_few_responses": 1}
    _, rep = load_records(path, check_media=False, mode="skip", task="prompts")
    assert rep.ok


def _comparable(rec: Record) -> tuple:
    return (
        [(t.role, t.text) for t in rec.conversation],
        [im.path for im in rec.images],
        rec.video.path if rec.video else None,
        [r.text for r in rec.responses],
        _pairs_by_text(rec),
    )


@pytest.mark.parametrize("ext", ["jsonl", "parquet"])
def test_trl_round_trip(ext: str, records, media_root: Path, tmp_path: Path) -> None:
    imgs = [r for r in records if r.video is None]
    out = tmp_path / f"trl.{ext}"
    n = save_records(imgs, out, format="trl", media_root=media_root, embed_images=True)
    assert n == 5 + 1 + 3
    assert detect_format(out) == "trl"
    back = {r.id: r for r in _load(out, tmp_path / "elsewhere")}  # embedded: no files needed
    for rec in imgs:
        b = back[rec.id]
        assert _comparable(b)[0] == _comparable(rec)[0]
        assert _comparable(b)[3:] == _comparable(rec)[3:]
        assert [im.data for im in b.images] == [
            (media_root / im.path).read_bytes() for im in rec.images
        ]
    assert back["q2"].preferences[0].margin == 2.5


def test_trl_parquet_is_loadable_by_datasets(records, media_root: Path, tmp_path: Path) -> None:
    from datasets import load_dataset

    out = tmp_path / "trl.parquet"
    save_records(records[:1], out, format="trl", media_root=media_root, embed_images=True)
    ds = load_dataset("parquet", data_files=str(out), split="train")
    row = ds[0]
    assert row["images"][0].size == (8, 8)  # a PIL image, as TRL expects
    assert row["prompt"][0]["content"][0]["type"] == "image"
    assert row["chosen"][0]["role"] == "assistant"


def test_trl_reads_rows_without_id(tmp_path: Path) -> None:
    row = {
        "images": ["a.png"],
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q"}]}],
        "chosen": [{"role": "assistant", "content": [{"type": "text", "text": "good"}]}],
        "rejected": [{"role": "assistant", "content": "bad"}],
    }
    path = tmp_path / "t.jsonl"
    path.write_text(
        json.dumps(row)
        + "\n"
        + json.dumps({**row, "rejected": [{"role": "assistant", "content": "worse"}]})
        + "\n"
    )
    [rec] = _load_nomedia(path)
    assert [r.text for r in rec.responses] == ["good", "bad", "worse"]
    assert rec.id.startswith("q")


@pytest.mark.parametrize("fmt", ["llamafactory", "swift"])
def test_sharegpt_style_round_trip(fmt: str, records, media_root: Path, tmp_path: Path) -> None:
    out = tmp_path / ("lf.json" if fmt == "llamafactory" else "sw.jsonl")
    n = save_records(records, out, format=fmt)
    assert n == 5 + 1 + 3 + 1
    assert detect_format(out) == fmt
    back = _load(out, media_root)
    assert len(back) == len(records)
    by_query = {r.query: r for r in back}
    for rec in records:
        assert _comparable(by_query[rec.query]) == _comparable(rec)
    if fmt == "llamafactory":
        first = json.loads(out.read_text())[0]
    else:
        first = json.loads(out.read_text().splitlines()[0])
    if fmt == "llamafactory":
        assert first["conversations"][0] == {
            "from": "human",
            "value": "<image>What is in the image?",
        }
        assert first["chosen"] == {"from": "gpt", "value": "answer A"}
        info = json.loads((tmp_path / "dataset_info.json").read_text())
        assert info["lf"]["ranking"] is True and info["lf"]["formatting"] == "sharegpt"
        assert info["lf"]["columns"]["videos"] == "videos"
    else:
        assert first["messages"][0] == {"role": "user", "content": "<image>What is in the image?"}
        assert first["rejected_response"] == "answer B" and first["images"] == ["imgs/red.png"]
        assert json.loads(out.read_text().splitlines()[5])["margin"] == 2.5


def test_bytes_only_images_are_exported_for_path_formats(tmp_path: Path) -> None:
    rec = Record.single(
        "id/1", "Q", ["a", "b"], images=[ImageRef(data=png_bytes())], preferences=[Preference(0, 1)]
    )
    out = tmp_path / "sw.jsonl"
    save_records([rec], out, format="swift")
    row = json.loads(out.read_text())
    assert row["images"] == ["sw_media/id_1_0.png"]
    assert (tmp_path / "sw_media/id_1_0.png").read_bytes() == png_bytes()


def test_unknown_formats_are_clear_errors(tmp_path: Path) -> None:
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"foo": 1}\n')
    with pytest.raises(FormatError, match=r"cannot tell the format from the keys \['foo'\]"):
        detect_format(odd)
    with pytest.raises(FormatError, match="unknown format 'csv'"):
        get_format("csv")
    with pytest.raises(FormatError, match="can be read but not written"):
        save_records([ranked_record()], tmp_path / "x.json", format="llava_rlhf")
    with pytest.raises(FormatError, match="extension"):
        save_records([ranked_record()], tmp_path / "x.txt")
