"""TRL vision preference datasets (``DPOTrainer``/``RewardTrainer`` with a VLM processor).

One pair per row: ``images`` (the query's images), ``prompt`` (conversational:
``[{"role": "user", "content": [{"type": "image"}, ..., {"type": "text", "text": q}]}]``,
earlier turns before it), ``chosen``/``rejected`` (``[{"role": "assistant", "content":
[{"type": "text", "text": ...}]}]``), optional ``margin`` (RewardTrainer's margin column), and
our ``id`` column so that rows read back into one record per query.

- ``.parquet``: written through ``datasets`` with ``images`` as a list of ``Image()`` features
  (``{bytes, path}``), so ``load_dataset("parquet", ...)`` hands TRL PIL images directly. Use
  ``embed_images=True`` to make the file self-contained.
- ``.jsonl``: ``images`` are paths (or ``{"bytes_b64": ...}`` for embedded ones); cast with
  ``ds.cast_column("images", Sequence(Image()))`` after loading.

Tie pairs are not written (TRL has no ties); videos are not supported by this layout.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmrlhf.data.formats._common import (
    PairRow,
    ReadResult,
    group_pair_rows,
    image_out,
    image_ref,
    iter_json_rows,
    opt_float,
    parse_rows,
    writable_pairs,
    write_jsonl,
)
from mmrlhf.data.formats.records_parquet import iter_parquet_rows, write_rows
from mmrlhf.data.problems import DataError
from mmrlhf.data.record import ImageRef, Record, RecordError, Response, Turn


def matches(first: dict[str, Any] | set[str]) -> bool:
    if isinstance(first, set):
        return {"prompt", "chosen", "rejected", "images"} <= first
    return {"prompt", "chosen", "rejected"} <= set(first) and isinstance(first["prompt"], list)


def _text(content: Any, path: str) -> tuple[str, int]:
    """The text of a message's content and how many image placeholders it holds."""
    if isinstance(content, str):
        return content, 0
    if not isinstance(content, list):
        raise RecordError(path, "must be a string or a list of parts")
    texts, n_img = [], 0
    for i, part in enumerate(content):
        if not isinstance(part, dict):
            raise RecordError(f"{path}[{i}]", "must be an object")
        if part.get("type") == "image":
            n_img += 1
        elif part.get("type") == "text":
            texts.append(part.get("text") or "")
        else:
            raise RecordError(
                f"{path}[{i}].type", f"must be image or text, got {part.get('type')!r}"
            )
    return "\n".join(texts), n_img


def _messages(v: Any, key: str) -> list[Turn]:
    if not isinstance(v, list) or not v:
        raise RecordError(key, "must be a non-empty list of messages")
    out = []
    for i, m in enumerate(v):
        if not isinstance(m, dict):
            raise RecordError(f"{key}[{i}]", "must be an object")
        text, _ = _text(m.get("content"), f"{key}[{i}].content")
        out.append(Turn.from_dict({"role": m.get("role"), "text": text}, f"{key}[{i}]"))
    return out


def _answer(v: Any, key: str) -> Response:
    turns = _messages(v, key)
    if turns[-1].role != "assistant":
        raise RecordError(f"{key}[{len(turns) - 1}].role", "must be assistant")
    return Response(text=turns[-1].text)


def parse_row(obj: dict[str, Any]) -> PairRow:
    conv = _messages(obj.get("prompt"), "prompt")
    if conv[-1].role != "user":
        raise RecordError(f"prompt[{len(conv) - 1}].role", "the last prompt turn must be user")
    images: list[ImageRef] = []
    for i, im in enumerate(obj.get("images") or []):
        if isinstance(im, dict) and im.get("bytes") is None and im.get("path") is None:
            raise RecordError(f"images[{i}]", "an image needs a path or bytes")
        if isinstance(im, dict) and isinstance(im.get("bytes"), bytes):
            images.append(ImageRef(path=im.get("path"), data=im["bytes"]))
        else:
            images.append(image_ref(im, f"images[{i}]"))
    rid = obj.get("id")
    return PairRow(
        id=None if rid is None else str(rid),
        conversation=conv,
        chosen=_answer(obj.get("chosen"), "chosen"),
        rejected=_answer(obj.get("rejected"), "rejected"),
        images=images,
        margin=opt_float(obj.get("margin"), "margin"),
    )


def read(path: str | Path, **_: Any) -> ReadResult:
    rows = iter_parquet_rows(path) if Path(path).suffix == ".parquet" else iter_json_rows(path)
    yield from group_pair_rows(parse_rows(rows, parse_row))


def _prompt(record: Record) -> list[dict[str, Any]]:
    msgs = []
    first_user = next(i for i, t in enumerate(record.conversation) if t.role == "user")
    for i, t in enumerate(record.conversation):
        parts: list[dict[str, Any]] = []
        if i == first_user:
            parts = [{"type": "image"} for _ in record.images]
        parts.append({"type": "text", "text": t.text})
        msgs.append({"role": t.role, "content": parts})
    return msgs


def _answer_msg(text: str) -> list[dict[str, Any]]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def rows_of(record: Record, strategy: str, ties: str, margin: str, parquet: bool) -> list[dict]:
    if record.video is not None:
        raise DataError("video", "the TRL vision layout has no video field", kind="unsupported")
    images: list[Any] = (
        [{"path": im.path, "bytes": im.data} for im in record.images]
        if parquet
        else [image_out(im) for im in record.images]
    )
    rows = []
    for p in writable_pairs(record, strategy, ties, margin):
        row: dict[str, Any] = {
            "id": record.id,
            "images": images,
            "prompt": _prompt(record),
            "chosen": _answer_msg(record.responses[p.chosen].text),
            "rejected": _answer_msg(record.responses[p.rejected].text),
        }
        if parquet or p.margin is not None:
            row["margin"] = p.margin
        rows.append(row)
    return rows


def features() -> Any:
    from datasets import Features, Image, List, Value

    msg = List(
        {
            "role": Value("string"),
            "content": List({"type": Value("string"), "text": Value("string")}),
        }
    )
    return Features(
        {
            "id": Value("string"),
            "images": List(Image()),
            "prompt": msg,
            "chosen": msg,
            "rejected": msg,
            "margin": Value("float64"),
        }
    )


def write(
    records: Iterable[Record],
    path: str | Path,
    strategy: str = "all",
    ties: str = "skip",
    margin: str = "given",
    **_: Any,
) -> int:
    parquet = Path(path).suffix == ".parquet"
    rows = (row for r in records for row in rows_of(r, strategy, ties, margin, parquet))
    if parquet:
        return write_rows(list(rows), path, features())
    return write_jsonl(rows, path)
