"""Agreement between two judges' 0-6 ratings of the same items, in the same order.

With ratings a_i, b_i (i = 1..n) and the hallucination flag f(x) = [x < 3]:

- exact_agreement  = share of items with a_i == b_i
- within1_agreement = share with |a_i - b_i| <= 1
- flag_agreement   = share with f(a_i) == f(b_i)                         (p_o)
- flag_kappa       = Cohen's kappa on the flag: (p_o - p_e) / (1 - p_e), where
  p_e = P_a(flag) * P_b(flag) + P_a(no flag) * P_b(no flag)
- pearson          = cov(a, b) / (std(a) * std(b))
- spearman         = pearson of the ranks (ties get their average rank)

Undefined values are NaN: kappa when p_e = 1 (both judges give one and the same flag to
every item), correlations when n < 2 or either list is constant. Shares over n = 0 are 0.0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


def _ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, tied values sharing their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(1, len(x) + 1, dtype=float)
    for v in np.unique(x):
        tied = x == v
        ranks[tied] = ranks[tied].mean()
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    if len(x) < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    den = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    return float((dx * dy).sum()) / den if den > 0 else math.nan


def _check(v: object, name: str, i: int) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"{name}[{i}]: expected a finite number, got {v!r}")
    return float(v)


def agreement_metrics(
    ratings_a: Sequence[float], ratings_b: Sequence[float]
) -> dict[str, float | int]:
    """Agreement of two rating lists on the same items (formulas in the module docstring).

    Keys: ``exact_agreement``, ``within1_agreement``, ``flag_agreement``, ``flag_kappa``,
    ``pearson``, ``spearman`` (floats, NaN where undefined) and ``n``.
    """
    if len(ratings_a) != len(ratings_b):
        raise ValueError(
            f"ratings_a/ratings_b: lengths differ ({len(ratings_a)} vs {len(ratings_b)})"
        )
    a = np.array([_check(v, "ratings_a", i) for i, v in enumerate(ratings_a)], dtype=float)
    b = np.array([_check(v, "ratings_b", i) for i, v in enumerate(ratings_b)], dtype=float)
    n = len(a)
    if n == 0:
        nan = math.nan
        return {
            "exact_agreement": 0.0,
            "within1_agreement": 0.0,
            "flag_agreement": 0.0,
            "flag_kappa": nan,
            "pearson": nan,
            "spearman": nan,
            "n": 0,
        }
    fa, fb = a < 3, b < 3
    p_o = float(np.mean(fa == fb))
    pa, pb = float(fa.mean()), float(fb.mean())
    p_e = pa * pb + (1 - pa) * (1 - pb)
    kappa = (p_o - p_e) / (1 - p_e) if p_e < 1 else math.nan
    return {
        "exact_agreement": float(np.mean(a == b)),
        "within1_agreement": float(np.mean(np.abs(a - b) <= 1)),
        "flag_agreement": p_o,
        "flag_kappa": kappa,
        "pearson": _pearson(a, b),
        "spearman": _pearson(_ranks(a), _ranks(b)),
        "n": n,
    }
