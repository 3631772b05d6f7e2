"""MM-DPO: DPO with dynamic reward scaling (METHODS.md section 5), pure torch.

For a pair (y_w, y_l) of one query, with log-probs summed over response tokens::

    h       = (log pi(y_w) - log ref(y_w)) - (log pi(y_l) - log ref(y_l))
    beta_p  = max(beta * (1 + w * (1 - exp(-k * delta))), beta_floor)
    loss_p  = -log sigmoid(beta_p * h)  [+ gamma * mean-token NLL(y_w)]

``delta = r(y_w) - r(y_l)`` is the reward model's margin for the pair. Confident pairs (large
delta) get up to ``beta * (1 + w)``; doubtful ones (delta near 0) stay near ``beta``; a negative
delta (the RM disagrees with the label) shrinks beta, and the floor keeps it positive. With
``w = 0`` this is plain sigmoid DPO (TRL's ``loss_type="sigmoid"``).

Unlike the released MM-RLHF code, the scaling is per pair and nothing overrides it (their
batch-level branch, on by default, replaced it); no statistic over a single sample is taken, so a
one-pair batch cannot produce NaN.

Log-probs come as one value per *unique* response and pairs as index tensors, so a response in
several pairs is computed once (the trainer's shared-prefix forward relies on that).

Worked example (tests): policy logps [-1, -3, -2], ref logps [-2, -2, -2], pairs (0, 1), (0, 2),
delta [1, 0], beta 0.1, w 0.5, k 1, floor 0.01::

    h       = [(-1+2) - (-3+2), (-1+2) - (-2+2)] = [2, 1]
    beta_p  = [0.1 * (1 + 0.5 * (1 - e^-1)), 0.1] = [0.131606, 0.1]
    loss    = mean(-log sigmoid(0.263212), -log sigmoid(0.1)) = mean(0.570176, 0.644397) = 0.607287
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def scaled_beta(delta: Tensor, beta: float, w: float, k: float, floor: float) -> Tensor:
    """``max(beta * (1 + w * (1 - exp(-k * delta))), floor)`` per pair (shape of ``delta``)."""
    return (beta * (1.0 + w * (1.0 - torch.exp(-k * delta)))).clamp(min=floor)


def mmdpo_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    chosen: Tensor,
    rejected: Tensor,
    *,
    beta: float = 0.1,
    delta: Tensor | None = None,
    w: float = 0.0,
    k: float = 1.0,
    beta_floor: float = 0.01,
    chosen_nll: Tensor | None = None,
    gamma: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """MM-DPO loss over index pairs.

    Args:
        policy_logps: ``[N]`` summed response log-probs under the policy (with grad).
        ref_logps: ``[N]`` the same under the reference (no grad needed).
        chosen, rejected: ``[P]`` long indices into the ``N`` responses.
        beta: base DPO temperature.
        delta: ``[P]`` reward margins r(y_w) - r(y_l); None means no scaling (plain DPO).
        w, k: scaling strength and rate; ``w = 0`` is plain DPO.
        beta_floor: smallest per-pair beta (keeps a negative delta from flipping the sign).
        chosen_nll: ``[N]`` mean token NLL per response (only chosen entries are used).
        gamma: weight of the NLL term on the chosen response (mean over pairs).

    Returns:
        ``(loss, metrics)`` with TRL-style names: ``rewards/chosen``, ``rewards/rejected``,
        ``rewards/margins``, ``rewards/accuracies`` (beta_p-scaled implicit rewards, means),
        ``logps/chosen``, ``logps/rejected``, ``beta/mean``, ``beta/min``, ``beta/max``,
        ``loss/dpo``, ``loss/nll``, ``n_pairs``. Zero pairs give ``0 * policy_logps.sum()``.
    """
    if policy_logps.shape != ref_logps.shape or policy_logps.dim() != 1:
        raise ValueError(
            f"policy_logps {tuple(policy_logps.shape)} and ref_logps {tuple(ref_logps.shape)} "
            "must both be [N]"
        )
    n_pairs = int(chosen.numel())
    if n_pairs == 0:
        return policy_logps.sum() * 0.0, {"n_pairs": 0.0}
    ref = ref_logps.detach().to(policy_logps.dtype)
    chosen_ratio = policy_logps[chosen] - ref[chosen]
    rejected_ratio = policy_logps[rejected] - ref[rejected]
    h = chosen_ratio - rejected_ratio
    if delta is None or w == 0.0:
        betas = torch.full_like(h, beta)
    else:
        if delta.shape != h.shape:
            raise ValueError(f"delta {tuple(delta.shape)} must have one value per pair ({n_pairs})")
        betas = scaled_beta(delta.to(h.dtype), beta, w, k, beta_floor)
    dpo = -F.logsigmoid(betas * h).mean()
    loss = dpo
    nll_value = 0.0
    if gamma:
        if chosen_nll is None:
            raise ValueError("gamma > 0 needs chosen_nll (mean token NLL per response)")
        nll = chosen_nll[chosen].mean()
        loss = loss + gamma * nll
        nll_value = float(nll.detach())
    rc = (betas * chosen_ratio).detach()
    rr = (betas * rejected_ratio).detach()
    metrics = {
        "rewards/chosen": float(rc.mean()),
        "rewards/rejected": float(rr.mean()),
        "rewards/margins": float((rc - rr).mean()),
        "rewards/accuracies": float((rc > rr).float().mean()),
        "logps/chosen": float(policy_logps[chosen].detach().mean()),
        "logps/rejected": float(policy_logps[rejected].detach().mean()),
        "beta/mean": float(betas.mean()),
        "beta/min": float(betas.min()),
        "beta/max": float(betas.max()),
        "loss/dpo": float(dpo.detach()),
        "loss/nll": nll_value,
        "n_pairs": float(n_pairs),
    }
    return loss, metrics
