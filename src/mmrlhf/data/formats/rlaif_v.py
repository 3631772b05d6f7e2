"""RLAIF-V preference parquet (``openbmb/RLAIF-V-Dataset`` on Hugging Face).

Columns: ``ds_name, image {bytes, path}, question, chosen, rejected, origin_dataset,
origin_split`` (a JSON string naming generator model, labeler and question type), ``idx,
image_path``; RLAIF-V's training cache adds ``logps``, the reference log-probs.

One row is one record with two responses, ``[chosen, rejected]``, and one preference. The id is
``<ds_name>-<idx>`` (``idx`` alone repeats across source datasets). The image bytes are
embedded (``ImageRef.data``) with ``image_path`` kept as its path. ``logps`` is read as
RLAIF-V's cache stores it (a JSON string or list): a 6-tuple ``(chosen_logp, chosen_avg,
chosen_per_token, rejected_logp, rejected_avg, rejected_per_token)`` or a pair
``(chosen_logp, rejected_logp)``; the summed log-probs become ``Response.ref_logp``. Any other
shape is reported as a notice and ignored. ``ds_name``, ``origin_dataset``, ``origin_split``
(parsed) and ``idx`` go to ``Record.meta``.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from mmrlhf.data.formats._common import ReadResult, req_str
from mmrlhf.data.formats.records_parquet import iter_parquet_rows
from mmrlhf.data.problems import DataError, Notice
from mmrlhf.data.record import ImageRef, Preference, Record, RecordError, Response, Turn


def matches(columns: set[str]) -> bool:
    return {"question", "chosen", "rejected"} <= columns and (
        "ds_name" in columns or "origin_dataset" in columns
    )


def _logps(v: Any) -> tuple[float, float] | None:
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            return None
    if isinstance(v, list | tuple):
        if len(v) == 6:
            c, r = v[0], v[3]
        elif len(v) == 2:
            c, r = v
        else:
            return None
        if all(isinstance(x, int | float) and not isinstance(x, bool) for x in (c, r)):
            return float(c), float(r)
    return None


def parse(row: dict[str, Any]) -> tuple[Record, Notice | None]:
    img = row.get("image") or {}
    if not isinstance(img, dict):
        raise RecordError("image", "must be a struct {bytes, path}")
    path = row.get("image_path") or img.get("path")
    images = []
    if img.get("bytes") is not None or path:
        images = [ImageRef(path=path, data=img.get("bytes"))]
    ds, idx = row.get("ds_name"), row.get("idx")
    if idx is None:
        raise RecordError("idx", "is required")
    split: Any = row.get("origin_split")
    if isinstance(split, str):
        # An unparseable value stays the raw string: it is provenance, not computed with.
        with contextlib.suppress(json.JSONDecodeError):
            split = json.loads(split)
    chosen = Response(text=req_str(row, "chosen"))
    rejected = Response(text=req_str(row, "rejected"))
    notice = None
    if row.get("logps") is not None:
        lp = _logps(row["logps"])
        if lp is None:
            notice = Notice(
                "logps",
                "has an unrecognised shape; reference log-probs ignored",
                kind="logps_ignored",
            )
        else:
            chosen.ref_logp, rejected.ref_logp = lp
    meta = {
        k: v
        for k, v in {
            "ds_name": ds,
            "origin_dataset": row.get("origin_dataset"),
            "origin_split": split,
            "idx": idx,
        }.items()
        if v is not None
    }
    record = Record(
        id=f"{ds}-{idx}" if ds else str(idx),
        conversation=[Turn("user", req_str(row, "question"))],
        responses=[chosen, rejected],
        images=images,
        preferences=[Preference(0, 1)],
        meta=meta,
    )
    return record, notice


def read(path: str | Path, **_: Any) -> ReadResult:
    for n, row in iter_parquet_rows(path):
        try:
            record, notice = parse(row)
        except RecordError as e:
            yield n, e
            continue
        except (TypeError, ValueError, AttributeError) as e:
            yield n, DataError("-", f"cannot be read: {type(e).__name__}: {e}")
            continue
        if notice is not None:
            yield n, notice
        yield n, record
