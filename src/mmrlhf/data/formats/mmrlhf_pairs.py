"""MM-RLHF pair files: one preference pair per JSONL row.

Published columns (``dpo_pairs.jsonl``, MM-RLHF-RewardBench): ``id, image | video, prompt,
chosen, rejected, chosen_reason, rejected_reason``, optional ``is_tie``, optional per-pair
scaling (read from ``margin``, or ``score_margin``/``scaling``/``scale``/``reward_margin``;
written as ``margin``), optional ``reference_chosen_logp``/``reference_rejected_logp``.

Rows are grouped by ``id`` into one record per query (see
:func:`~mmrlhf.data.formats._common.group_pair_rows`): identical response texts become one
response, every row one explicit :class:`~mmrlhf.data.record.Preference`. Reasons go to the
response's ``meta["reason"]`` (and to the preference's meta only where a pair gives the same
text a different reason), reference log-probs to ``Response.ref_logp``. The category is the
first path component of the image/video path (``mcq/073712.png`` -> ``mcq``).

Our writer adds columns that make the file read back into the same record: ``chosen_index``,
``rejected_index`` (response order), ``chosen_model``/``rejected_model`` (``Response.source``),
``category``, ``images`` (when more than one), ``context`` (earlier turns). Other columns
are kept in the preference's meta and written back.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmrlhf.data.formats._common import (
    PairRow,
    ReadResult,
    group_pair_rows,
    image_ref,
    iter_json_rows,
    opt_float,
    pairs_for_writing,
    parse_rows,
    req_str,
    strip_tags,
    write_jsonl,
)
from mmrlhf.data.pairs import pair_row
from mmrlhf.data.record import Record, RecordError, Response, Turn, VideoRef

MARGIN_KEYS = ("margin", "score_margin", "scaling", "scale", "reward_margin")
KNOWN = {
    "id",
    "image",
    "images",
    "video",
    "prompt",
    "chosen",
    "rejected",
    "chosen_reason",
    "rejected_reason",
    "is_tie",
    "reference_chosen_logp",
    "reference_rejected_logp",
    "chosen_index",
    "rejected_index",
    "chosen_model",
    "rejected_model",
    "category",
    "context",
    *MARGIN_KEYS,
}


def matches(first: dict[str, Any]) -> bool:
    return {"prompt", "chosen", "rejected"} <= set(first) and isinstance(first["prompt"], str)


def _index(obj: dict[str, Any], key: str) -> int | None:
    v = obj.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise RecordError(key, f"must be an integer, got {v!r}")
    return v


def parse_row(obj: dict[str, Any]) -> PairRow:
    rid = obj.get("id")
    if rid is None:
        raise RecordError("id", "is required")
    if isinstance(rid, bool) or not isinstance(rid, str | int):
        raise RecordError("id", f"must be a string, got {type(rid).__name__}")
    images = []
    if obj.get("images"):
        if not isinstance(obj["images"], list):
            raise RecordError("images", "must be a list")
        images = [image_ref(x, f"images[{i}]") for i, x in enumerate(obj["images"])]
    elif obj.get("image") is not None:
        images = [image_ref(obj["image"], "image")]
    video = VideoRef.from_dict(obj["video"], "video") if obj.get("video") is not None else None
    context = [Turn.from_dict(t, f"context[{i}]") for i, t in enumerate(obj.get("context") or [])]
    responses = []
    for side in ("chosen", "rejected"):
        reason = obj.get(f"{side}_reason")
        if reason is not None and not isinstance(reason, str):
            raise RecordError(f"{side}_reason", f"must be a string, got {type(reason).__name__}")
        model = obj.get(f"{side}_model")
        if model is not None and not isinstance(model, str):
            raise RecordError(f"{side}_model", f"must be a string, got {type(model).__name__}")
        responses.append(
            Response(
                text=req_str(obj, side),
                source=model,
                ref_logp=opt_float(obj.get(f"reference_{side}_logp"), f"reference_{side}_logp"),
                # An empty reason is "no reason" (VL-RewardBench ships "" everywhere).
                meta={"reason": reason} if reason else {},
            )
        )
    margin = None
    for key in MARGIN_KEYS:
        if obj.get(key) is not None:
            margin = opt_float(obj[key], key)
            break
    category = obj.get("category")
    if category is not None and not isinstance(category, str):
        raise RecordError("category", "must be a string")
    return PairRow(
        id=str(rid),
        conversation=[*context, Turn("user", strip_tags(req_str(obj, "prompt")))],
        chosen=responses[0],
        rejected=responses[1],
        images=images,
        video=video,
        chosen_index=_index(obj, "chosen_index"),
        rejected_index=_index(obj, "rejected_index"),
        is_tie=bool(obj.get("is_tie", False)),
        margin=margin,
        pref_meta={k: v for k, v in obj.items() if k not in KNOWN},
        category=category,
    )


def records_from_rows(rows: Iterable[tuple[int, Any]], source: str = "") -> ReadResult:
    """Group ``(line, row_dict)`` into records (also used by :func:`pairs.rows_to_pairs`)."""
    yield from group_pair_rows(parse_rows(rows, parse_row))


def read(path: str | Path, **_: Any) -> ReadResult:
    yield from records_from_rows(iter_json_rows(path), str(path))


def rows_of(
    record: Record, strategy: str = "all", ties: str = "skip", margin: str = "given"
) -> list[dict[str, Any]]:
    """The pair-file rows of one record."""
    out = []
    for pair in pairs_for_writing(record, strategy, ties, margin):
        row = pair_row(record, pair)
        for p in record.preferences:
            if (p.chosen, p.rejected) == (pair.chosen, pair.rejected):
                # Unknown columns read from a pair file travel back out unchanged.
                extra = {k: v for k, v in p.meta.items() if k not in KNOWN}
                row.update(extra)
                for side in ("chosen", "rejected"):
                    if f"reference_{side}_logp" in p.meta:
                        row[f"reference_{side}_logp"] = p.meta[f"reference_{side}_logp"]
                break
        out.append(row)
    return out


def write(
    records: Iterable[Record],
    path: str | Path,
    strategy: str = "all",
    ties: str = "skip",
    margin: str = "given",
    **_: Any,
) -> int:
    """One row per pair (:func:`~mmrlhf.data.pairs.derive_pairs` with these options)."""
    return write_jsonl((row for r in records for row in rows_of(r, strategy, ties, margin)), path)
