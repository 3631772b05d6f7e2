"""POPE parsing and metrics: hand-computed cases and the real COCO POPE files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrlhf.evaluation.metrics.pope import (
    load_pope_file,
    parse_pope_answer,
    pope_metrics,
    score_pope_file,
)

BENCHMARKS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes, there is a dog in the image.", "yes"),
        ("No, there is not.", "no"),
        ("No", "no"),
        ("There is not a dog in the image.", "no"),
        ("There is a dog, not a cat", "no"),  # commas are deleted: "dog not"
        ("I see no dog", "no"),
        # only the first sentence counts
        ("Yes. But there is no cat.", "yes"),
        ("No. Yes.", "no"),
        # whole words only, compared exactly (the reference script's quirks)
        ("Nothing suggests otherwise", "yes"),
        ("There is nobody", "yes"),
        ("Not really", "yes"),
        ("NO", "yes"),
        ("No!", "yes"),
        ("no,there", "yes"),  # -> "nothere"
        ("", "yes"),
    ],
)
def test_parse_pope_answer_reference_rule(text: str, expected: str) -> None:
    assert parse_pope_answer(text) == expected


def test_parse_pope_answer_rejects_non_string() -> None:
    with pytest.raises(ValueError, match="answer"):
        parse_pope_answer(None)  # type: ignore[arg-type]


def test_pope_metrics_hand_computed() -> None:
    # pred:  yes yes yes no  no
    # label: yes no  no  no  yes
    # TP = 1 (#0), FP = 2 (#1, #2), TN = 1 (#3), FN = 1 (#4)
    # accuracy = (1 + 1) / 5 = 0.4; precision = 1 / 3; recall = 1 / 2
    # f1 = 2 * (1/3) * (1/2) / (1/3 + 1/2) = (1/3) / (5/6) = 0.4; yes_ratio = 3 / 5 = 0.6
    m = pope_metrics(["yes", "yes", "yes", "no", "no"], ["yes", "no", "no", "no", "yes"])
    assert (m["tp"], m["fp"], m["tn"], m["fn"], m["n"]) == (1, 2, 1, 1, 5)
    assert m["accuracy"] == pytest.approx(0.4)
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(0.5)
    assert m["f1"] == pytest.approx(0.4)
    assert m["yes_ratio"] == pytest.approx(0.6)


def test_pope_metrics_zero_division_is_zero() -> None:
    # never "yes": TP = FP = 0, so precision = 0/0 -> 0.0, recall = 0/1 = 0.0, f1 -> 0.0
    m = pope_metrics(["no", "no"], ["yes", "no"])
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (0, 0, 1, 1)
    assert m["precision"] == 0.0 and m["recall"] == 0.0 and m["f1"] == 0.0
    assert m["accuracy"] == 0.5 and m["yes_ratio"] == 0.0
    empty = pope_metrics([], [])
    assert empty["n"] == 0 and empty["accuracy"] == 0.0 and empty["f1"] == 0.0


def test_pope_metrics_bad_input() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        pope_metrics(["yes"], ["yes", "no"])
    with pytest.raises(ValueError, match=r"predictions\[1\]"):
        pope_metrics(["yes", "Yes"], ["yes", "no"])
    with pytest.raises(ValueError, match=r"labels\[0\]"):
        pope_metrics(["yes"], ["true"])


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _q(qid: object, label: object = "yes", **kw: object) -> dict:
    return {"question_id": qid, "image": "x.jpg", "text": "Is there a dog?", "label": label, **kw}


def test_load_pope_file_errors_name_file_line_and_field(tmp_path: Path) -> None:
    cases = [
        ([_q(1), _q(2, "maybe")], ":2: label"),
        ([_q(1), {"question_id": 2, "image": "x", "label": "no"}], ":2: text: missing"),
        ([_q("1")], ":1: question_id"),
        ([_q(1), _q(1, "no")], ":2: question_id: duplicate 1"),
        (["{not json"], ":1: line: not valid JSON"),
    ]
    for i, (rows, msg) in enumerate(cases):
        p = _write(tmp_path / f"bad{i}.jsonl", rows)
        with pytest.raises(ValueError) as e:
            load_pope_file(p)
        assert str(p) + msg in str(e.value)


def test_score_pope_file_missing_answers(tmp_path: Path) -> None:
    p = _write(tmp_path / "pope.jsonl", [_q(1, "yes"), _q(2, "no"), "", _q(3, "yes"), _q(4, "no")])
    assert [q["question_id"] for q in load_pope_file(p)] == [1, 2, 3, 4]
    answers = {1: "Yes.", 2: "No, there is not.", 3: "There is no dog."}
    with pytest.raises(ValueError, match="1 of 4 questions"):
        score_pope_file(p, answers)
    with pytest.raises(ValueError, match="not in"):
        score_pope_file(p, {**answers, 4: "No", 99: "yes"})
    # missing #4 (label no) counted wrong -> "yes": preds yes, no, no, yes vs yes, no, yes, no
    # TP = 1 (#1), TN = 1 (#2), FN = 1 (#3), FP = 1 (#4): accuracy 0.5, precision 0.5
    m = score_pope_file(p, answers, missing="wrong")
    assert (m["tp"], m["tn"], m["fn"], m["fp"], m["missing"]) == (1, 1, 1, 1, 1)
    assert m["accuracy"] == 0.5 and m["precision"] == 0.5
    full = score_pope_file(p, {**answers, 4: "No"})
    assert full["missing"] == 0 and full["accuracy"] == 0.75


@pytest.mark.parametrize(
    ("split", "n_lines"), [("random", 2910), ("popular", 3000), ("adversarial", 3000)]
)
def test_real_pope_files(split: str, n_lines: int) -> None:
    path = BENCHMARKS / f"coco_pope_{split}.jsonl"
    if not path.is_file():
        pytest.skip(f"{path} is not available")
    questions = load_pope_file(path)
    assert len(questions) == n_lines

    # fixed answers: "yes" when question_id % 3 == 0, otherwise one of two "no" phrasings
    # (the second says "no" in its first sentence only). Odd/even would be degenerate: in the
    # popular and adversarial splits every odd id is a "yes" probe.
    def answer(qid: int) -> str:
        if qid % 3 == 0:
            return "Yes, there is one in the image."
        return "No, there is not." if qid % 2 else "There is no such object. Yes, I am sure."

    answers = {q["question_id"]: answer(q["question_id"]) for q in questions}
    m = score_pope_file(path, answers)

    # expected numbers from the raw file by set counting, without the module's code
    raw = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    yes_ids = {d["question_id"] for d in raw if d["label"] == "yes"}
    said_yes = {d["question_id"] for d in raw if d["question_id"] % 3 == 0}
    all_ids = {d["question_id"] for d in raw}
    n = len(all_ids)
    tp = len(said_yes & yes_ids)
    fp = len(said_yes - yes_ids)
    fn = len(yes_ids - said_yes)
    tn = n - tp - fp - fn
    precision, recall = tp / len(said_yes), tp / len(yes_ids)
    assert n == n_lines and min(tp, fp, fn, tn) > 0  # a confusion matrix with no empty cell
    assert (m["n"], m["tp"], m["fp"], m["fn"], m["tn"]) == (n, tp, fp, fn, tn)
    assert m["accuracy"] == pytest.approx((tp + tn) / n)
    assert m["precision"] == pytest.approx(precision)
    assert m["recall"] == pytest.approx(recall)
    assert m["f1"] == pytest.approx(2 * precision * recall / (precision + recall))
    assert m["yes_ratio"] == pytest.approx(len(said_yes) / n)
    assert len(yes_ids) == 1500  # every split has 1500 "yes" probes (random: 1410 "no")
