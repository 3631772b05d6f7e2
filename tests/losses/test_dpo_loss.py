"""MM-DPO loss on hand-computed values (see the worked example in the module docstring)."""

from __future__ import annotations

import math

import pytest
import torch

from mmrlhf.losses.dpo import mmdpo_loss, scaled_beta


def _nls(x: float) -> float:
    return math.log1p(math.exp(-x))


def test_worked_example() -> None:
    pol = torch.tensor([-1.0, -3.0, -2.0], requires_grad=True)
    ref = torch.tensor([-2.0, -2.0, -2.0])
    loss, m = mmdpo_loss(
        pol,
        ref,
        torch.tensor([0, 0]),
        torch.tensor([1, 2]),
        beta=0.1,
        delta=torch.tensor([1.0, 0.0]),
        w=0.5,
        k=1.0,
    )
    b0 = 0.1 * (1 + 0.5 * (1 - math.exp(-1)))  # 0.131606
    assert m["beta/max"] == pytest.approx(b0) and m["beta/min"] == pytest.approx(0.1)
    expected = (_nls(b0 * 2) + _nls(0.1 * 1)) / 2  # (0.570176 + 0.644397) / 2
    assert float(loss) == pytest.approx(expected, abs=1e-6)
    assert float(loss) == pytest.approx(0.607287, abs=1e-6)
    # implicit rewards: chosen beta_p * (logp - ref) = [0.131606, 0.1]; rejected [-0.131606, 0]
    assert m["rewards/chosen"] == pytest.approx((b0 + 0.1) / 2)
    assert m["rewards/accuracies"] == 1.0


def test_w_zero_is_plain_dpo_whatever_delta() -> None:
    pol, ref = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -2.0])
    plain, _ = mmdpo_loss(pol, ref, torch.tensor([0]), torch.tensor([1]), beta=0.1)
    w0, _ = mmdpo_loss(
        pol, ref, torch.tensor([0]), torch.tensor([1]), beta=0.1, delta=torch.tensor([5.0]), w=0.0
    )
    assert float(plain) == float(w0) == pytest.approx(_nls(0.2))


def test_scaling_changes_the_loss_per_pair() -> None:
    """The released MM-RLHF code never applied its scaling; ours must: a larger delta gives a
    larger beta and a different loss and gradient for that pair only."""
    pol, ref = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -2.0])
    small, ms = mmdpo_loss(
        pol, ref, torch.tensor([0]), torch.tensor([1]), delta=torch.tensor([0.0]), w=1.0
    )
    large, ml = mmdpo_loss(
        pol, ref, torch.tensor([0]), torch.tensor([1]), delta=torch.tensor([3.0]), w=1.0
    )
    assert ml["beta/mean"] > ms["beta/mean"] and float(large) < float(small)


def test_negative_delta_is_floored_and_single_pair_has_no_nan() -> None:
    b = scaled_beta(torch.tensor([-100.0, -1.0]), beta=0.1, w=1.0, k=1.0, floor=0.01)
    assert float(b[0]) == pytest.approx(0.01)  # 0.1 * (1 + (1 - e^100)) would be hugely negative
    assert float(b[1]) == pytest.approx(max(0.1 * (2 - math.e), 0.01))
    pol = torch.tensor([-1.0, -3.0], requires_grad=True)
    loss, m = mmdpo_loss(
        pol,
        torch.tensor([-2.0, -2.0]),
        torch.tensor([0]),
        torch.tensor([1]),
        delta=torch.tensor([-5.0]),
        w=0.5,
    )
    loss.backward()
    assert (
        math.isfinite(float(loss))
        and torch.isfinite(pol.grad).all()
        and m["beta/min"] == pytest.approx(0.01)
    )


def test_nll_term_uses_chosen_responses() -> None:
    pol, ref = torch.tensor([-1.0, -3.0, -2.0]), torch.tensor([-1.0, -3.0, -2.0])
    nll = torch.tensor([0.5, 9.0, 1.5])
    loss, m = mmdpo_loss(
        pol, ref, torch.tensor([0, 2]), torch.tensor([1, 1]), chosen_nll=nll, gamma=0.25
    )
    # h = 0 for both pairs -> dpo = log 2; nll over chosen {0, 2} = 1.0 -> + 0.25
    assert float(loss) == pytest.approx(math.log(2) + 0.25)
    assert m["loss/nll"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="chosen_nll"):
        mmdpo_loss(pol, ref, torch.tensor([0]), torch.tensor([1]), gamma=0.1)


def test_empty_pairs() -> None:
    pol = torch.tensor([-1.0], requires_grad=True)
    loss, m = mmdpo_loss(
        pol, pol.detach(), torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long)
    )
    loss.backward()
    assert float(loss) == 0.0 and m["n_pairs"] == 0
