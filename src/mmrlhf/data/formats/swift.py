"""ms-swift preference JSONL (``swift rlhf --rlhf_type dpo|rm``).

One pair per line::

    {"messages": [{"role": "system", "content": "..."},          # when present
                  {"role": "user", "content": "<image>What is ...?"},
                  {"role": "assistant", "content": "<chosen>"}],
     "rejected_response": "<rejected>",
     "images": ["mcq/1.png"],                                    # or "videos": [...]
     "margin": 1.0}                                              # when the pair has one

Paths are written as stored (relative to the media root; swift resolves them against its
working directory, so run it from the media root or convert with absolute paths). Embedded-only
images are exported next to the file. Tie pairs are not written. Reading groups lines by their
query (messages before the answer, and media): swift rows carry no id.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmrlhf.data.formats._common import (
    IMAGE_TAG,
    VIDEO_TAG,
    PairRow,
    ReadResult,
    export_media,
    group_pair_rows,
    image_ref,
    iter_json_rows,
    opt_float,
    parse_rows,
    req_str,
    strip_tags,
    writable_pairs,
    write_jsonl,
)
from mmrlhf.data.record import Record, RecordError, Response, Turn, VideoRef


def matches(first: dict[str, Any]) -> bool:
    return "messages" in first and "rejected_response" in first


def parse_row(obj: dict[str, Any]) -> PairRow:
    msgs = obj.get("messages")
    if not isinstance(msgs, list) or len(msgs) < 2:
        raise RecordError("messages", "must list the prompt turns and the chosen answer")
    turns = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict):
            raise RecordError(f"messages[{i}]", "must be an object")
        text = req_str(m, "content", f"messages[{i}].content")
        t = Turn.from_dict({"role": m.get("role"), "text": text}, f"messages[{i}]")
        if t.role == "user":
            t.text = strip_tags(t.text)
        turns.append(t)
    if turns[-1].role != "assistant":
        raise RecordError(
            f"messages[{len(turns) - 1}].role",
            "the last message must be the assistant's chosen answer",
        )
    if turns[-2].role != "user":
        raise RecordError(f"messages[{len(turns) - 2}].role", "must be the user's query")
    images = [image_ref(x, f"images[{i}]") for i, x in enumerate(obj.get("images") or [])]
    videos = obj.get("videos") or []
    return PairRow(
        id=None,
        conversation=turns[:-1],
        chosen=Response(text=turns[-1].text),
        rejected=Response(text=req_str(obj, "rejected_response")),
        images=images,
        video=VideoRef.from_dict(videos[0], "videos[0]") if videos else None,
        margin=opt_float(obj.get("margin"), "margin"),
    )


def read(path: str | Path, **_: Any) -> ReadResult:
    yield from group_pair_rows(parse_rows(iter_json_rows(path), parse_row))


def rows_of(record: Record, out: Path, strategy: str, ties: str, margin: str) -> list[dict]:
    msgs = []
    tagged = False
    for t in record.conversation:
        text = t.text
        if t.role == "user" and not tagged:
            tag = VIDEO_TAG if record.video else IMAGE_TAG * len(record.images)
            text = tag + text
            tagged = True
        msgs.append({"role": t.role, "content": text})
    media = export_media(record, out)
    rows = []
    for p in writable_pairs(record, strategy, ties, margin):
        row: dict[str, Any] = {
            "messages": [*msgs, {"role": "assistant", "content": record.responses[p.chosen].text}],
            "rejected_response": record.responses[p.rejected].text,
            **media,
        }
        if p.margin is not None:
            row["margin"] = p.margin
        rows.append(row)
    return rows


def write(
    records: Iterable[Record],
    path: str | Path,
    strategy: str = "all",
    ties: str = "skip",
    margin: str = "given",
    **_: Any,
) -> int:
    path = Path(path)
    return write_jsonl(
        (row for r in records for row in rows_of(r, path, strategy, ties, margin)), path
    )
