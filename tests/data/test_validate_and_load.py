"""Validation of a planted-defects file (every defect at its exact line) and the loader's
strict/skip modes with report counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrlhf.data.formats import FORMATS
from mmrlhf.data.io import iter_records, load_records
from mmrlhf.data.problems import DataError, LoadReport
from mmrlhf.data.validate import validate


def _rec(rid: str, responses: list, **kw) -> str:
    d = {"id": rid, "conversation": [{"role": "user", "text": "Q?"}], "responses": responses}
    d.update(kw)
    return json.dumps(d)


GOOD = [{"text": "x"}, {"text": "y"}]

# (line text, expected problems as (field, kind)) - the line number is the list position + 1.
PLANTED: list[tuple[str, list[tuple[str, str]]]] = [
    (_rec("a", GOOD, images=["imgs/red.png"], ranking="1>2"), []),
    ('{"id": "b", "conversation": [', [("-", "bad_json")]),
    (_rec("c", [{"text": "x"}, {"text": "   "}], ranking="1>2"),
     [("responses[1].text", "empty_response")]),
    (_rec("d", [{"text": "only one"}]), [("responses", "too_few_responses")]),
    (_rec("e", [{"text": "x", "helpfulness": {"value": 7}}, {"text": "y"}], ranking="1>2"),
     [("responses[0].helpfulness", "score_out_of_range")]),
    (_rec("f", GOOD, ranking="1>3"), [("ranking", "bad_ranking"), ("ranking", "bad_ranking")]),
    (_rec("a", GOOD, ranking="2>1"), [("id", "duplicate_id")]),
    (_rec("g", GOOD, preferences=[{"chosen": 0, "rejected": 5}]),
     [("preferences[0].rejected", "bad_preference")]),
    (_rec("h", GOOD, images=["imgs/nope.png"], ranking="1>2"), [("images[0]", "missing_media")]),
    (_rec("i", GOOD, images=["imgs/broken.png"], ranking="1>2"), [("images[0]", "bad_media")]),
    ("", []),
    (_rec("j", [{"text": "x", "helpfulness": "high"}, {"text": "y"}]),
     [("responses[0].helpfulness", "invalid_record")]),
    (_rec("k", GOOD), [("ranking", "no_preference")]),
    (_rec("l", GOOD, preferences=[{"chosen": 1, "rejected": 0}]), []),
]  # fmt: skip


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    path = tmp_path / "planted.jsonl"
    path.write_text("\n".join(line for line, _ in PLANTED) + "\n")
    return path


def test_every_planted_defect_is_reported_at_its_line(planted: Path, media_root: Path) -> None:
    result = validate(planted, media_root=media_root)
    got = [(p.line, p.field, p.kind) for p in result.problems]
    want = [(n, f, k) for n, (_, probs) in enumerate(PLANTED, start=1) for f, k in probs]
    assert got == want
    assert not result.ok
    assert (result.records_ok, result.records_bad) == (2, 11)
    assert result.counts["bad_ranking"] == 2 and result.counts["bad_json"] == 1
    lines = result.lines()
    assert all(line.startswith(f"{planted}:") for line in lines)
    assert f"{planted}:7: id: duplicate id 'a' (first seen on line 1)" in lines
    assert any(":6: ranking: '1>3' is not a ranking of the 2 responses" in m for m in lines)
    assert any(":5: responses[0].helpfulness: score 7 is outside 1-5" in m for m in lines)
    assert "2 ok, 11 bad" in result.summary()


def test_task_changes_the_response_count_rule(planted: Path, media_root: Path) -> None:
    kinds = validate(planted, media_root=media_root, task="sft").counts
    assert "too_few_responses" not in kinds and "no_preference" not in kinds
    prompts = validate(planted, media_root=media_root, task="prompts", check_media=False)
    assert "missing_media" not in prompts.counts and "bad_media" not in prompts.counts


def test_unknown_format_and_missing_file_are_problems(tmp_path: Path) -> None:
    odd = tmp_path / "odd.jsonl"
    odd.write_text('{"foo": 1}\n')
    res = validate(odd)
    assert res.counts == {"unknown_format": 1}
    assert res.lines()[0].startswith(f"{odd}: -: cannot tell the format")
    assert validate(tmp_path / "absent.jsonl").counts == {"unknown_format": 1}
    msg = validate(odd, format="nope").lines()[0]
    assert msg.endswith("unknown format 'nope'; known formats: " + ", ".join(FORMATS))


def test_strict_raises_first_problem_located(planted: Path, media_root: Path) -> None:
    with pytest.raises(DataError) as e:
        load_records(planted, media_root=media_root)
    assert str(e.value).startswith(f"{planted}:2: -: is not valid JSON")
    assert e.value.kind == "bad_json" and e.value.line == 2


def test_skip_keeps_going_and_counts(planted: Path, media_root: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    recs, report = load_records(
        planted, media_root=media_root, mode="skip", report_path=report_path
    )
    # the loader applies no task rule: K=1 and unlabelled records are fine here
    assert [r.id for r in recs] == ["a", "d", "k", "l"]
    assert report.records_ok == 4 and report.records_bad == 9
    assert report.counts == {
        "bad_json": 1, "empty_response": 1, "score_out_of_range": 1, "bad_ranking": 2,
        "duplicate_id": 1, "bad_preference": 1, "missing_media": 1, "bad_media": 1,
        "invalid_record": 1,
    }  # fmt: skip
    saved = json.loads(report_path.read_text())
    assert saved["records_bad"] == 9 and saved["counts"] == report.counts
    assert len(saved["problems"]) == 10 and saved["problems"][0].startswith(f"{planted}:2:")


def test_strict_writes_report_before_raising(planted: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "r.json"
    with pytest.raises(DataError):
        load_records(planted, report_path=report_path, check_media=False)
    assert json.loads(report_path.read_text())["counts"] == {"bad_json": 1}


def test_iterator_variant_streams_and_fills_report(planted: Path) -> None:
    report = LoadReport()
    it = iter_records(planted, mode="skip", check_media=False, report=report)
    assert next(it).id == "a"
    assert report.records_ok == 1  # filled as it goes
    rest = list(it)
    assert len(rest) == 5 and report.records_bad == 7


def test_json_array_errors_have_element_lines(tmp_path: Path) -> None:
    elems = [
        {"image": "a.jpg", "conversations": [{"from": "human", "value": "Q"}],
         "output_1": {"value": "x"}, "output_2": {"value": "y"}, "preference": 1},
        {"image": "b.jpg", "conversations": [{"from": "human", "value": "Q"}],
         "output_1": {"value": "x"}, "output_2": {"value": "y"}, "preference": 3},
    ]  # fmt: skip
    path = tmp_path / "pref.json"
    path.write_text(json.dumps(elems, indent=2))
    res = validate(path, check_media=False)
    second_line = path.read_text().splitlines().index("  {", 2) + 1
    assert [(p.line, p.field) for p in res.problems] == [(second_line, "preference")]
    path.write_text(json.dumps(elems, indent=2)[:-40])
    res = validate(path, check_media=False)
    assert res.counts == {"bad_json": 1} and res.records_ok == 1  # the first still read


def test_bad_row_drops_its_whole_query(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "prompt": "Q", "chosen": "x", "rejected": "y"},
        {"id": "a", "prompt": "Q", "chosen": "x", "rejected": 5},
        {"id": "b", "prompt": "Q2", "chosen": "x", "rejected": "y"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    recs, rep = load_records(path, mode="skip")
    assert [r.id for r in recs] == ["b"]
    assert [(p.line, p.field, p.kind) for p in rep.problems] == [
        (1, "id", "incomplete_group"),
        (2, "rejected", "invalid_record"),
    ]
    assert "line(s) 2 could not be read" in rep.messages()[0]
