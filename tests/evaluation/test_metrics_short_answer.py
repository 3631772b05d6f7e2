"""Short-answer accuracy per group."""

from __future__ import annotations

import pytest

from mmrlhf.evaluation.metrics.short_answer import accuracy_by_group


def test_accuracy_by_group_hand_computed() -> None:
    correct = [True, False, True, True, False]
    groups = ["color", "color", "count", "count", "shape"]
    m = accuracy_by_group(correct, groups)
    # overall 3/5; color 1/2, count 2/2, shape 0/1
    assert m["short_answer_acc"] == pytest.approx(0.6) and m["short_answer_n"] == 5
    assert m["acc/color"] == pytest.approx(0.5) and m["n/color"] == 2
    assert m["acc/count"] == 1.0 and m["n/count"] == 2
    assert m["acc/shape"] == 0.0 and m["n/shape"] == 1
    assert set(m) == {
        "short_answer_acc",
        "short_answer_n",
        *(f"{k}/{g}" for k in ("acc", "n") for g in groups),
    }
    assert accuracy_by_group([], []) == {"short_answer_acc": 0.0, "short_answer_n": 0}


def test_accuracy_by_group_bad_input() -> None:
    with pytest.raises(ValueError, match="lengths differ"):
        accuracy_by_group([True], [])
    with pytest.raises(ValueError, match=r"correct\[1\]"):
        accuracy_by_group([True, 1], ["a", "b"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"groups\[0\]"):
        accuracy_by_group([True], [3])  # type: ignore[list-item]
