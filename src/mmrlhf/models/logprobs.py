"""Summed response log-probs for preference training, computed once per response.

Two exact ways, one result:

- :func:`separate_logps` - the plain path: every (prompt + response) is a full sequence; the
  image and prompt are encoded again for each response (what TRL does: twice per pair).
- :func:`shared_prefix_logps` - each query's image(s) and prompt go through the model **once**
  (``use_cache=True``, with gradients); the key/value cache is then repeated for the query's K
  responses, which run as continuation batches of similar length (:func:`length_buckets`), and
  the vocabulary projection runs only at labelled positions. Gradients flow back through the cache
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

import functools
import inspect
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from mmrlhf.data.record import Record
from mmrlhf.models.inputs import IGNORE_INDEX, Example, collate, encode_responses

log = logging.getLogger(__name__)

#: A continuation forward's fixed cost in padded-token units, for :func:`length_buckets`.
#: Measured with benchmarks/dpo_throughput.py's setup (K = 2, random order, 1 CPU thread): 32 to
#: 256 give the same pairs/s within run-to-run noise; 0 (one forward per distinct length) and a
#: single padded batch are both 30-40% slower.
BUCKET_OVERHEAD_TOKENS = 128


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
    device = next(model.parameters()).device
    batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
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
    """Encode each record's prompt (and image) once and each listed response once.

    Returns the groups (for the shared path) and the full examples (for the separate path and
    for checks). The processor runs once per record; each response is tokenized on its own and
    appended, exactly as :func:`mmrlhf.models.inputs.encode` does for a single response.
    """
    groups, fulls = [], []
    for rec, idxs in zip(records, responses, strict=True):
        prompt, exs = encode_responses(
            rec, idxs, processor, media_root=media_root, max_length=max_length
        )
        comps, labs = [], []
        for ex in exs:
            p = ex.prompt_length
            comps.append(ex.input_ids[p:])
            labs.append(ex.labels[p:])
        fulls += exs
        groups.append(_Group(prompt, comps, labs))
    return groups, fulls


def lm_parts(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """``(decoder, lm_head)`` of a ``*ForConditionalGeneration`` VLM, through a peft wrapper.

    The decoder returns hidden states without the vocabulary projection, so the head runs only
    at labelled positions. None where the model does not have that layout.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    inner, head = getattr(base, "model", None), getattr(base, "lm_head", None)
    if not isinstance(inner, torch.nn.Module) or not isinstance(head, torch.nn.Module):
        return None
    return inner, head


def length_buckets(lengths: Sequence[int], overhead: int) -> list[list[int]]:
    """Split rows into buckets of similar length, minimising padded tokens + ``overhead`` per
    bucket (one forward's fixed cost, in token units). Returns lists of row indices.

    Exact dynamic programme over the sorted distinct lengths: a bucket is a run of consecutive
    sorted rows and costs ``rows * longest + overhead``.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    distinct = sorted(set(lengths))
    count = [sum(1 for x in lengths if x == d) for d in distinct]
    # best[j]: cost of bucketing the rows with the j shortest distinct lengths; cut[j]: where
    # the last bucket of that solution starts
    best, cut = [0.0] * (len(distinct) + 1), [0] * (len(distinct) + 1)
    for j in range(1, len(distinct) + 1):
        best[j], rows = float("inf"), 0
        for i in range(j, 0, -1):
            rows += count[i - 1]
            c = best[i - 1] + rows * distinct[j - 1] + overhead
            if c < best[j]:
                best[j], cut[j] = c, i - 1
    bounds, j = [], len(distinct)
    while j > 0:
        bounds.append(distinct[j - 1])
        j = cut[j]
    buckets, start = [], 0
    for hi in reversed(bounds):
        end = start
        while end < len(order) and lengths[order[end]] <= hi:
            end += 1
        buckets.append(order[start:end])
        start = end
    return buckets


@functools.cache
def _cache_argument(decoder_type: type) -> str:
    """The decoder's name for the KV-cache argument: transformers 5.x renamed it from
    ``past_key_values`` to ``cache`` (the old name warns, removal announced for 5.40), so both
    spellings keep every 5.x release working. Looked up once per decoder class, not per step."""
    params = inspect.signature(decoder_type.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def shared_prefix_logps(
    model: torch.nn.Module,
    groups: Sequence[_Group],
    pad_token_id: int,
    bucket_overhead: int = BUCKET_OVERHEAD_TOKENS,
) -> ResponseLogps:
    """Log-probs of every group's responses with one prompt forward per group (see module doc).

    The responses run as continuation batches of similar length (:func:`length_buckets`), so a
    6-token answer is not padded to a 60-token description; the vocabulary projection and
    log-softmax run once, over the labelled positions of all buckets.
    """
    parts = lm_parts(model)
    if parts is None:
        raise ValueError(f"{type(model).__name__}: no decoder/lm_head pair for the shared path")
    decoder, head = parts
    device = head.weight.device
    # 1. prompts, left padded so every prompt ends at the last column; positions count from each
    #    row's first real token, as in an unpadded forward
    pb = collate([g.prompt for g in groups], pad_token_id, padding_side="left")
    pb.pop("labels")
    pb = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in pb.items()}
    pmask = pb["attention_mask"]
    is_qwen = getattr(model.config, "model_type", "").startswith("qwen2")
    kwargs: dict[str, Any] = {}
    if not is_qwen:
        kwargs["position_ids"] = (pmask.cumsum(1) - 1).clamp(min=0)
    out = decoder(**pb, **kwargs, use_cache=True)
    cache_arg = _cache_argument(type(decoder))
    cache = getattr(out, "cache", None)
    if cache is None:
        cache = out.past_key_values
    last_hidden = out.last_hidden_state[:, -1]  # [B, H] predicts each response's first token
    deltas = getattr(decoder, "rope_deltas", None) if is_qwen else None

    owner = torch.tensor(
        [gi for gi, g in enumerate(groups) for _ in g.completions], dtype=torch.long, device=device
    )
    comps = [c for g in groups for c in g.completions]
    labs = [x for g in groups for x in g.completion_labels]
    plen = pmask.sum(1)[owner]
    lp = pmask.shape[1]
    layers = getattr(cache, "layers", None)
    buckets = (
        length_buckets([len(c) for c in comps], bucket_overhead)
        if layers is not None and all(type(x).__name__ == "DynamicLayer" for x in layers)
        else [list(range(len(comps)))]  # other cache types: one batch, as reorder_cache allows
    )

    # 2. per bucket: repeat each prompt's cache row once per response (index_select keeps the
    #    graph, so gradients reach the prompt computation) and run the responses
    sel_hidden, sel_target, sel_row = [], [], []
    for rows in buckets:
        idx = torch.tensor(rows, dtype=torch.long, device=device)
        own = owner[idx]
        if len(buckets) == 1:
            cache.reorder_cache(own)
            bcache = cache
        else:
            bcache = DynamicCache(
                ddp_cache_data=[
                    (x.keys.index_select(0, own), x.values.index_select(0, own)) for x in layers
                ]
            )
        lr = max(len(comps[i]) for i in rows)
        ids = torch.full((len(rows), lr), pad_token_id, dtype=torch.long)
        lab = torch.full((len(rows), lr), IGNORE_INDEX, dtype=torch.long)
        rmask = torch.zeros((len(rows), lr), dtype=torch.long)
        for r, i in enumerate(rows):
            ids[r, : len(comps[i])] = comps[i]
            lab[r, : len(comps[i])] = labs[i]
            rmask[r, : len(comps[i])] = 1
        ids, lab, rmask = ids.to(device), lab.to(device), rmask.to(device)
        cont: dict[str, Any] = {
            "input_ids": ids,
            "attention_mask": torch.cat([pmask[own], rmask], dim=1),
            cache_arg: bcache,
            "cache_position": torch.arange(lp, lp + lr, device=device),
        }
        pos = plen[idx].unsqueeze(1) + torch.arange(lr, device=device).unsqueeze(0)
        if is_qwen:
            # text positions continue after the prompt's multimodal positions (rope_deltas)
            pos = pos + (deltas[own] if deltas is not None else 0)
            cont["position_ids"] = pos.unsqueeze(0).expand(3, -1, -1)
        else:
            cont["position_ids"] = pos
        hid = decoder(**cont, use_cache=False).last_hidden_state  # [n_b, lr, H]
        # 3. response token t is predicted by the hidden state before it: the prompt's last for
        #    t = 0
        pred = torch.cat([last_hidden[own].unsqueeze(1), hid[:, :-1]], dim=1)
        keep = lab != IGNORE_INDEX
        sel_hidden.append(pred[keep])
        sel_target.append(ids[keep])
        sel_row.append(idx.unsqueeze(1).expand(-1, lr)[keep])

    # 4. one vocabulary projection + float32 log-softmax over every labelled position, summed
    #    per response
    tok = _token_logps(head(torch.cat(sel_hidden)), torch.cat(sel_target))
    row = torch.cat(sel_row)
    logps = torch.zeros(len(comps), dtype=tok.dtype, device=device).index_add(0, row, tok)
    n = torch.bincount(row, minlength=len(comps)).cpu()
    return ResponseLogps(logps=logps, nll=-logps / n.clamp(min=1).to(logps), n_tokens=n)


def groups_logps(
    model: torch.nn.Module,
    groups: Sequence[_Group],
    fulls: Sequence[Example],
    pad_token_id: int,
    shared: bool = True,
) -> tuple[ResponseLogps, bool]:
    """Log-probs of already encoded queries (:func:`build_groups`): the shared path where asked
    for and supported, else the separate one. Returns ``(result, used_shared_path)``."""
    if shared and supports_shared_prefix(model):
        return shared_prefix_logps(model, groups, pad_token_id), True
    return separate_logps(model, collate(fulls, pad_token_id)), False


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
    return groups_logps(model, groups, fulls, processor.tokenizer.pad_token_id, shared)
