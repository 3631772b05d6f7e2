"""Judge agreement: hand-computed agreement, kappa and correlations, and undefined cases."""

from __future__ import annotations

import math

import pytest

from mmrlhf.evaluation.metrics.agreement import agreement_metrics


def test_agreement_hand_computed() -> None:
    a = [6, 5, 2, 0, 3]
    b = [6, 4, 3, 1, 5]
    m = agreement_metrics(a, b)
    assert m["n"] == 5
    # exact: only item 0 -> 1/5; |a - b| = 0, 1, 1, 1, 2 -> within 1: 4/5
    assert m["exact_agreement"] == pytest.approx(0.2)
    assert m["within1_agreement"] == pytest.approx(0.8)
    # flags (< 3): a F F T T F, b F F F T F -> agree on 4/5 = p_o
    # p_a = 2/5, p_b = 1/5; p_e = 0.4 * 0.2 + 0.6 * 0.8 = 0.56
    # kappa = (0.8 - 0.56) / (1 - 0.56) = 0.24 / 0.44 = 6/11
    assert m["flag_agreement"] == pytest.approx(0.8)
    assert m["flag_kappa"] == pytest.approx(6 / 11)
    # means 3.2, 3.8; deviations a 2.8 1.8 -1.2 -3.2 -0.2, b 2.2 0.2 -0.8 -2.8 1.2
    # sum of products 16.2, sums of squares 22.8 and 14.8 -> r = 16.2 / sqrt(22.8 * 14.8)
    assert m["pearson"] == pytest.approx(16.2 / math.sqrt(22.8 * 14.8))
    # ranks a 5 4 2 1 3, b 5 3 2 1 4; d^2 sum = 2 -> rho = 1 - 6 * 2 / (5 * 24) = 0.9
    assert m["spearman"] == pytest.approx(0.9)


def test_spearman_with_ties_uses_average_ranks() -> None:
    # a ranks 1.5 1.5 3, b ranks 1 2 3: deviations -.5 -.5 1 and -1 0 1
    # r = 1.5 / sqrt(1.5 * 2) = sqrt(3) / 2
    m = agreement_metrics([1, 1, 2], [1, 2, 3])
    assert m["spearman"] == pytest.approx(math.sqrt(3) / 2)
    assert m["pearson"] == pytest.approx(math.sqrt(3) / 2)  # same numbers here


def test_undefined_values_are_nan() -> None:
    # constant a: correlations undefined
    m = agreement_metrics([3, 3, 3], [1, 2, 3])
    assert math.isnan(m["pearson"]) and math.isnan(m["spearman"])
    # both judges flag nothing: p_e = 1, kappa undefined although flags agree perfectly
    m = agreement_metrics([5, 4], [4, 6])
    assert m["flag_agreement"] == 1.0 and math.isnan(m["flag_kappa"])
    assert m["pearson"] == pytest.approx(-1.0)
    one = agreement_metrics([2], [2])
    assert one["exact_agreement"] == 1.0 and math.isnan(one["pearson"])
    empty = agreement_metrics([], [])
    assert empty["n"] == 0 and empty["exact_agreement"] == 0.0 and math.isnan(empty["spearman"])


def test_agreement_bad_input() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        agreement_metrics([1, 2], [1])
    with pytest.raises(ValueError, match=r"ratings_b\[1\]"):
        agreement_metrics([1, 2], [1, None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"ratings_a\[0\]"):
        agreement_metrics([float("nan")], [1])
