"""Batched generation for evaluation: greedy or sampled, KV-cached (``model.generate``), seeded.

Answers are appended to a JSONL file as each batch finishes, so an interrupted run resumes where
it stopped: records whose id is already in the file are not generated again.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from mmrlhf.data.record import Record
from mmrlhf.models.inputs import collate, encode


@torch.no_grad()
def generate_answers(
    model: torch.nn.Module,
    processor: Any,
    records: Sequence[Record],
    *,
    media_root: str | Path | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    seed: int = 0,
    out_path: str | Path | None = None,
    progress: bool = True,
) -> dict[str, str]:
    """Answer each record's query; returns ``{record id: answer text}``.

    ``temperature=0`` is greedy. With ``out_path``, answers already there are reused and new ones
    appended batch by batch (``{"id": ..., "answer": ...}`` per line).
    """
    from tqdm.auto import tqdm

    done: dict[str, str] = {}
    if out_path is not None and Path(out_path).exists():
        for line in Path(out_path).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                done[row["id"]] = row["answer"]
    todo = [r for r in records if r.id not in done]
    # Batch similar expected lengths together: a batch decodes until its longest answer ends, so
    # one description among short answers makes 15 short rows wait (measured on the world: a
    # mixed batch of 16 costs about as much as 16 descriptions). The reference answer's length
    # is the proxy; records without one keep their place.
    todo.sort(key=lambda r: len(r.responses[0].text) if r.responses else 0)
    tok = processor.tokenizer
    model.eval()
    device = next(model.parameters()).device
    gen = torch.Generator(device="cpu").manual_seed(seed)
    sink = open(out_path, "a") if out_path is not None else None  # noqa: SIM115
    try:
        for start in tqdm(range(0, len(todo), batch_size), desc="generate", disable=not progress):
            chunk = todo[start : start + batch_size]
            batch = collate(
                [encode(r, None, processor, media_root=media_root) for r in chunk],
                tok.pad_token_id,
                padding_side="left",
            )
            batch.pop("labels")
            batch = {k: v.to(device) for k, v in batch.items()}
            kwargs: dict[str, Any] = {
                "max_new_tokens": max_new_tokens,
                "pad_token_id": tok.pad_token_id,
            }
            if temperature > 0:
                # generate() draws from torch's global RNG: seed it per batch from our generator
                # so a resumed run samples the same way for the remaining records.
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
            else:
                kwargs.update(do_sample=False)
            out = model.generate(**batch, **kwargs)
            new = out[:, batch["input_ids"].shape[1] :]
            for r, ids in zip(chunk, new, strict=True):
                text = tok.decode(ids, skip_special_tokens=True).strip()
                done[r.id] = text
                if sink is not None:
                    sink.write(json.dumps({"id": r.id, "answer": text}) + "\n")
            if sink is not None:
                sink.flush()
    finally:
        if sink is not None:
            sink.close()
    return {r.id: done[r.id] for r in records}
