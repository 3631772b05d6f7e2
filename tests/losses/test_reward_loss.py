"""Reward-model losses on hand-computed values (see the worked example in the module docstring)."""

from __future__ import annotations

import math

import pytest
import torch

from mmrlhf.losses.reward import reward_loss, token_mean_nll


def _ls(x: float) -> float:
    return -math.log(1 / (1 + math.exp(-x)))


def test_worked_example() -> None:
    r = torch.tensor([2.0, 0.0, 1.0], requires_grad=True)
    loss, m = reward_loss(
        r,
        torch.tensor([0, 2]),
        torch.tensor([1, 1]),
        tie_a=torch.tensor([0]),
        tie_b=torch.tensor([2]),
        centring=0.5,
        tie_weight=1.0,
    )
    # bt = (0.126928 + 0.313262) / 2 = 0.220095; centring 0.5 * 2.5; tie 1 * 1
    assert m["bt_loss"] == pytest.approx(0.220095, abs=1e-6)
    assert m["centring_loss"] == pytest.approx(2.5)
    assert m["tie_loss"] == pytest.approx(1.0)
    assert float(loss) == pytest.approx(2.470095, abs=1e-6)
    assert m["accuracy"] == 1.0 and m["margin_mean"] == pytest.approx(1.5)
    loss.backward()
    # d/dr0: bt: -sigmoid(-2)/2 = -0.059601; centring: 0.5 * 2*(2+0)/2 = 1.0; tie: 2*(2-1) = 2
    assert float(r.grad[0]) == pytest.approx(-0.0596014 + 1.0 + 2.0, abs=1e-6)


def test_margin_shifts_the_sigmoid() -> None:
    # r_c - r_r = 1, margin 1 -> -log sigmoid(0) = log 2; accuracy still counts the raw gap
    loss, m = reward_loss(
        torch.tensor([1.0, 0.0]), torch.tensor([0]), torch.tensor([1]), margin=torch.tensor([1.0])
    )
    assert float(loss) == pytest.approx(math.log(2))
    assert m["accuracy"] == 1.0


def test_pair_term_independent_of_other_pairs_sharing_a_response() -> None:
    """Response 1 is in both pairs; each pair's term equals the pair computed alone."""
    r = torch.tensor([0.3, -0.2, 0.9])
    both, _ = reward_loss(r, torch.tensor([0, 2]), torch.tensor([1, 1]))
    alone = [reward_loss(r, torch.tensor([c]), torch.tensor([1]))[0] for c in (0, 2)]
    assert float(both) == pytest.approx((float(alone[0]) + float(alone[1])) / 2, abs=1e-7)
    assert float(alone[0]) == pytest.approx(_ls(0.5), abs=1e-6)


def test_ties_are_strictly_wrong_and_empty_batches_backprop() -> None:
    _, m = reward_loss(torch.tensor([1.0, 1.0]), torch.tensor([0]), torch.tensor([1]))
    assert m["accuracy"] == 0.0  # equal rewards do not count as right
    r = torch.tensor([1.0, 2.0], requires_grad=True)
    loss, m = reward_loss(r, torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))
    loss.backward()
    assert float(loss) == 0.0 and m["n_pairs"] == 0 and r.grad is not None


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="1-D"):
        reward_loss(torch.zeros(2, 1), torch.tensor([0]), torch.tensor([1]))
    with pytest.raises(ValueError, match="differ"):
        reward_loss(torch.zeros(3), torch.tensor([0, 1]), torch.tensor([1]))


def test_token_mean_nll_counts_only_labelled_tokens() -> None:
    # vocab 2, uniform logits -> every labelled token costs log 2; 2 labelled targets
    logits = torch.zeros(1, 4, 2)
    labels = torch.tensor([[-100, -100, 1, 0]])
    nll, n = token_mean_nll(logits, labels)
    assert int(n) == 2 and float(nll) == pytest.approx(math.log(2))
