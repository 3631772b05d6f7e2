"""Reference-guided critique RM: the model answers first, then critiques with its answer in
context (layout, the best response as training reference, the extra LM row, scoring)."""

import json

import pytest
import torch
from reward_helpers import rm_config
from typer.testing import CliRunner

from mmrlhf.cli.main import app
from mmrlhf.data.io import load_records
from mmrlhf.data.record import Preference, Ranking, Record, Response
from mmrlhf.models.inputs import IGNORE_INDEX, collate, encode, load_media
from mmrlhf.models.load import ModelConfig, load_vlm
from mmrlhf.models.reward import (
    RewardModel,
    RewardSpec,
    best_response,
    encode_for_reward,
    encode_reference,
    reference_record,
    scoring_record,
)
from mmrlhf.reward.score import generate_references, score_records
from mmrlhf.training.reward import (
    RewardDataConfig,
    RMDataset,
    collate_items,
    prepare_items,
    run_reward,
)

runner = CliRunner()
SPEC = RewardSpec(type="critique", reference=True, response_first=True)


def _rec(**kw):
    return Record.single("r1", "What color?", [Response("a"), Response("b"), Response("c")], **kw)


def test_best_response_from_ranking_and_preferences():
    assert best_response(_rec(ranking=Ranking(groups=[[2, 0], [1]]))) == 2
    prefs = [Preference(1, 0), Preference(2, 1)]
    assert best_response(_rec(preferences=prefs)) == 2  # 1 is chosen once but rejected by 2
    cycle = [Preference(0, 1), Preference(1, 2), Preference(2, 0)]
    assert best_response(_rec(preferences=cycle)) is None
    assert best_response(_rec(preferences=[Preference(0, 1, is_tie=True)])) is None


def test_layout_question_reference_then_response_and_request():
    rec = _rec(ranking=Ranking(groups=[[0], [1, 2]]))
    prompt, completion = scoring_record(rec, "b", SPEC, "crit", reference="a ref")
    roles = [t.role for t in prompt.conversation]
    assert roles == ["user", "assistant", "user"]
    assert prompt.conversation[0].text == "What color?"
    assert prompt.conversation[1].text == "a ref"
    t = SPEC.templates
    want = f"{t.reference_intro}\n\n{t.response_label} b\n\n{t.critique_request}"
    assert prompt.conversation[2].text == want
    assert completion == "crit"
    # MM-RLHF's layout: the response as an assistant turn after the introduction
    spec = RewardSpec(type="critique", reference=True)
    prompt, _ = scoring_record(rec, "b", spec, "crit", reference="a ref")
    assert [t.text for t in prompt.conversation][1:4] == ["a ref", t.reference_intro, "b"]
    # the reference prompt is the question alone: nothing of any response
    assert [t.text for t in reference_record(rec, SPEC).conversation] == ["What color?"]
    with pytest.raises(ValueError, match="r1.*reference answer"):
        scoring_record(rec, "b", SPEC, "crit")
    assert RewardSpec(type="scalar", reference=True).validate() == [
        "reference=true (reference-guided critique) is for the critique type"
    ]


def _cfg(tiny_models, pref_data, out="unused", *extra):
    return rm_config(
        tiny_models["llava"], pref_data, out, "rm.type=critique", "rm.reference=true", *extra
    )


def test_training_rows_the_best_response_is_the_labelled_reference(tiny_models, pref_data):
    _, processor = load_vlm(ModelConfig(path=str(tiny_models["llava"])), for_training=False)
    records, _ = load_records(str(pref_data), task="preference")
    cfg = _cfg(tiny_models, pref_data)
    spec = cfg.rm.spec()
    dc = RewardDataConfig(train=str(pref_data))
    items, skipped = prepare_items(records, dc, spec)
    assert not skipped and len(items) == len(records)
    for it, rec in zip(items, records, strict=True):
        assert it.reference == rec.responses[rec.ranking.groups[0][0]].text
    root = str(pref_data.parent)
    plain = RMDataset(items, processor, root, spec, dc)
    ds = RMDataset(items, processor, root, spec, dc, train_reference=True)
    exs, it = ds[0]
    assert len(exs) == len(plain[0][0]) + 1 == len(it.texts) + 1
    for a, b in zip(exs, plain[0][0], strict=False):
        assert torch.equal(a.input_ids, b.input_ids)  # the response rows are unchanged
    ref_row = exs[-1]
    want = encode(reference_record(it.record, spec), it.reference, processor, media_root=root)
    assert torch.equal(ref_row.input_ids, want.input_ids)
    labelled = ref_row.labels[ref_row.labels != IGNORE_INDEX]
    assert it.reference in processor.tokenizer.decode(labelled)
    # each response row holds the reference in its context
    ref_ids = processor.tokenizer(it.reference, add_special_tokens=False)["input_ids"]
    row = exs[0].input_ids.tolist()
    assert any(row[i : i + len(ref_ids)] == ref_ids for i in range(len(row)))
    # no pair points at a reference row
    batch = collate_items([ds[0], ds[1]], processor.tokenizer.pad_token_id)
    ref_rows = {len(ds[0][0]) - 1, len(ds[0][0]) + len(ds[1][0]) - 1}
    pairs = batch["pairs"]
    used = set(pairs["chosen"].tolist()) | set(pairs["rejected"].tolist())
    assert used and not used & ref_rows


def test_record_without_a_best_response_is_skipped_or_raised(tiny_models, pref_data, tmp_path):
    records, _ = load_records(str(pref_data), task="preference")
    rec = records[0]
    rec.ranking = None
    rec.preferences = [Preference(0, 1), Preference(1, 2), Preference(2, 0)]
    spec = _cfg(tiny_models, pref_data).rm.spec()
    items, counts = prepare_items([rec, records[1]], RewardDataConfig(), spec)
    assert len(items) == 1 and counts == {"no_best_response": 1}
    with pytest.raises(ValueError, match=f"{rec.id}.*none that no pair rejects"):
        prepare_items([rec], RewardDataConfig(strict=True), spec)


def test_reference_rm_trains_and_saves_its_layout(tiny_models, pref_data, tmp_path):
    cfg = _cfg(
        tiny_models,
        pref_data,
        tmp_path,
        "train.max_steps=30",
        "train.num_threads=1",
        "rm.head_dropout=0",
        "model.freeze_vision_tower=false",
        f"data.eval={pref_data}",
    )
    res = run_reward(cfg)
    assert res["eval_pair_acc"] >= 0.75, res["eval"]
    rm = RewardModel.from_pretrained(res["final"], device="cpu")
    assert rm.spec.reference and rm.spec.type == "critique"


@pytest.fixture(scope="module")
def reference_rm(tiny_models, tmp_path_factory):
    torch.manual_seed(0)
    rm = RewardModel.from_pretrained(tiny_models["llava"], init_head=True, spec=SPEC, device="cpu")
    return rm.save_pretrained(tmp_path_factory.mktemp("rm-ref") / "rm")


def test_scoring_writes_the_generated_reference_into_every_critique(reference_rm, pref_data):
    rm = RewardModel.from_pretrained(reference_rm, device="cpu")
    root = pref_data.parent
    recs = load_records(pref_data)[0][:3]
    media = [load_media(r, root) for r in recs]
    # batched, left-padded references equal each record's own generation
    batched = generate_references(
        rm.vlm, rm.processor, rm.spec, list(zip(recs, media, strict=True)), max_new_tokens=6
    )
    for r, m, ref in zip(recs, media, batched, strict=True):
        ex = encode_reference(r, rm.processor, rm.spec, None, media=m)
        b = collate([ex], rm.processor.tokenizer.pad_token_id, padding_side="left")
        b.pop("labels")
        ids = rm.vlm.generate(**b, max_new_tokens=6, do_sample=False)[0, ex.input_ids.shape[0] :]
        assert ref == rm.processor.tokenizer.decode(ids, skip_special_tokens=True).strip()
    seen = []
    orig = rm.forward
    rm.forward = lambda b, **kw: seen.append(b) or orig(b, **kw)
    out = score_records(rm, rm.processor, recs, max_new_tokens=6, media_root=root, progress=False)
    assert [r.meta["rm_reference"] for r in out] == batched
    # the scored rows hold each record's reference (ahead of the response and its critique)
    want = encode_for_reward(
        out[0],
        [out[0].responses[0].text],
        rm.processor,
        rm.spec,
        critiques=[out[0].responses[0].critique],
        reference=batched[0],
        media=media[0],
        truncate_response=True,
    )[0].input_ids
    ids, mask = seen[0]["input_ids"], seen[0]["attention_mask"].bool()
    assert any(torch.equal(ids[i][mask[i]], want) for i in range(len(ids)))


def test_given_reference_is_the_best_response_and_the_cli_passes_it(
    reference_rm, pref_data, tmp_path
):
    out = tmp_path / "s.jsonl"
    r = runner.invoke(
        app,
        [
            "reward", "score", str(pref_data), "--rm", str(reference_rm), "--out", str(out),
            "--reference", "given", "--max-new-tokens", "4", "--no-progress",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    for row in rows:
        best = Ranking.parse(row["ranking"]["order"]).groups[0][0]
        assert row["meta"]["rm_reference"] == row["responses"][best]["text"]
    r = runner.invoke(
        app,
        [
            "reward", "score", str(pref_data), "--rm", str(reference_rm), "--out",
            str(tmp_path / "x.jsonl"), "--reference", "oracle",
        ],
    )  # fmt: skip
    assert r.exit_code == 2 and "reference must be one of generate, given" in r.output


def test_reference_weight_scales_the_reference_rows_lm_loss(tiny_models, pref_data):
    """lm_weight [B] multiplies each row's token losses: with weights (1, 3) the sum is
    row0 + 3 * row1 of the unweighted per-row sums."""
    rm = RewardModel.from_pretrained(tiny_models["llava"], init_head=True, spec=SPEC, device="cpu")
    rec = load_records(pref_data)[0][0]
    media = load_media(rec, pref_data.parent)
    rows = [
        encode_for_reward(
            rec, ["x"], rm.processor, SPEC, critiques=["ok"], reference="r", media=media
        )[0],
        encode_reference(rec, rm.processor, SPEC, "The circle is red.", media=media),
    ]
    pad = rm.processor.tokenizer.pad_token_id
    rm.eval()
    with torch.no_grad():
        each = [float(rm(collate([e], pad), lm=True).lm_loss_sum) for e in rows]
        both = rm(collate(rows, pad), lm=True, lm_weight=torch.tensor([1.0, 3.0])).lm_loss_sum
    assert float(both) == pytest.approx(each[0] + 3 * each[1], rel=1e-4)


def test_reference_weight_zero_needs_a_reference_model(tiny_models, pref_data, tmp_path):
    records, _ = load_records(str(pref_data), task="preference")
    cfg = _cfg(tiny_models, pref_data, tmp_path, "rm.reference_weight=0", "train.max_steps=2")
    spec = cfg.rm.spec()
    assert spec.reference and not spec.writes_reference
    res = run_reward(cfg)
    rm = RewardModel.from_pretrained(res["final"], device="cpu")
    assert not rm.spec.writes_reference
    recs = load_records(pref_data)[0][:2]
    kw = {"max_new_tokens": 4, "media_root": pref_data.parent, "progress": False}
    with pytest.raises(ValueError, match=r"reference_weight=0.*--reference-model"):
        score_records(rm, rm.processor, recs, **kw)
    # another model writes the references: the same ones it writes alone
    writer, proc = load_vlm(ModelConfig(path=str(tiny_models["llava"])), for_training=False)
    out = score_records(rm, rm.processor, recs, reference_model=(writer, proc), **kw)
    media = [load_media(r, pref_data.parent) for r in recs]
    want = generate_references(
        writer, proc, rm.spec, list(zip(recs, media, strict=True)), max_new_tokens=4
    )
    assert [r.meta["rm_reference"] for r in out] == want
    r = runner.invoke(
        app,
        [
            "eval", "rewardbench", "--rm", res["final"], "--data", str(pref_data),
            "--reference-model", str(tiny_models["llava"]), "--max-new-tokens", "4",
            "--out", str(tmp_path / "bench"), "--no-progress",
        ],
    )  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = [json.loads(x) for x in (tmp_path / "bench" / "scored.jsonl").read_text().splitlines()]
    assert [x["meta"]["rm_reference"] for x in rows[:2]] == want
