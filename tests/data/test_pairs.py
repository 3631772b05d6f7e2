"""Pair derivation, hand-checked on the ranking 1>2=3>4 (responses 0..3, 1 and 2 tied)."""

from __future__ import annotations

import itertools

import pytest
from data_helpers import ranked_record

from mmrlhf.data.pairs import (
    MARGINS,
    STRATEGIES,
    TIES,
    Pair,
    derive_pairs,
    pairs_to_rows,
    rows_to_pairs,
)
from mmrlhf.data.record import Preference, Ranking, Record, RecordError, Response

# Pairs (chosen, rejected, is_tie) per strategy and ties option, written out by hand.
EXPECTED = {
    ("all", "skip"): [(0, 1, False), (0, 2, False), (0, 3, False), (1, 3, False), (2, 3, False)],
    ("all", "keep"): [
        (0, 1, False), (0, 2, False), (0, 3, False), (1, 3, False), (2, 3, False), (1, 2, True)
    ],
    # best_vs_rest: the best group (response 0 alone) against all lower; no tie in that group.
    ("best_vs_rest", "skip"): [(0, 1, False), (0, 2, False), (0, 3, False)],
    ("best_vs_rest", "keep"): [(0, 1, False), (0, 2, False), (0, 3, False)],
    ("adjacent", "skip"): [(0, 1, False), (0, 2, False), (1, 3, False), (2, 3, False)],
    ("adjacent", "keep"): [(0, 1, False), (0, 2, False), (1, 3, False), (2, 3, False),
                           (1, 2, True)],
}  # fmt: skip

# Margins per pair, by hand from conftest.ranked_record:
# scores h/f/e: A 5/5/5, B 4/3/5, C 4/4/-, D 1/2/3; rewards A 2, B 1, C -, D -1.
MARGIN = {
    "none": {},
    "given": {},  # a ranking has no stored pair margins
    "rank": {(0, 1): 1.0, (0, 2): 1.0, (0, 3): 2.0, (1, 3): 1.0, (2, 3): 1.0, (1, 2): 0.0},
    "scores": {
        (0, 1): 5 - 4,  # all three dims: 15/3 - 12/3
        (0, 2): 5 - 4,  # h, f only (C has no ethics): 10/2 - 8/2
        (0, 3): 5 - 2,  # 15/3 - 6/3
        (1, 3): 4 - 2,  # 12/3 - 6/3
        (2, 3): 4 - 1.5,  # h, f: 8/2 - 3/2
        (1, 2): 3.5 - 4,  # h, f: 7/2 - 8/2
    },
    "reward": {(0, 1): 1.0, (0, 3): 3.0, (1, 3): 2.0},  # C has no reward: None
}


@pytest.mark.parametrize(
    ("strategy", "ties", "margin"), list(itertools.product(STRATEGIES, TIES, MARGINS))
)
def test_every_combination_on_1_gt_2_eq_3_gt_4(strategy: str, ties: str, margin: str) -> None:
    pairs = derive_pairs(ranked_record(), strategy=strategy, ties=ties, margin=margin)
    assert [(p.chosen, p.rejected, p.is_tie) for p in pairs] == EXPECTED[(strategy, ties)]
    assert all(p.record_id == "q1" for p in pairs)
    for p in pairs:
        expected = MARGIN[margin].get((p.chosen, p.rejected))
        assert p.margin == (None if expected is None else pytest.approx(expected))


def test_explicit_preferences_ties_and_given_margin() -> None:
    rec = Record.single(
        "p",
        "q",
        ["a", "b", "c"],
        preferences=[Preference(0, 1, margin=0.7), Preference(1, 2, is_tie=True)],
    )
    assert [(p.chosen, p.rejected) for p in derive_pairs(rec)] == [(0, 1)]
    kept = derive_pairs(rec, ties="keep", margin="given")
    assert [(p.chosen, p.rejected, p.is_tie, p.margin) for p in kept] == [
        (0, 1, False, 0.7),
        (1, 2, True, None),
    ]
    # the strategy does not apply to explicit pairs
    assert derive_pairs(rec, strategy="adjacent") == derive_pairs(rec, strategy="all")


def test_invalid_inputs_raise() -> None:
    rec = ranked_record()
    with pytest.raises(ValueError, match="strategy"):
        derive_pairs(rec, strategy="best")
    rec.ranking = Ranking.parse("1>2>5")
    with pytest.raises(RecordError, match="ranking"):
        derive_pairs(rec)
    bad = Record.single("x", "q", ["a"], preferences=[Preference(0, 3)])
    with pytest.raises(RecordError, match=r"preferences\[0\]"):
        derive_pairs(bad)


def test_no_labels_no_pairs() -> None:
    assert derive_pairs(Record.single("x", "q", ["a", "b"])) == []


def test_rows_round_trip() -> None:
    rec = ranked_record()
    for r in rec.responses:
        r.meta["reason"] = f"why {r.text}"
    pairs = derive_pairs(rec, ties="keep", margin="rank")
    rows = pairs_to_rows(rec, pairs)
    assert len(rows) == 6
    assert rows[0]["id"] == "q1" and rows[0]["image"] == "imgs/red.png"
    assert rows[0]["chosen"] == "answer A" and rows[0]["chosen_reason"] == "why answer A"
    assert rows[-1]["is_tie"] is True and rows[-1]["margin"] == 0.0
    [(back, back_pairs)] = rows_to_pairs(rows)
    assert [r.text for r in back.responses] == [r.text for r in rec.responses]
    assert [r.source for r in back.responses] == [r.source for r in rec.responses]
    assert [(p.chosen, p.rejected, p.is_tie, p.margin) for p in back_pairs] == [
        (p.chosen, p.rejected, p.is_tie, p.margin) for p in pairs
    ]
    assert back.category == "long"


def test_pair_dict_round_trip() -> None:
    p = Pair("r", 1, 2, True, 0.5)
    assert Pair.from_dict(p.to_dict()) == p


def test_response_without_pairs_is_dropped_by_flat_rows() -> None:
    rec = Record.single(
        "x", "q", [Response("a"), Response("b"), Response("c")], ranking=Ranking.parse("1>2>3")
    )
    rows = pairs_to_rows(rec, derive_pairs(rec, strategy="best_vs_rest"))
    [(back, _)] = rows_to_pairs(rows)
    assert [r.text for r in back.responses] == ["a", "b", "c"]
