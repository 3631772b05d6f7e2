"""Reward-model losses (METHODS.md section 4), pure torch.

Rewards come as one scalar per *unique* response of a training step, and pairs as index tensors
into that vector. A response that belongs to several pairs (a query with K ranked responses has
up to K(K-1)/2 pairs) is therefore encoded and scored once, and each pair's term is exactly what
it would be on its own.

Bradley-Terry with margin, for pair p = (c, r)::

    bt_p = -log sigmoid(r[c] - r[r] - margin_p)

Centring (MM-RLHF, c = 0.01) keeps rewards near zero so their scale stays comparable across runs::

    centring_loss = mean_p (r[c] + r[r])^2

Tie pairs (a, b), judged equal by annotators, pull the two rewards together::

    tie_loss = mean_t (r[a] - r[b])^2

Total: ``mean_p bt_p + centring * centring_loss + tie_weight * tie_loss``.

Worked example (used in the tests): r = [2, 0, 1], pairs (0, 1) and (2, 1), no margin, centring
0.5, tie (0, 2) with weight 1::

    bt      = (-log sigmoid(2) - log sigmoid(1)) / 2 = (0.126928 + 0.313262) / 2 = 0.220095
    centr   = ((2 + 0)^2 + (1 + 0)^2) / 2 = 2.5        -> 0.5 * 2.5 = 1.25
    tie     = (2 - 1)^2 = 1                            -> 1 * 1 = 1
    loss    = 0.220095 + 1.25 + 1 = 2.470095
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def reward_loss(
    rewards: Tensor,
    chosen: Tensor,
    rejected: Tensor,
    *,
    margin: Tensor | None = None,
    tie_a: Tensor | None = None,
    tie_b: Tensor | None = None,
    centring: float = 0.0,
    tie_weight: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """Bradley-Terry (+ margin) + centring + tie loss over index pairs.

    Args:
        rewards: ``[N]`` one reward per unique response in the step.
        chosen, rejected: ``[P]`` long indices into ``rewards`` (preferred / dispreferred).
        margin: ``[P]`` required reward gap per pair (0 when None).
        tie_a, tie_b: ``[T]`` long indices of tied pairs (no tie term when None or empty).
        centring: weight ``c`` of ``mean_p (r_c + r_r)^2``.
        tie_weight: weight ``t`` of ``mean_t (r_a - r_b)^2``.

    Returns:
        ``(loss, metrics)``; metrics: ``bt_loss``, ``centring_loss``, ``tie_loss`` (unweighted
        means), ``accuracy`` (share of pairs with r_c > r_r, strictly), ``margin_mean``
        (mean r_c - r_r), ``n_pairs``, ``n_ties``. With no pairs and no ties the loss is
        ``0 * rewards.sum()`` so that backward still works.
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [N], got shape {tuple(rewards.shape)}")
    if chosen.shape != rejected.shape:
        raise ValueError(
            f"chosen {tuple(chosen.shape)} and rejected {tuple(rejected.shape)} differ"
        )
    zero = rewards.sum() * 0.0
    n_pairs = int(chosen.numel())
    loss = zero
    metrics: dict[str, float] = {"n_pairs": float(n_pairs)}
    if n_pairs:
        rc, rr = rewards[chosen], rewards[rejected]
        diff = rc - rr
        if margin is not None:
            if margin.shape != diff.shape:
                raise ValueError(
                    f"margin {tuple(margin.shape)} must match pairs {tuple(diff.shape)}"
                )
            diff_m = diff - margin.to(diff.dtype)
        else:
            diff_m = diff
        bt = -F.logsigmoid(diff_m).mean()
        centr = ((rc + rr) ** 2).mean()
        loss = loss + bt + centring * centr
        d = diff.detach()
        metrics.update(
            bt_loss=float(bt.detach()),
            centring_loss=float(centr.detach()),
            accuracy=float((d > 0).float().mean()),
            margin_mean=float(d.mean()),
        )
    n_ties = 0 if tie_a is None else int(tie_a.numel())
    metrics["n_ties"] = float(n_ties)
    if n_ties:
        assert tie_a is not None and tie_b is not None
        tie = ((rewards[tie_a] - rewards[tie_b]) ** 2).mean()
        loss = loss + tie_weight * tie
        metrics["tie_loss"] = float(tie.detach())
    return loss, metrics


def token_mean_nll(
    logits: Tensor, labels: Tensor, ignore_index: int = -100
) -> tuple[Tensor, Tensor]:
    """Mean next-token NLL over labelled tokens (used for the critique RM's LM term).

    Args:
        logits: ``[B, T, V]`` aligned with ``labels`` ``[B, T]`` (position t predicts t+1).
    Returns:
        ``(mean_nll, n_tokens)``; with no labelled token the mean is 0 (with grad).
    """
    shift_logits = logits[:, :-1].reshape(-1, logits.shape[-1]).float()
    shift_labels = labels[:, 1:].reshape(-1)
    n = (shift_labels != ignore_index).sum()
    total = F.cross_entropy(shift_logits, shift_labels, ignore_index=ignore_index, reduction="sum")
    return total / n.clamp(min=1), n


__all__ = ["reward_loss", "token_mean_nll"]
