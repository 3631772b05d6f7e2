"""Reward-bench Acc / Acc+: a hand-computed case, records -> rows, and the real file."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import pytest

from mmrlhf.data.io import load_records
from mmrlhf.data.record import Preference, Record, Response
from mmrlhf.evaluation.metrics.rewardbench import (
    NO_CATEGORY,
    rewardbench_metrics,
    rows_from_records,
)

BENCHMARKS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks"
MMRLHF = BENCHMARKS / "mm_rlhf_reward_bench.jsonl"


def test_rewardbench_metrics_hand_computed() -> None:
    rows = [
        ("q1", "mcq", 2.0, 1.0),  # correct
        ("q1", "mcq", 3.0, 3.0),  # tie: wrong (strict)
        ("q2", "mcq", 1, 0),  # correct             -> q2 all correct
        ("q3", "long", 0.5, 0.1),  # correct
        ("q3", "long", 1.0, 2.0),  # wrong
        ("q4", "long", 5.0, 4.0),  # correct
        ("q4", "long", 1.0, 0.0),  # correct
        ("q4", "long", 2.0, -1.0),  # correct          -> q4 all correct
    ]
    m = rewardbench_metrics(rows)
    # overall: 6 of 8 pairs correct; q2 and q4 of 4 queries all correct
    assert m["acc"] == pytest.approx(6 / 8) and m["acc_plus"] == pytest.approx(2 / 4)
    assert m["n_pairs"] == 8 and m["n_queries"] == 4
    # mcq: 2 of 3 pairs, 1 of 2 queries; long: 4 of 5 pairs, 1 of 2 queries
    assert m["acc/mcq"] == pytest.approx(2 / 3) and m["acc_plus/mcq"] == pytest.approx(0.5)
    assert m["acc/long"] == pytest.approx(0.8) and m["acc_plus/long"] == pytest.approx(0.5)
    assert (m["n_pairs/mcq"], m["n_queries/mcq"]) == (3, 2)
    assert (m["n_pairs/long"], m["n_queries/long"]) == (5, 2)
    assert rewardbench_metrics([])["acc"] == 0.0


def test_rewardbench_metrics_bad_input() -> None:
    with pytest.raises(ValueError, match="'q1' has category 'long' but earlier 'mcq'"):
        rewardbench_metrics([("q1", "mcq", 1.0, 0.0), ("q1", "long", 1.0, 0.0)])
    with pytest.raises(ValueError, match=r"rows\[0\] \(query q1\): reward_rejected"):
        rewardbench_metrics([("q1", "mcq", 1.0, float("nan"))])
    with pytest.raises(ValueError, match=r"rows\[0\]: expected"):
        rewardbench_metrics([("q1", 1.0, 0.0)])
    with pytest.raises(ValueError, match=r"rows\[0\] \(query q1\): reward_chosen"):
        rewardbench_metrics([("q1", "mcq", None, 0.0)])


def _record(rid: str, rewards: list[float | None], prefs: list[Preference], cat: str | None):
    return Record.single(
        rid,
        "q?",
        [Response(f"answer {i}", reward=r) for i, r in enumerate(rewards)],
        preferences=prefs,
        category=cat,
    )


def test_rows_from_records() -> None:
    recs = [
        _record("r1", [3.0, 1.0, 2.0], [Preference(0, 1), Preference(2, 0)], "mcq"),
        _record("r2", [0.0, 1.0], [Preference(1, 0), Preference(0, 1, is_tie=True)], None),
    ]
    assert rows_from_records(recs) == [
        ("r1", "mcq", 3.0, 1.0),
        ("r1", "mcq", 2.0, 3.0),
        ("r2", NO_CATEGORY, 1.0, 0.0),  # the tie pair is left out
    ]
    bad = _record("r9", [1.0, None], [Preference(0, 1)], "mcq")
    with pytest.raises(ValueError, match=r"record r9: responses\[1\].reward: missing"):
        rows_from_records([recs[0], bad])
    out_of_range = _record("r8", [1.0, 2.0], [Preference(0, 5)], "mcq")
    with pytest.raises(ValueError, match=r"record r8: preferences\[0\].rejected"):
        rows_from_records([out_of_range])


def test_real_mm_rlhf_reward_bench() -> None:
    if not MMRLHF.is_file():
        pytest.skip(f"{MMRLHF} is not available")
    recs, _ = load_records(MMRLHF, check_media=False)
    for r in recs:
        for resp in r.responses:
            resp.reward = float(len(resp.text))  # fixed rewards: the text length
    m = rewardbench_metrics(rows_from_records(recs))

    # expected from the raw file: per line correct iff len(chosen) > len(rejected) (two
    # lines have equal lengths: wrong), category = first path component of image/video
    per_query: dict[str, list[bool]] = defaultdict(list)
    cat_of: dict[str, str] = {}
    for line in MMRLHF.read_text().splitlines():
        d = json.loads(line)
        cat_of[d["id"]] = (d.get("image") or d["video"]).split("/")[0]
        per_query[d["id"]].append(len(d["chosen"]) > len(d["rejected"]))
    assert m["n_pairs"] == 170 and m["n_queries"] == 46
    all_pairs = [ok for oks in per_query.values() for ok in oks]
    assert m["acc"] == pytest.approx(sum(all_pairs) / len(all_pairs))
    assert m["acc_plus"] == pytest.approx(sum(all(v) for v in per_query.values()) / 46)
    assert 0 < m["acc"] < 1
    for cat in ("mcq", "long", "short", "safety", "video"):
        qids = [q for q in per_query if cat_of[q] == cat]
        pairs = [ok for q in qids for ok in per_query[q]]
        assert m[f"n_pairs/{cat}"] == len(pairs) and m[f"n_queries/{cat}"] == len(qids)
        assert m[f"acc/{cat}"] == pytest.approx(sum(pairs) / len(pairs))
        assert m[f"acc_plus/{cat}"] == pytest.approx(
            sum(all(per_query[q]) for q in qids) / len(qids)
        )
    assert m["n_pairs/mcq"] == 42 and m["n_pairs/video"] == 25
