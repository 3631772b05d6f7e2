"""Our own parquet: one row per record, a typed columnar schema (docs/data.md, "parquet").

Columns with a fixed shape are real arrow types, so the file is usable from pandas/duckdb/
``datasets`` without us: ``id``, ``images`` (list of ``{path, bytes}``: the layout of the
``datasets`` Image feature), ``video`` (struct), ``conversation`` (list of ``{role, text}``),
``responses`` (list of structs with the three scores as ``{value, reason}`` structs), ``ranking``
(the ``1>2=3`` string) and ``ranking_reason``, ``preferences`` (list of structs), ``category``,
``tags``. Open-ended objects - ``facts``, ``meta``, and ``meta`` of responses and preferences -
are JSON strings: their keys differ from record to record, and arrow would otherwise either
fail or unify them into a wide sparse struct that changes with the data.

Written through ``datasets`` (explicit features, so an all-empty column keeps its type), read
with pyarrow in batches (no ``datasets`` import, constant memory).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmrlhf.data.formats._common import ReadResult, atomic_path, guarded
from mmrlhf.data.record import SCORE_DIMENSIONS, Record, Score

BATCH_ROWS = 256


def matches(columns: set[str]) -> bool:
    return {"id", "conversation", "responses"} <= columns


def features() -> Any:
    """The ``datasets.Features`` of the file (imported lazily: ``datasets`` is slow to load)."""
    from datasets import Features, List, Value

    score = {"value": Value("float64"), "reason": Value("string")}
    return Features(
        {
            "id": Value("string"),
            "images": List({"path": Value("string"), "bytes": Value("binary")}),
            "video": {
                "path": Value("string"),
                "num_frames": Value("int32"),
                "fps": Value("float64"),
                "max_frames": Value("int32"),
            },
            "conversation": List({"role": Value("string"), "text": Value("string")}),
            "responses": List(
                {
                    "text": Value("string"),
                    "source": Value("string"),
                    **{d: score for d in SCORE_DIMENSIONS},
                    "critique": Value("string"),
                    "reward": Value("float64"),
                    "ref_logp": Value("float64"),
                    "meta": Value("string"),
                }
            ),
            "ranking": Value("string"),
            "ranking_reason": Value("string"),
            "preferences": List(
                {
                    "chosen": Value("int64"),
                    "rejected": Value("int64"),
                    "is_tie": Value("bool"),
                    "margin": Value("float64"),
                    "meta": Value("string"),
                }
            ),
            "facts": Value("string"),
            "category": Value("string"),
            "tags": List(Value("string")),
            "meta": Value("string"),
        }
    )


def _js(d: dict) -> str | None:
    return json.dumps(d, ensure_ascii=False) if d else None


def _score(s: Score | None) -> dict | None:
    return None if s is None else {"value": s.value, "reason": s.reason}


def to_row(r: Record) -> dict[str, Any]:
    return {
        "id": r.id,
        "images": [{"path": im.path, "bytes": im.data} for im in r.images],
        "video": None if r.video is None else r.video.to_dict(),
        "conversation": [t.to_dict() for t in r.conversation],
        "responses": [
            {
                "text": x.text,
                "source": x.source,
                **{d: _score(getattr(x, d)) for d in SCORE_DIMENSIONS},
                "critique": x.critique,
                "reward": x.reward,
                "ref_logp": x.ref_logp,
                "meta": _js(x.meta),
            }
            for x in r.responses
        ],
        "ranking": r.ranking.format() if r.ranking else None,
        "ranking_reason": r.ranking.reason if r.ranking else None,
        "preferences": [
            {
                "chosen": p.chosen,
                "rejected": p.rejected,
                "is_tie": p.is_tie,
                "margin": p.margin,
                "meta": _js(p.meta),
            }
            for p in r.preferences
        ],
        "facts": _js(r.facts.to_dict()) if r.facts and not r.facts.is_empty() else None,
        "category": r.category,
        "tags": list(r.tags),
        "meta": _js(r.meta),
    }


def _nn(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def _loads(v: str | None, field: str) -> dict:
    if not v:
        return {}
    try:
        return json.loads(v)
    except json.JSONDecodeError as e:
        from mmrlhf.data.record import RecordError

        raise RecordError(field, f"is not valid JSON: {e.msg}") from None


def from_row(row: dict[str, Any]) -> Record:
    d: dict[str, Any] = {
        "id": row.get("id"),
        "images": [_nn(im) for im in row.get("images") or []],
        "video": _nn(row["video"]) if row.get("video") else None,
        "conversation": row.get("conversation") or [],
        "responses": [
            {
                **_nn({k: v for k, v in x.items() if k != "meta"}),
                "meta": _loads(x.get("meta"), f"responses[{i}].meta"),
            }
            for i, x in enumerate(row.get("responses") or [])
        ],
        "ranking": (
            None
            if row.get("ranking") is None
            else _nn({"order": row["ranking"], "reason": row.get("ranking_reason")})
        ),
        "preferences": [
            {**_nn({k: v for k, v in p.items() if k != "meta"}), "meta": _loads(p.get("meta"), "")}
            for p in row.get("preferences") or []
        ],
        "facts": _loads(row.get("facts"), "facts") or None,
        "category": row.get("category"),
        "tags": row.get("tags") or [],
        "meta": _loads(row.get("meta"), "meta"),
    }
    for x in d["responses"]:
        for dim in SCORE_DIMENSIONS:
            if x.get(dim) is not None:
                x[dim] = _nn(x[dim])
    return Record.from_dict(d)


def iter_parquet_rows(path: str | Path) -> Any:
    """``(row_number, row_dict)`` of a parquet file, read in batches."""
    import pyarrow.parquet as pq

    n = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=BATCH_ROWS):
        for row in batch.to_pylist():
            n += 1
            yield n, row


def read(path: str | Path, **_: Any) -> ReadResult:
    yield from guarded(iter_parquet_rows(path), from_row)


def write_rows(rows: list[dict[str, Any]], path: str | Path, feats: Any = None) -> int:
    """Write rows as parquet through ``datasets`` (atomic)."""
    from datasets import Dataset

    ds = Dataset.from_list(rows, features=feats)
    with atomic_path(path) as tmp:
        ds.to_parquet(str(tmp))
    return len(rows)


def write(records: Iterable[Record], path: str | Path, **_: Any) -> int:
    return write_rows([to_row(r) for r in records], path, features())
