"""Summed response log-probs for preference training, computed once per response.

Two exact ways, one result:

- :func:`separate_logps` - the plain path: every (prompt + response) is a full sequence; the
  image and prompt are encoded again for each response (what TRL does: twice per pair).
- :func:`shared_prefix_logps` - each query's image(s) and prompt go through the model **once**
  (``use_cache=True``, with gradients); the key/value cache is then repeated for the query's K
  responses, which are run as one continuation batch. Gradients flow back through the cache
  into the shared prompt computation, so log-probs *and* gradients equal the separate path
  (tested to 1e-5 in fp32 for tiny LLaVA, LLaVA-OneVision and Qwen2-VL).

Cost: a query with K responses costs one prompt forward (vision tower + prompt tokens) plus K
response-only forwards, instead of K full forwards; with K(K-1)/2 pairs per query every
response is still computed once (pairs index into the returned vector).

Position ids are passed explicitly (left-padded prompts count from their first real token), so
the shared path sees exactly the positions the separate, right-padded path sees. Qwen2-VL's 3-D
multimodal RoPE positions are computed by the model from the prompt; the continuation's text
positions continue from the model's cached ``rope_deltas``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mmrlhf.data.record import Record
from mmrlhf.models.inputs import IGNORE_INDEX, Example, collate, encode, load_media

log = logging.getLogger(__name__)


@dataclass
class ResponseLogps:
    """Per-response results, in the order the responses were requested.

    ``logps``: ``[N]`` summed log-probs of labelled response tokens; ``nll``: ``[N]`` mean token
    NLL (for the chosen-NLL term); ``n_tokens``: ``[N]`` labelled tokens per response.
    """

    logps: torch.Tensor
    nll: torch.Tensor
    n_tokens: torch.Tensor


def _token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[target] per position; ``logits [..., V]``, ``targets [...]``.

    Float32 log-softmax even under bf16 autocast: the summed log-probs of DPO are differences of
    large numbers, and bf16 loses them.
    """
    return torch.gather(
        F.log_softmax(logits.float(), dim=-1), -1, targets.clamp(min=0).unsqueeze(-1)
    ).squeeze(-1)


def _finish(per_token: list[torch.Tensor]) -> ResponseLogps:
    logps = torch.stack([t.sum() for t in per_token])
    n = torch.tensor([t.numel() for t in per_token])
    return ResponseLogps(logps=logps, nll=-logps / n.clamp(min=1).to(logps.dtype), n_tokens=n)


def separate_logps(model: torch.nn.Module, batch: dict[str, Any]) -> ResponseLogps:
    """Log-probs from full (prompt + response) sequences, one row per response (right padded,
    labels -100 outside the response), as :func:`mmrlhf.models.inputs.collate` builds them."""
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    # logits only from the first labelled position on: the vocabulary projection of the prompt
    # (image tokens included) is the largest avoidable cost of a VLM forward
    first = int((labels != IGNORE_INDEX).float().argmax(dim=1).min())
    keep = labels.shape[1] - max(first - 1, 0)
    logits = model(**inputs, logits_to_keep=keep).logits
    lab = labels[:, -keep:][:, 1:]
    tok = _token_logps(logits[:, :-1], lab)
    mask = lab != IGNORE_INDEX
    return _finish([tok[i][mask[i]] for i in range(tok.shape[0])])


@dataclass
class _Group:
    """One query: its prompt example and the completion token ids of each of its responses."""

    prompt: Example
    completions: list[torch.Tensor]
    completion_labels: list[torch.Tensor]


def supports_shared_prefix(model: torch.nn.Module) -> bool:
    """Whether the model's forward accepts a KV cache continuation we can make exact."""
    mtype = getattr(model.config, "model_type", "")
    return mtype in ("llava", "llava_onevision", "qwen2_vl", "qwen2_5_vl")


def build_groups(
    records: Sequence[Record],
    responses: Sequence[Sequence[int]],
    processor: Any,
    *,
    media_root: str | Path | None = None,
    max_length: int | None = None,
) -> tuple[list[_Group], list[Example]]:
    """Encode each record's prompt once and each listed response once.

    Returns the groups (for the shared path) and the full examples (for the separate path and
    for checks). Media are loaded once per record. Raises when the chat template tokenizes the
    prompt differently inside the full sequence than alone (the shared path would then not be
    exact); :func:`response_logps` catches that and falls back to the separate path.
    """
    groups, fulls = [], []
    for rec, idxs in zip(records, responses, strict=True):
        media = load_media(rec, media_root)
        prompt = encode(rec, None, processor, media_root=media_root, images=media)
        comps, labs = [], []
        for i in idxs:
            ex = encode(
                rec, i, processor, media_root=media_root, max_length=max_length, images=media
            )
            p = ex.prompt_length
            if p != len(prompt.input_ids) or not torch.equal(ex.input_ids[:p], prompt.input_ids):
                raise ValueError(
                    f"record {rec.id}: the prompt tokenizes differently inside the full sequence"
                )
            comps.append(ex.input_ids[p:])
            labs.append(ex.labels[p:])
            fulls.append(ex)
        groups.append(_Group(prompt, comps, labs))
    return groups, fulls


def shared_prefix_logps(
    model: torch.nn.Module, groups: Sequence[_Group], pad_token_id: int
) -> ResponseLogps:
    """Log-probs of every group's responses with one prompt forward per group (see module doc)."""
    # 1. prompts, left padded so every prompt ends at the last column; positions count from each
    #    row's first real token, as in an unpadded forward
    pb = collate([g.prompt for g in groups], pad_token_id, padding_side="left")
    pb.pop("labels")
    pmask = pb["attention_mask"]
    is_qwen = getattr(model.config, "model_type", "").startswith("qwen2")
    kwargs: dict[str, Any] = {}
    if not is_qwen:
        kwargs["position_ids"] = (pmask.cumsum(1) - 1).clamp(min=0)
    out = model(**pb, **kwargs, use_cache=True, logits_to_keep=1)
    cache = out.past_key_values
    last_logits = out.logits[:, -1]  # [B, V] predicts each response's first token

    # 2. repeat each prompt's cache row once per response (index_select keeps the graph)
    owner = torch.tensor(
        [gi for gi, g in enumerate(groups) for _ in g.completions], dtype=torch.long
    )
    cache.reorder_cache(owner)
    comps = [c for g in groups for c in g.completions]
    labs = [x for g in groups for x in g.completion_labels]
    lr = max(len(c) for c in comps)
    n = len(comps)
    ids = torch.full((n, lr), pad_token_id, dtype=torch.long)
    rmask = torch.zeros((n, lr), dtype=torch.long)
    for i, c in enumerate(comps):
        ids[i, : len(c)] = c
        rmask[i, : len(c)] = 1
    lp = pmask.shape[1]
    mask = torch.cat([pmask[owner], rmask], dim=1)
    plen = pmask.sum(1)[owner]
    cont: dict[str, Any] = {"input_ids": ids, "attention_mask": mask, "past_key_values": cache}
    cont["cache_position"] = torch.arange(lp, lp + lr)
    if is_qwen:
        # text positions continue after the prompt's multimodal positions (rope_deltas)
        deltas = (
            model.model.rope_deltas[owner]
            if getattr(model.model, "rope_deltas", None) is not None
            else 0
        )
        pos = (plen.unsqueeze(1) + torch.arange(lr).unsqueeze(0)) + deltas
        cont["position_ids"] = pos.unsqueeze(0).expand(3, -1, -1)
    else:
        cont["position_ids"] = plen.unsqueeze(1) + torch.arange(lr).unsqueeze(0)
    logits = model(**cont, use_cache=False).logits  # [N, lr, V]

    # 3. response token t is predicted by the logits before it: the prompt's last for t = 0
    per_token = []
    for i, (c, lab) in enumerate(zip(comps, labs, strict=True)):
        preds = torch.cat([last_logits[owner[i]].unsqueeze(0), logits[i, : len(c) - 1]], dim=0)
        tok = _token_logps(preds, c)
        per_token.append(tok[lab != IGNORE_INDEX])
    return _finish(per_token)


def response_logps(
    model: torch.nn.Module,
    processor: Any,
    records: Sequence[Record],
    responses: Sequence[Sequence[int]],
    *,
    media_root: str | Path | None = None,
    max_length: int | None = None,
    shared: bool = True,
) -> tuple[ResponseLogps, bool]:
    """Summed log-probs of ``records[q].responses[i]`` for each ``i in responses[q]``, flattened in
    that order. Returns ``(result, used_shared_path)``."""
    groups, fulls = build_groups(
        records, responses, processor, media_root=media_root, max_length=max_length
    )
    pad = processor.tokenizer.pad_token_id
    if shared and supports_shared_prefix(model):
        return shared_prefix_logps(model, groups, pad), True
    return separate_logps(model, collate(fulls, pad)), False
