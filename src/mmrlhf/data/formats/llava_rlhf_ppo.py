"""LLaVA-RLHF PPO prompt JSON.

Each element: ``id, image, conversations`` (ending with the human prompt; a trailing gpt turn,
if any, is kept as ``meta["reference_response"]``), ``captions`` (image captions for the
factually augmented reward model), ``caption_type`` (1-7: which symbolic reward applies),
``length_bonus`` (per-sample multiplier of the length reward). Becomes a record with
``responses=[]`` (prompts only: validate with ``--task prompts``), ``facts.captions``, and
``caption_type``/``length_bonus`` in ``Record.meta``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmrlhf.data.formats._common import ReadResult, guarded, image_ref, iter_json_rows
from mmrlhf.data.formats.llava_rlhf import conversation
from mmrlhf.data.record import Facts, Record, RecordError

KNOWN = {"id", "image", "conversations", "captions"}


def matches(first: dict[str, Any]) -> bool:
    return "conversations" in first and ("captions" in first or "caption_type" in first)


def parse(obj: dict[str, Any]) -> Record:
    conv = conversation(obj)
    meta = {k: v for k, v in obj.items() if k not in KNOWN}
    if conv[-1].role == "assistant":
        meta["reference_response"] = conv.pop().text
    if not conv or conv[-1].role != "user":
        raise RecordError("conversations", "must end with the human prompt")
    caps = obj.get("captions") or []
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise RecordError("captions", "must be a list of strings")
    rid = obj.get("id")
    if rid is None:
        raise RecordError("id", "is required")
    image = obj.get("image")
    return Record(
        id=str(rid),
        conversation=conv,
        responses=[],
        images=[image_ref(image, "image")] if image is not None else [],
        facts=Facts(captions=list(caps)) if caps else None,
        meta=meta,
    )


def read(path: str | Path, **_: Any) -> ReadResult:
    yield from guarded(iter_json_rows(path), parse)
