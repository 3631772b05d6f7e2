"""LLaMA-Factory ShareGPT preference data (``ranking: true`` datasets, for DPO/RM stages).

A JSON array; one element per pair::

    {"id": "...",                                   # ours; ignored by LLaMA-Factory
     "system": "...",                               # only when the record has a system turn
     "conversations": [{"from": "human", "value": "<image>What is ...?"}, ...],
     "chosen": {"from": "gpt", "value": "..."},
     "rejected": {"from": "gpt", "value": "..."},
     "images": ["mcq/1.png"]}                       # or "videos": [...] with a <video> tag

``write`` also adds (or replaces) the dataset's entry in ``dataset_info.json`` next to the
file, named after the file's stem, with ``formatting: sharegpt``, ``ranking: true`` and the
column mapping. Image paths stay relative to the media root: point LLaMA-Factory's
``media_dir`` at it. Embedded-only images are exported next to the file. Tie pairs are not
written (no ties in this format).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmrlhf.data.formats._common import (
    IMAGE_TAG,
    VIDEO_TAG,
    PairRow,
    ReadResult,
    atomic_write_text,
    export_media,
    group_pair_rows,
    image_ref,
    iter_json_rows,
    parse_rows,
    strip_tags,
    writable_pairs,
    write_json_array,
)
from mmrlhf.data.formats.llava_rlhf import conversation
from mmrlhf.data.record import Record, RecordError, Response, Turn, VideoRef

FROM = {"user": "human", "assistant": "gpt"}


def matches(first: dict[str, Any]) -> bool:
    return "conversations" in first and isinstance(first.get("chosen"), dict)


def _answer(v: Any, key: str) -> Response:
    if not isinstance(v, dict) or not isinstance(v.get("value"), str):
        raise RecordError(f"{key}.value", "is required (a string)")
    return Response(text=v["value"])


def parse_row(obj: dict[str, Any]) -> PairRow:
    conv = conversation(obj)
    if conv[-1].role != "user":
        raise RecordError("conversations", "must end with the human turn being answered")
    if obj.get("system") is not None:
        if not isinstance(obj["system"], str):
            raise RecordError("system", "must be a string")
        conv.insert(0, Turn("system", obj["system"]))
    images = [image_ref(x, f"images[{i}]") for i, x in enumerate(obj.get("images") or [])]
    videos = obj.get("videos") or []
    video = VideoRef.from_dict(videos[0], "videos[0]") if videos else None
    rid = obj.get("id")
    return PairRow(
        id=None if rid is None else str(rid),
        conversation=conv,
        chosen=_answer(obj.get("chosen"), "chosen"),
        rejected=_answer(obj.get("rejected"), "rejected"),
        images=images,
        video=video,
    )


def read(path: str | Path, **_: Any) -> ReadResult:
    yield from group_pair_rows(parse_rows(iter_json_rows(path), parse_row))


def rows_of(record: Record, out: Path, strategy: str, ties: str, margin: str) -> list[dict]:
    turns = [t for t in record.conversation if t.role != "system"]
    system = next((t.text for t in record.conversation if t.role == "system"), None)
    conv = []
    tagged = False
    for t in turns:
        value = t.text
        if t.role == "user" and not tagged:
            # LLaMA-Factory needs one tag per image, in the turn the images belong to.
            tag = VIDEO_TAG if record.video else IMAGE_TAG * len(record.images)
            value = tag + strip_tags(value) if tag else value
            tagged = True
        conv.append({"from": FROM[t.role], "value": value})
    base: dict[str, Any] = {"id": record.id}
    if system is not None:
        base["system"] = system
    base["conversations"] = conv
    media = export_media(record, out)
    rows = []
    for p in writable_pairs(record, strategy, ties, margin):
        rows.append(
            {
                **base,
                "chosen": {"from": "gpt", "value": record.responses[p.chosen].text},
                "rejected": {"from": "gpt", "value": record.responses[p.rejected].text},
                **media,
            }
        )
    return rows


def dataset_info_entry(path: Path, has_video: bool, has_system: bool) -> dict[str, Any]:
    columns = {
        "messages": "conversations",
        "chosen": "chosen",
        "rejected": "rejected",
        "images": "images",
    }
    if has_video:
        columns["videos"] = "videos"
    if has_system:
        columns["system"] = "system"
    return {
        "file_name": path.name,
        "formatting": "sharegpt",
        "ranking": True,
        "columns": columns,
        "tags": {
            "role_tag": "from",
            "content_tag": "value",
            "user_tag": "human",
            "assistant_tag": "gpt",
        },
    }


def write(
    records: Iterable[Record],
    path: str | Path,
    strategy: str = "all",
    ties: str = "skip",
    margin: str = "given",
    dataset_name: str | None = None,
    **_: Any,
) -> int:
    path = Path(path)
    rows = [row for r in records for row in rows_of(r, path, strategy, ties, margin)]
    n = write_json_array(rows, path)
    info_path = path.parent / "dataset_info.json"
    info: dict[str, Any] = {}
    if info_path.exists():
        try:
            info = json.loads(info_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise RecordError(
                "-", f"{info_path} exists but is not valid JSON ({e.msg}); refusing to overwrite it"
            ) from None
    info[dataset_name or path.stem] = dataset_info_entry(
        path, any("videos" in r for r in rows), any("system" in r for r in rows)
    )
    atomic_write_text(info_path, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return n
