"""MM-RLHF full annotation: one query per JSONL line with all its scored responses.

The published annotation layout is not in our shared files, so this adapter defines one that
carries everything METHODS.md section 2 describes, with these field names::

    {"id": "long/000123",                      # required
     "image": "long/000123.jpg",               # or "images": [...], or "video": "video/x.mp4"
     "question": "What is ...?",               # required: the user's query
     "context": [{"role": "user", "text": ...}, {"role": "assistant", "text": ...}],  # optional
     "responses": [                            # K responses, in the order the ranking numbers
       {"model": "gpt-4o",                     # -> Response.source
        "response": "...",                     # -> Response.text (required)
        "helpfulness":  {"score": 4, "reason": "..."},   # or a bare number
        "faithfulness": {"score": 5, "reason": "..."},
        "ethics":       {"score": 5, "reason": "..."},
        "critique": "...",                     # teacher-expanded critique (optional)
        "reward": 1.3, "ref_logp": -52.1}],    # cached values (optional, ours)
     "ranking": "1>2=3",                       # 1-based, ties with '='
     "ranking_reason": "...",
     "is_tie": true,                           # ignored on read: it follows from the ranking
     "positive_example": "...", "negative_example": "...",  # hand-written when all tie
     "category": "long"}                       # optional; else first path component of media

Unknown top-level keys go to ``Record.meta`` (and are written back); unknown response keys
to ``Response.meta``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmrlhf.data.formats._common import (
    ReadResult,
    category_of,
    guarded,
    image_out,
    image_ref,
    iter_json_rows,
    req_str,
    write_jsonl,
)
from mmrlhf.data.record import (
    SCORE_DIMENSIONS,
    Ranking,
    Record,
    RecordError,
    Response,
    Score,
    Turn,
    VideoRef,
)

TOP = {
    "id",
    "image",
    "images",
    "video",
    "question",
    "context",
    "responses",
    "ranking",
    "ranking_reason",
    "is_tie",
    "category",
}
RESP = {"model", "response", "critique", "reward", "ref_logp", *SCORE_DIMENSIONS}


def matches(first: dict[str, Any]) -> bool:
    resp = first.get("responses")
    return (
        "question" in first
        and isinstance(resp, list)
        and (not resp or (isinstance(resp[0], dict) and "response" in resp[0]))
    )


def _score(v: Any, path: str) -> Score | None:
    if v is None:
        return None
    if isinstance(v, dict):
        if "score" not in v:
            raise RecordError(f"{path}.score", "is required")
        return Score.from_dict({"value": v["score"], "reason": v.get("reason")}, path)
    return Score.from_dict(v, path)


def _response(d: Any, path: str) -> Response:
    if not isinstance(d, dict):
        raise RecordError(path, f"must be an object, got {type(d).__name__}")
    text = req_str(d, "response", f"{path}.response")
    r = Response.from_dict(
        {
            "text": text,
            "source": d.get("model"),
            "critique": d.get("critique"),
            "reward": d.get("reward"),
            "ref_logp": d.get("ref_logp"),
            "meta": {k: v for k, v in d.items() if k not in RESP},
        },
        path,
    )
    for dim in SCORE_DIMENSIONS:
        setattr(r, dim, _score(d.get(dim), f"{path}.{dim}"))
    return r


def parse(obj: dict[str, Any]) -> Record:
    rid = obj.get("id")
    if rid is None or isinstance(rid, bool) or not isinstance(rid, str | int):
        raise RecordError("id", "is required (a string)")
    if obj.get("images"):
        images = [image_ref(x, f"images[{i}]") for i, x in enumerate(obj["images"])]
    elif obj.get("image") is not None:
        images = [image_ref(obj["image"], "image")]
    else:
        images = []
    video = VideoRef.from_dict(obj["video"], "video") if obj.get("video") is not None else None
    context = [Turn.from_dict(t, f"context[{i}]") for i, t in enumerate(obj.get("context") or [])]
    raw = obj.get("responses")
    if not isinstance(raw, list):
        raise RecordError("responses", "must be a list")
    ranking = None
    if obj.get("ranking") is not None:
        reason = obj.get("ranking_reason")
        if reason is not None and not isinstance(reason, str):
            raise RecordError("ranking_reason", "must be a string")
        ranking = Ranking.parse(obj["ranking"], reason=reason, path="ranking")
    category = obj.get("category")
    if category is None:
        category = category_of(video.path if video else (images[0].path if images else None))
    return Record(
        id=str(rid),
        conversation=[*context, Turn("user", req_str(obj, "question"))],
        responses=[_response(d, f"responses[{i}]") for i, d in enumerate(raw)],
        images=images,
        video=video,
        ranking=ranking,
        category=category,
        meta={k: v for k, v in obj.items() if k not in TOP},
    )


def read(path: str | Path, **_: Any) -> ReadResult:
    yield from guarded(iter_json_rows(path), parse)


def to_obj(r: Record) -> dict[str, Any]:
    out: dict[str, Any] = {"id": r.id}
    if len(r.images) == 1:
        out["image"] = image_out(r.images[0])
    elif r.images:
        out["images"] = [image_out(im) for im in r.images]
    if r.video is not None:
        out["video"] = r.video.path
    if len(r.conversation) > 1:
        out["context"] = [t.to_dict() for t in r.conversation[:-1]]
    out["question"] = r.query
    resps = []
    for x in r.responses:
        d: dict[str, Any] = {"model": x.source, "response": x.text}
        for dim, s in x.scores().items():
            d[dim] = {"score": s.value, "reason": s.reason} if s.reason else {"score": s.value}
        d.update({"critique": x.critique, "reward": x.reward, "ref_logp": x.ref_logp})
        d.update(x.meta)
        resps.append({k: v for k, v in d.items() if v is not None})
    out["responses"] = resps
    if r.ranking is not None:
        out["ranking"] = r.ranking.format()
        out["is_tie"] = r.ranking.has_ties
        if r.ranking.reason is not None:
            out["ranking_reason"] = r.ranking.reason
    if r.category is not None:
        out["category"] = r.category
    out.update(r.meta)
    return out


def write(records: Iterable[Record], path: str | Path, **_: Any) -> int:
    """Preferences without a ranking cannot be expressed here and are not written (the
    ranking is this format's only preference label); use ``mmrlhf_pairs`` for those."""
    return write_jsonl((to_obj(r) for r in records), path)
