"""Checks on a parsed record: the rules the constructor leaves to the validator and loaders.

``Record.from_dict`` checks types; these check meaning: non-empty responses, scores in range, a
ranking that ranks exactly the responses, preferences that index real responses, media that
exist and decode, and (per task) how many responses a record needs. Each problem comes back as
an unlocated :class:`DataError` naming the record field; callers add the file and line.
"""

from __future__ import annotations

from pathlib import Path

from mmrlhf.data import problems as P
from mmrlhf.data.media import MediaError, check_image, check_video
from mmrlhf.data.problems import DataError
from mmrlhf.data.record import SCORE_MAX, SCORE_MIN, Record

TASKS: tuple[str, ...] = ("preference", "sft", "prompts")


def media_problems(record: Record, media_root: str | Path | None) -> list[DataError]:
    """Missing or undecodable images, missing video."""
    out = []
    for i, im in enumerate(record.images):
        try:
            check_image(im, media_root)
        except MediaError as e:
            out.append(DataError(f"images[{i}]", str(e), kind=e.kind))
    if record.video is not None:
        try:
            check_video(record.video, media_root)
        except MediaError as e:
            out.append(DataError("video", str(e), kind=e.kind))
    return out


def record_problems(
    record: Record,
    task: str | None = None,
    media_root: str | Path | None = None,
    check_media: bool = True,
) -> list[DataError]:
    """Every problem of one record. ``task=None`` applies only the task-independent rules
    (what loaders use); ``preference`` needs K >= 2 and some preference label, ``sft`` K >= 1,
    ``prompts`` any K (PPO prompt files have no responses)."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    out: list[DataError] = []
    for i, r in enumerate(record.responses):
        if not r.text.strip():
            out.append(DataError(f"responses[{i}].text", "is empty", kind=P.EMPTY_RESPONSE))
        for dim, s in r.scores().items():
            if not SCORE_MIN <= s.value <= SCORE_MAX:
                out.append(
                    DataError(
                        f"responses[{i}].{dim}",
                        f"score {s.value:g} is outside {SCORE_MIN}-{SCORE_MAX}",
                        kind=P.SCORE_OUT_OF_RANGE,
                    )
                )
    if record.ranking is not None:
        for msg in record.ranking.problems(record.k):
            out.append(
                DataError(
                    "ranking",
                    f"{record.ranking.format()!r} is not a ranking of the {record.k} "
                    f"responses: {msg}",
                    kind=P.BAD_RANKING,
                )
            )
    for i, p in enumerate(record.preferences):
        for side in ("chosen", "rejected"):
            idx = getattr(p, side)
            if not 0 <= idx < record.k:
                out.append(
                    DataError(
                        f"preferences[{i}].{side}",
                        f"index {idx} is out of range: the record has {record.k} responses",
                        kind=P.BAD_PREFERENCE,
                    )
                )
        if p.chosen == p.rejected:
            out.append(
                DataError(
                    f"preferences[{i}]",
                    f"compares response {p.chosen} with itself",
                    kind=P.BAD_PREFERENCE,
                )
            )
    if task == "preference":
        if record.k < 2:
            out.append(
                DataError(
                    "responses",
                    f"a preference record needs at least 2 responses, got {record.k}",
                    kind=P.TOO_FEW_RESPONSES,
                )
            )
        elif record.ranking is None and not record.preferences:
            out.append(
                DataError(
                    "ranking",
                    "has neither a ranking nor preferences: nothing says which response is better",
                    kind=P.NO_PREFERENCE,
                )
            )
    elif task == "sft" and record.k < 1:
        out.append(
            DataError(
                "responses", "an SFT record needs at least 1 response", kind=P.TOO_FEW_RESPONSES
            )
        )
    if check_media:
        out.extend(media_problems(record, media_root))
    return out
