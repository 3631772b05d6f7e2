"""Our own JSONL: one ``Record.to_dict()`` per line (docs/data.md, "Record schema").

Embedded image bytes are written as base64 (``bytes_b64``), everything else as plain JSON, so
the file is lossless for every field of :class:`~mmrlhf.data.record.Record`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmrlhf.data.formats._common import ReadResult, guarded, iter_json_rows, write_jsonl
from mmrlhf.data.record import Record


def matches(first: dict[str, Any]) -> bool:
    return "id" in first and "conversation" in first


def read(path: str | Path, **_: Any) -> ReadResult:
    yield from guarded(iter_json_rows(path), Record.from_dict)


def write(records: Iterable[Record], path: str | Path, **_: Any) -> int:
    return write_jsonl((r.to_dict() for r in records), path)
