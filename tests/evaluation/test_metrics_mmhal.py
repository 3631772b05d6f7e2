"""MMHal-Bench rating parsing, metrics and the real question file."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mmrlhf.evaluation.metrics.mmhal import (
    MMHAL_TYPES,
    load_mmhal_bench,
    mmhal_metrics,
    parse_rating,
)

BENCHMARKS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks"
MMHAL = BENCHMARKS / "mmhal_bench.json"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer matches the labels.\nRating: 5", 5),
        ("Explanation ... rating:6", 6),
        ("RATING : 0", 0),
        ("Overall rating: 3. As said, rating: 3.", 3),  # the same value twice is one match
        ("Rating: 2 ... on reflection, rating: 4", None),  # several distinct values
        ("I would give it a four.", None),  # no match
        ("Rating: 7", None),  # out of range
        ("Rating: 10", None),  # read whole, not as 1
        ("Rating: 4.5", None),  # not an integer
        ("Rating: 4 or rating: 4.5", None),  # 4 and 4.5 are distinct
        ("", None),
    ],
)
def test_parse_rating(text: str, expected: int | None) -> None:
    assert parse_rating(text) == expected


def test_mmhal_metrics_hand_computed() -> None:
    ratings = [6, 2, None, 4, 0, 3]
    types = ["attribute", "attribute", "counting", "counting", "counting", "other"]
    m = mmhal_metrics(ratings, types)
    # None scores 0: values 6, 2, 0, 4, 0, 3 -> mean 15 / 6 = 2.5
    # below 3: 2, 0, 0 -> 3 / 6 = 0.5
    assert m["mmhal_score"] == pytest.approx(2.5)
    assert m["mmhal_hallucination_rate"] == pytest.approx(0.5)
    assert m["mmhal_unparsed"] == 1 and m["mmhal_n"] == 6
    # attribute: 6, 2 -> mean 4.0, rate 1/2; counting: 0, 4, 0 -> 4/3, rate 2/3;
    # other: 3 -> mean 3.0, rate 0 (3 is not below 3)
    assert m["mmhal_score/attribute"] == pytest.approx(4.0)
    assert m["mmhal_hallucination_rate/attribute"] == pytest.approx(0.5)
    assert m["mmhal_score/counting"] == pytest.approx(4 / 3)
    assert m["mmhal_hallucination_rate/counting"] == pytest.approx(2 / 3)
    assert m["mmhal_score/other"] == pytest.approx(3.0)
    assert m["mmhal_hallucination_rate/other"] == 0.0
    assert (m["mmhal_n/attribute"], m["mmhal_n/counting"], m["mmhal_n/other"]) == (2, 3, 1)
    assert not any(k.endswith("/holistic") for k in m)  # only types present


def test_mmhal_metrics_bad_input_and_empty() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        mmhal_metrics([1, 2], ["other"])
    with pytest.raises(ValueError, match=r"ratings\[1\]"):
        mmhal_metrics([1, 7], ["other", "other"])
    with pytest.raises(ValueError, match=r"ratings\[0\]"):
        mmhal_metrics([True], ["other"])
    with pytest.raises(ValueError, match=r"types\[0\]"):
        mmhal_metrics([1], [None])  # type: ignore[list-item]
    m = mmhal_metrics([], [])
    assert m["mmhal_n"] == 0 and m["mmhal_score"] == 0.0 and m["mmhal_hallucination_rate"] == 0.0


def test_real_mmhal_bench_loads_96_questions() -> None:
    if not MMHAL.is_file():
        pytest.skip(f"{MMHAL} is not available")
    qs = load_mmhal_bench(MMHAL)
    assert len(qs) == 96
    assert Counter(q["question_type"] for q in qs) == {t: 12 for t in MMHAL_TYPES}
    assert qs[0]["question"] == "What color is the fire hydrant cap in the picture?"
    assert qs[0]["image_content"] == ["Fire hydrant"]
    for q in qs:
        assert q["question"] and q["gt_answer"] and isinstance(q["image_content"], list)
        assert isinstance(q["model_answer"], str)


def test_load_mmhal_bench_errors(tmp_path: Path) -> None:
    good = {
        "question_type": "attribute",
        "question_topic": "outdoor",
        "image_id": "x",
        "image_src": "http://x",
        "image_content": ["Dog"],
        "question": "What colour is the dog?",
        "gt_answer": "Brown.",
    }
    p = tmp_path / "mmhal.json"
    p.write_text(json.dumps([good, {**good, "question_type": "colour"}]))
    with pytest.raises(ValueError, match=r"mmhal.json:\[1\]: question_type"):
        load_mmhal_bench(p)
    p.write_text(json.dumps([{k: v for k, v in good.items() if k != "gt_answer"}]))
    with pytest.raises(ValueError, match=r":\[0\]: gt_answer: missing"):
        load_mmhal_bench(p)
    p.write_text(json.dumps([{**good, "image_content": "Dog"}]))
    with pytest.raises(ValueError, match="image_content"):
        load_mmhal_bench(p)
    p.write_text(json.dumps([good]))
    assert load_mmhal_bench(p)[0]["model_answer"] == ""
