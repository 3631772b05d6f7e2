"""Score preference records with a trained reward model: rewards per response, margins per pair.

``score_records`` writes ``Response.reward`` for every response and, for every pair of the
record, ``Preference.margin = r_chosen - r_rejected`` (MM-DPO's dynamic beta reads it with
``derive_pairs(..., margin="given")``; records with a ranking get their derived pairs written as
explicit preferences, so ``margin="reward"`` and ``margin="given"`` both work downstream).

Critique RMs score with a critique appended (``mode``):

- ``generate`` (default for the critique type): greedy (or, with ``num_beams > 1``, beam search),
  batched, KV-cached ``generate`` with left padding, then the critique is appended and the score
  read at its end;
- ``sample``: ``n_samples`` critiques sampled per response (seeded); the reward is their mean;
- ``given``: the data's ``Response.critique`` (the human / teacher critique);
- ``none``: an empty critique.

A generated critique is written to ``Response.critique``; a human critique it replaces is kept
in ``Response.meta["human_critique"]``.

A reference-guided critique RM (``RewardSpec.reference``) first writes its own answer to each
record's question (greedy, one per record, from the question and image alone), then critiques
every response with it in context; ``reference="given"`` uses the record's best-ranked response
instead (an oracle, for analysis). The reference is written to ``Record.meta["rm_reference"]``.

Resumable: with ``out_path`` each scored record is appended as a JSONL line as soon as its chunk
finishes, and records whose id is already in the file are not scored again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from mmrlhf.data.pairs import derive_pairs
from mmrlhf.data.record import Preference, Record
from mmrlhf.models.inputs import collate, load_media
from mmrlhf.models.reward import (
    RewardModel,
    RewardSpec,
    best_response,
    encode_for_reward,
    encode_reference,
)

MODES = ("generate", "sample", "given", "none")
REFERENCES = ("generate", "given")


def default_mode(rm: RewardModel) -> str:
    return "generate" if rm.spec.type == "critique" else "none"


@torch.no_grad()
def generate_critiques(
    rm: RewardModel,
    processor: Any,
    items: Sequence[tuple[Record, str, tuple[list, list]]],
    *,
    n: int = 1,
    temperature: float = 0.0,
    max_new_tokens: int = 128,
    seed_fn: Callable[[], int] | None = None,
    max_length: int | None = None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    references: Sequence[str | None] | None = None,
) -> list[list[str]]:
    """``n`` critiques for each ``(record, response text, loaded media)``: one left-padded,
    KV-cached ``generate`` call over all of them (``n`` copies of each prompt when sampling).
    ``references[i]``: item ``i``'s reference answer (reference-guided critique RM).

    ``temperature == 0`` decodes greedily, or with ``num_beams > 1`` by beam search: the beam
    whose sum of token log-probs divided by ``length ** length_penalty`` is highest. Why beams:
    a greedy critic commits to its verdict ("..., which is wrong") before it has written the
    image's value that the verdict should follow from; beam search lets the later tokens
    overturn it (docs/reward.md, twentieth session). Cost: ``num_beams`` times the KV cache and
    about 1.7x the time at 4 beams on the world.
    """
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    if num_beams > 1 and temperature > 0:
        raise ValueError("num_beams > 1 is beam search: use it with temperature 0 (mode generate)")
    tok = processor.tokenizer
    refs = list(references) if references is not None else [None] * len(items)
    prompts = []
    for (rec, text, media), ref in zip(items, refs, strict=True):
        prompts += (
            encode_for_reward(
                rec,
                [text],
                processor,
                rm.spec,
                critiques=[None],
                reference=ref,
                media=media,
                max_length=max_length,
            )
            * n
        )
    kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens}
    if temperature > 0:
        if seed_fn is not None:
            torch.manual_seed(seed_fn())
        kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    else:
        kwargs.update(do_sample=False, num_beams=num_beams)
        if num_beams > 1:
            kwargs.update(length_penalty=length_penalty)
    texts = _generate(rm.vlm, tok, prompts, **kwargs)
    return [texts[i * n : (i + 1) * n] for i in range(len(items))]


def _generate(vlm: torch.nn.Module, tok: Any, prompts: list, **kwargs: Any) -> list[str]:
    """Left-padded batch of generation prompts -> ``vlm.generate`` -> the new text per row."""
    batch = collate(prompts, tok.pad_token_id, padding_side="left")
    batch.pop("labels")
    device = next(vlm.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    out = vlm.generate(**batch, pad_token_id=tok.pad_token_id, **kwargs)
    return [
        tok.decode(ids, skip_special_tokens=True).strip()
        for ids in out[:, batch["input_ids"].shape[1] :]
    ]


@torch.no_grad()
def generate_references(
    vlm: torch.nn.Module,
    processor: Any,
    spec: RewardSpec,
    items: Sequence[tuple[Record, tuple[list, list]]],
    *,
    max_new_tokens: int = 128,
    max_length: int | None = None,
) -> list[str]:
    """The reference answer to each ``(record, loaded media)`` for a reference-guided critique
    RM of ``spec``, written by ``vlm`` (the RM's own ``rm.vlm``, or a separate model such as
    the SFT policy, with its own ``processor``): greedy, one left-padded KV-cached ``generate``
    call, from the question and image alone (no response in context, so the answer is not
    pulled towards the one being judged)."""
    tok = processor.tokenizer
    prompts = [
        encode_reference(rec, processor, spec, None, media=media, max_length=max_length)
        for rec, media in items
    ]
    return _generate(vlm, tok, prompts, max_new_tokens=max_new_tokens, do_sample=False)


def _given_reference(rec: Record) -> str:
    best = best_response(rec)
    if best is None:
        raise ValueError(
            f"record {rec.id}: reference=given needs a best response (a ranking, or a response "
            "some pair prefers and none rejects)"
        )
    return rec.responses[best].text


def _apply_rewards(rec: Record, rewards: list[float], pair_strategy: str) -> None:
    for resp, r in zip(rec.responses, rewards, strict=True):
        resp.reward = float(r)
    if rec.preferences:
        for p in rec.preferences:
            if not p.is_tie:
                p.margin = rec.responses[p.chosen].reward - rec.responses[p.rejected].reward
    elif rec.ranking is not None:
        rec.preferences = [
            Preference(
                p.chosen,
                p.rejected,
                margin=rec.responses[p.chosen].reward - rec.responses[p.rejected].reward,
                meta={"from": "ranking"},
            )
            for p in derive_pairs(rec, pair_strategy)
        ]


@torch.no_grad()
def score_records(
    rm: RewardModel,
    processor: Any,
    records: Sequence[Record],
    *,
    mode: str | None = None,
    n_samples: int = 4,
    temperature: float = 1.0,
    max_new_tokens: int = 128,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    reference: str = "generate",
    reference_model: tuple[torch.nn.Module, Any] | None = None,
    batch_size: int = 16,
    media_root: str | Path | None = None,
    max_length: int | None = None,
    pair_strategy: str = "all",
    seed: int = 0,
    out_path: str | Path | None = None,
    progress: bool = True,
) -> list[Record]:
    """Score every response of ``records`` (in place; also returned, in input order).

    ``batch_size`` counts *responses* per forward (records are never split across chunks, so a
    chunk can exceed it by one record's responses). See the module docstring for ``mode``
    (default: ``generate`` for a critique RM, else ``none``, which non-critique RMs ignore).
    ``num_beams`` / ``length_penalty``: beam search for ``generate`` (see ``generate_critiques``).
    ``reference``: how a reference-guided critique RM gets its reference answer, ``generate``
    (its own, greedy) or ``given`` (the record's best response); other RMs ignore it.
    ``reference_model``: ``(vlm, processor)`` that writes the references instead of the RM
    (``generate``), e.g. the SFT model, for an RM trained with ``rm.reference_weight=0``.
    """
    from tqdm.auto import tqdm

    mode = mode or default_mode(rm)
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    critique_rm = rm.spec.type == "critique"
    if num_beams > 1 and critique_rm and mode != "generate":
        raise ValueError(f"num_beams > 1 (beam search) is for mode generate, not {mode!r}")
    if reference not in REFERENCES:
        raise ValueError(f"reference must be one of {', '.join(REFERENCES)}, got {reference!r}")
    guided = critique_rm and rm.spec.reference
    needs_writer = guided and reference == "generate" and reference_model is None
    if needs_writer and not rm.spec.writes_reference:
        raise ValueError(
            "this reference-guided critique RM was trained without learning to write its "
            "references (rm.reference_weight=0): give a model that writes them (reference_"
            "model / --reference-model, e.g. the SFT model) or use reference=given"
        )
    done: dict[str, Record] = {}
    if out_path is not None and Path(out_path).exists():
        for line in Path(out_path).read_text().splitlines():
            if line.strip():
                r = Record.from_dict(json.loads(line))
                done[r.id] = r
    todo = [r for r in records if r.id not in done]
    rm.eval()
    device = next(rm.parameters()).device
    pad_id = processor.tokenizer.pad_token_id
    gen = torch.Generator().manual_seed(seed)

    def seed_fn() -> int:
        # generate() samples from torch's global RNG: reseed it per chunk from our generator
        return int(torch.randint(0, 2**31 - 1, (1,), generator=gen))

    chunks: list[list[Record]] = [[]]
    for r in todo:
        if chunks[-1] and sum(x.k for x in chunks[-1]) + r.k > batch_size:
            chunks.append([])
        chunks[-1].append(r)
    sink = open(out_path, "a") if out_path is not None else None  # noqa: SIM115
    bar = tqdm(total=len(todo), desc="score", disable=not progress)
    try:
        for chunk in chunks:
            if not chunk:
                continue
            media = [load_media(r, media_root) for r in chunk]
            # 0. Reference answers (reference-guided critique RM): one per record, before any
            #    critique, so that the response to judge is not in their context.
            refs: list[str | None] = [None] * len(chunk)
            if guided:
                if reference == "generate":
                    writer, writer_proc = reference_model or (rm.vlm, processor)
                    refs = list(
                        generate_references(
                            writer,
                            writer_proc,
                            rm.spec,
                            list(zip(chunk, media, strict=True)),
                            max_new_tokens=max_new_tokens,
                            max_length=max_length,
                        )
                    )
                else:
                    refs = [_given_reference(r) for r in chunk]
            # 1. Critiques (critique RM): generated for all responses of the chunk in one call.
            crits: list[list[list[str]]] = []  # [record][response][sample]
            if critique_rm:
                if mode in ("generate", "sample"):
                    n = n_samples if mode == "sample" else 1
                    items = [
                        (r, x.text, m)
                        for r, m in zip(chunk, media, strict=True)
                        for x in r.responses
                    ]
                    item_refs = [
                        ref for r, ref in zip(chunk, refs, strict=True) for _ in r.responses
                    ]
                    flat = generate_critiques(
                        rm,
                        processor,
                        items,
                        n=n,
                        temperature=temperature if mode == "sample" else 0.0,
                        max_new_tokens=max_new_tokens,
                        seed_fn=seed_fn,
                        max_length=max_length,
                        num_beams=num_beams,
                        length_penalty=length_penalty,
                        references=item_refs,
                    )
                    it = iter(flat)
                    crits = [[next(it) for _ in r.responses] for r in chunk]
                elif mode == "given":
                    for r in chunk:
                        missing = [i for i, x in enumerate(r.responses) if x.critique is None]
                        if missing:
                            raise ValueError(
                                f"record {r.id}: responses{missing}: no critique (mode=given)"
                            )
                    crits = [[[x.critique or ""] for x in r.responses] for r in chunk]
                else:
                    crits = [[[""] for _ in r.responses] for r in chunk]
            # 2. Score: one forward over every (response, critique sample) of the chunk.
            exs, owner = [], []
            for ri, (r, m) in enumerate(zip(chunk, media, strict=True)):
                for k, x in enumerate(r.responses):
                    samples = crits[ri][k] if critique_rm else [None]
                    for c in samples:
                        exs += encode_for_reward(
                            r,
                            [x.text],
                            processor,
                            rm.spec,
                            critiques=[c] if critique_rm else None,
                            reference=refs[ri],
                            media=m,
                            max_length=max_length,
                            truncate_response=True,
                        )
                        owner.append((ri, k))
            batch = collate(exs, pad_id)
            batch = {k: v.to(device) for k, v in batch.items()}
            rewards = rm(batch).rewards.float().cpu().tolist()
            # 3. Mean over critique samples; write rewards, critiques and pair margins.
            sums: dict[tuple[int, int], list[float]] = {}
            for o, v in zip(owner, rewards, strict=True):
                sums.setdefault(o, []).append(v)
            for ri, r in enumerate(chunk):
                vals = [sum(sums[(ri, k)]) / len(sums[(ri, k)]) for k in range(r.k)]
                if guided:
                    r.meta["rm_reference"] = refs[ri]
                if critique_rm and mode in ("generate", "sample"):
                    for k, x in enumerate(r.responses):
                        if x.critique is not None and "human_critique" not in x.meta:
                            x.meta["human_critique"] = x.critique
                        x.critique = crits[ri][k][0]
                        if mode == "sample":
                            x.meta["critique_samples"] = crits[ri][k]
                            x.meta["reward_samples"] = sums[(ri, k)]
                _apply_rewards(r, vals, pair_strategy)
                done[r.id] = r
                if sink is not None:
                    sink.write(json.dumps(r.to_dict()) + "\n")
            if sink is not None:
                sink.flush()
            bar.update(len(chunk))
    finally:
        bar.close()
        if sink is not None:
            sink.close()
    return [done[r.id] for r in records]
