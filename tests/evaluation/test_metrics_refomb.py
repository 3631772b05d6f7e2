"""RefoMB: combining the two orders, the score, and the real dev/reference files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mmrlhf.evaluation.metrics.refomb import (
    combine_orders,
    load_refomb,
    refomb_from_verdicts,
    refomb_metrics,
)

BENCHMARKS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks"
DEV = BENCHMARKS / "refomb_dev.jsonl"
REF = BENCHMARKS / "refomb_dev_gpt4v_reference.jsonl"


def test_combine_orders_every_case() -> None:
    # first: model is "a"; second: model is "b". Win needs (a, b), loss needs (b, a).
    expected = {
        ("a", "b"): "win",
        ("b", "a"): "loss",
        ("a", "a"): "tie",  # a judge that always picks the first answer
        ("b", "b"): "tie",  # ... or always the second
        ("a", "tie"): "tie",
        ("tie", "b"): "tie",
        ("b", "tie"): "tie",
        ("tie", "a"): "tie",
        ("tie", "tie"): "tie",
        (None, "b"): "tie",  # unparsed counts as a tie
        ("a", None): "tie",
        ("b", None): "tie",
        (None, None): "tie",
    }
    for (first, second), outcome in expected.items():
        assert combine_orders(first, second) == outcome, (first, second)
    with pytest.raises(ValueError, match="first"):
        combine_orders("A", "b")
    with pytest.raises(ValueError, match="second"):
        combine_orders("a", "model")


def test_refomb_metrics_hand_computed() -> None:
    # 2 wins, 2 ties, 1 loss: score = (2 + 2/2) / 5 = 0.6
    m = refomb_metrics(["win", "win", "tie", "loss", "tie"], unparsed=1)
    assert m["refomb_score"] == pytest.approx(0.6)
    assert m["refomb_win_rate"] == pytest.approx(0.4)
    assert m["refomb_tie_rate"] == pytest.approx(0.4)
    assert m["refomb_loss_rate"] == pytest.approx(0.2)
    assert m["refomb_n"] == 5 and m["refomb_unparsed"] == 1
    # the same through the verdicts: (a,b) win, (a,b) win, (None,b) tie+unparsed, (b,a) loss,
    # (a,a) tie
    v = refomb_from_verdicts(["a", "a", None, "b", "a"], ["b", "b", "b", "a", "a"])
    assert v == m
    assert refomb_metrics([])["refomb_score"] == 0.0


def test_refomb_metrics_bad_input() -> None:
    with pytest.raises(ValueError, match=r"outcomes\[1\]"):
        refomb_metrics(["win", "draw"])
    with pytest.raises(ValueError, match="unparsed"):
        refomb_metrics(["win"], unparsed=2)
    with pytest.raises(ValueError, match="lengths differ"):
        refomb_from_verdicts(["a"], [])


def test_real_refomb_files_load_and_match() -> None:
    for p in (DEV, REF):
        if not p.is_file():
            pytest.skip(f"{p} is not available")
    dev, ref = load_refomb(DEV), load_refomb(REF)
    assert len(dev) == 99 and len(ref) == 99
    assert [q["id"] for q in dev] == [q["id"] for q in ref]
    assert len({q["id"] for q in dev}) == 99
    by_id = {q["id"]: q for q in ref}
    for q in dev:
        r = by_id[q["id"]]
        assert (q["question"], q["description"], q["type"]) == (
            r["question"],
            r["description"],
            r["type"],
        )
        assert q["answer"] == "" and r["answer"]  # the reference file holds GPT-4V's answers
        assert q["split"] == "dev" and len(q["description"]) > 100
    types = Counter(q["type"] for q in dev)
    assert types["Fine-grained perception"] == 24 and sum(types.values()) == 99


def test_load_refomb_errors(tmp_path: Path) -> None:
    good = {
        "image_url": "http://x",
        "question": "q",
        "description": "d",
        "type": "OCR",
        "split": "dev",
        "id": 0,
        "answer": "",
    }
    p = tmp_path / "r.jsonl"
    p.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "1"}) + "\n")
    with pytest.raises(ValueError, match=r"r.jsonl:2: id"):
        load_refomb(p)
    p.write_text(json.dumps(good) + "\n" + json.dumps(good) + "\n")
    with pytest.raises(ValueError, match=r":2: id: duplicate 0"):
        load_refomb(p)
    p.write_text(json.dumps({k: v for k, v in good.items() if k != "description"}) + "\n")
    with pytest.raises(ValueError, match=r":1: description: missing"):
        load_refomb(p)
