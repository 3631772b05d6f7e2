"""A judge backed by a local text-only causal language model loaded by path.

Why: an open-weight judge (a Qwen or Llama instruct checkpoint on disk) makes evaluation
reproducible and free of API keys and rate limits, and lets the judge be swapped without
changing the metrics. It uses exactly the prompts and strict parsers of the API judge
(:mod:`mmrlhf.evaluation.judges.prompts`), so a rating means the same thing whichever judge
produced it.

Generation is greedy (a judge should be deterministic) and batched with left padding (so every
row's continuation starts at the same position and can be sliced off). Prompts are rendered
with the tokenizer's chat template when it has one, else the messages' contents are
concatenated, which suits base models. A prompt that does not fit the model's context, or a
batch whose generation fails, gives those items an error (rating 0, ``parsed=False``) instead
of an exception that would lose the rest of the benchmark.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mmrlhf.evaluation.judges.base import CompareItem, RateItem, Rating, Verdict
from mmrlhf.evaluation.judges.prompts import (
    Messages,
    mmhal_messages,
    rating_from_reply,
    refomb_messages,
    verdict_from_reply,
)

logger = logging.getLogger(__name__)


def _resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype | str:
    """None: float32 on CPU (half precision is slow and lossy there), bfloat16 elsewhere."""
    if dtype is None:
        return torch.float32 if str(device).startswith("cpu") else torch.bfloat16
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return resolved


class LocalJudge:
    """MMHal ratings and RefoMB verdicts from a local ``AutoModelForCausalLM`` checkpoint."""

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        dtype: str | torch.dtype | None = None,
        max_new_tokens: int = 512,
        batch_size: int = 8,
        name: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.path = Path(path)
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.name = name or f"local:{self.path.name}"
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(
            self.path, dtype=_resolve_dtype(dtype, device)
        ).to(device)
        self.model.eval()
        self.use_chat_template = bool(getattr(self.tokenizer, "chat_template", None))
        self._stats_lock = threading.Lock()
        self._stats = dict.fromkeys(("generations", "failures", "unparsed"), 0)

    @property
    def stats(self) -> dict[str, int]:
        """Counters since creation: replies generated, items that failed, unparsed replies."""
        with self._stats_lock:
            return dict(self._stats)

    @property
    def context_length(self) -> int | None:
        """The model's maximum sequence length, when its config states one."""
        return getattr(self.model.config, "max_position_embeddings", None)

    def rate(self, items: Sequence[RateItem]) -> list[Rating]:
        """One MMHal :class:`Rating` per item, in order."""
        msgs = [
            mmhal_messages(it.question, it.image_content, it.gt_answer, it.answer) for it in items
        ]
        out = []
        for it, (text, error) in zip(items, self.generate(msgs), strict=True):
            r = rating_from_reply(it.id, text, error)
            if text is not None and not r.parsed:
                self._bump("unparsed")
            out.append(r)
        return out

    def compare(self, items: Sequence[CompareItem]) -> list[Verdict]:
        """One RefoMB :class:`Verdict` per item, in order."""
        msgs = [
            refomb_messages(it.question, it.description, it.answer_a, it.answer_b) for it in items
        ]
        out = []
        for it, (text, error) in zip(items, self.generate(msgs), strict=True):
            v = verdict_from_reply(it.id, text, error)
            if text is not None and not v.parsed:
                self._bump("unparsed")
            out.append(v)
        return out

    def render(self, messages: Messages) -> str:
        """The prompt text for one message list (chat template, or plain concatenation)."""
        if self.use_chat_template:
            return self.tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
        return "\n\n".join(m["content"].rstrip("\n") for m in messages) + "\n\n"

    def generate(self, messages_list: Sequence[Messages]) -> list[tuple[str | None, str | None]]:
        """``(reply, error)`` per message list, in order; an item never raises."""
        # A chat template already contains the BOS token; plain text needs the tokenizer's.
        add_special = not self.use_chat_template
        ids = [
            self.tokenizer(self.render(m), add_special_tokens=add_special)["input_ids"]
            for m in messages_list
        ]
        results: list[tuple[str | None, str | None]] = [(None, None)] * len(ids)
        todo = []
        ctx = self.context_length
        for i, seq in enumerate(ids):
            if ctx is not None and len(seq) + self.max_new_tokens > ctx:
                self._bump("failures")
                results[i] = (
                    None,
                    f"prompt of {len(seq)} tokens + max_new_tokens {self.max_new_tokens} "
                    f"exceeds the model's context of {ctx} tokens",
                )
            else:
                todo.append(i)
        # Longest first, so batches hold similar lengths (less padding) and an out-of-memory
        # error shows up on the first batch rather than after most of the work.
        todo.sort(key=lambda i: -len(ids[i]))
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            try:
                texts = self._generate_batch([ids[i] for i in batch])
            except Exception as e:  # noqa: BLE001  one failed batch must not lose the others
                logger.warning("judge %s: generation failed: %s", self.name, e, exc_info=True)
                self._bump("failures", len(batch))
                for i in batch:
                    results[i] = (None, f"generation failed: {type(e).__name__}: {e}")
                continue
            self._bump("generations", len(batch))
            for i, text in zip(batch, texts, strict=True):
                results[i] = (text, None)
        return results

    def _generation_config(self) -> Any:
        """The model's generation config made greedy (its EOS tokens are kept)."""
        gc = copy.deepcopy(self.model.generation_config)
        gc.do_sample = False
        gc.num_beams = 1
        gc.temperature = None
        gc.top_p = None
        gc.top_k = None
        gc.max_new_tokens = self.max_new_tokens
        gc.max_length = None
        gc.pad_token_id = self.tokenizer.pad_token_id
        if gc.eos_token_id is None:
            gc.eos_token_id = self.tokenizer.eos_token_id
        return gc

    @torch.inference_mode()
    def _generate_batch(self, batch_ids: list[list[int]]) -> list[str]:
        enc = self.tokenizer.pad({"input_ids": batch_ids}, padding=True, return_tensors="pt")
        enc = {k: v.to(self.device) for k, v in enc.items()}
        out = self.model.generate(**enc, generation_config=self._generation_config())
        new = out[:, enc["input_ids"].shape[1] :]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)

    def _bump(self, counter: str, n: int = 1) -> None:
        with self._stats_lock:
            self._stats[counter] += n

    def __repr__(self) -> str:
        return f"LocalJudge(name={self.name!r}, path={str(self.path)!r}, device={self.device!r})"
