"""MMHal-Bench: judge ratings 0-6, mean score and hallucination rate, per question type.

Rubric (METHODS.md section 8): 6 very informative with good reasoning, no hallucination;
5 very informative; 4 somewhat informative; 3 not informative (all without hallucination);
2 very informative; 1 somewhat informative; 0 not informative (all with hallucination).

- mmhal_score = mean rating, an unparsed rating counted as 0 (the MMHal rule)
- mmhal_hallucination_rate = share of ratings < 3 (so an unparsed rating counts as one)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TypedDict

#: The eight MMHal-Bench question types.
MMHAL_TYPES = (
    "attribute",
    "adversarial",
    "comparison",
    "counting",
    "relation",
    "environment",
    "holistic",
    "other",
)

# "rating: N" (any case, optional spaces around the colon); the number is read whole, so
# "rating: 10" or "rating: 4.5" is a match with an invalid value, not a 1 or a 4.
_RATING = re.compile(r"\brating\s*:\s*(\d+(?:\.\d+)?)", re.IGNORECASE)


class MMHalQuestion(TypedDict):
    """One MMHal-Bench question (the fields of ``mmhal_bench.json``)."""

    question_type: str
    question_topic: str
    image_id: str
    image_src: str
    image_content: list[str]
    question: str
    gt_answer: str
    model_answer: str


def parse_rating(text: str) -> int | None:
    """The rating in a judge's output, or None when there is no single valid one.

    Every ``rating: N`` is collected (case-insensitive). The result is N when all matches
    name the same N and it is an integer 0-6; no match, several distinct values, or a value
    outside 0-6 (e.g. ``rating: 7``, ``rating: 4.5``) give None, which scores as 0.
    """
    if not isinstance(text, str):
        raise ValueError(f"text: expected a string, got {type(text).__name__}")
    found = {m.group(1) for m in _RATING.finditer(text)}
    if len(found) != 1:
        return None
    (value,) = found
    if not value.isdigit() or int(value) > 6:
        return None
    return int(value)


def _check_rating(v: object, i: int) -> int:
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 6:
        raise ValueError(f"ratings[{i}]: expected an integer 0-6 or None, got {v!r}")
    return v


def mmhal_metrics(ratings: Sequence[int | None], types: Sequence[str]) -> dict[str, float | int]:
    """MMHal-Bench metrics of ratings (None = unparsed, scored 0) with their question types.

    Keys: ``mmhal_score`` (mean rating), ``mmhal_hallucination_rate`` (share < 3),
    ``mmhal_unparsed`` (count of None), ``mmhal_n``; per type present, ``mmhal_score/<type>``,
    ``mmhal_hallucination_rate/<type>`` and ``mmhal_n/<type>``. Means over no ratings are 0.0.
    Every key is prefixed, so the dict merges flat into a run's metrics.
    Types are free strings (the world suite adds its own families); see :data:`MMHAL_TYPES`.
    """
    if len(ratings) != len(types):
        raise ValueError(f"ratings/types: lengths differ ({len(ratings)} vs {len(types)})")
    values = [_check_rating(v, i) for i, v in enumerate(ratings)]
    by_type: dict[str, list[int]] = {}
    for i, (v, t) in enumerate(zip(values, types, strict=True)):
        if not isinstance(t, str):
            raise ValueError(f"types[{i}]: expected a string, got {t!r}")
        by_type.setdefault(t, []).append(v)

    def score(vs: list[int]) -> float:
        return sum(vs) / len(vs) if vs else 0.0

    def rate(vs: list[int]) -> float:
        return sum(v < 3 for v in vs) / len(vs) if vs else 0.0

    out: dict[str, float | int] = {
        "mmhal_score": score(values),
        "mmhal_hallucination_rate": rate(values),
        "mmhal_unparsed": sum(v is None for v in ratings),
        "mmhal_n": len(values),
    }
    for t in sorted(by_type):
        out[f"mmhal_score/{t}"] = score(by_type[t])
        out[f"mmhal_hallucination_rate/{t}"] = rate(by_type[t])
        out[f"mmhal_n/{t}"] = len(by_type[t])
    return out


def load_mmhal_bench(path: str | Path) -> list[MMHalQuestion]:
    """Read ``mmhal_bench.json`` (a JSON list of question objects, see :class:`MMHalQuestion`).

    Problems raise ``ValueError("file:[index]: field: problem")``. ``model_answer`` may be
    absent (read as ""); ``question_type`` must be one of :data:`MMHAL_TYPES`.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of questions")
    out: list[MMHalQuestion] = []
    str_fields = ("question_type", "question_topic", "image_id", "image_src", "question")
    for i, d in enumerate(data):
        where = f"{path}:[{i}]"
        if not isinstance(d, dict):
            raise ValueError(f"{where}: expected an object")
        for key in (*str_fields, "gt_answer"):
            if key not in d:
                raise ValueError(f"{where}: {key}: missing")
        for key in (*str_fields, "gt_answer", "model_answer"):
            if key in d and not isinstance(d[key], str):
                raise ValueError(f"{where}: {key}: expected a string, got {d[key]!r}")
        if d["question_type"] not in MMHAL_TYPES:
            raise ValueError(
                f"{where}: question_type: {d['question_type']!r} is not one of {MMHAL_TYPES}"
            )
        content = d.get("image_content", [])
        if not isinstance(content, list) or not all(isinstance(x, str) for x in content):
            raise ValueError(f"{where}: image_content: expected a list of strings")
        out.append(
            MMHalQuestion(
                question_type=d["question_type"],
                question_topic=d["question_topic"],
                image_id=d["image_id"],
                image_src=d["image_src"],
                image_content=list(content),
                question=d["question"],
                gt_answer=d["gt_answer"],
                model_answer=d.get("model_answer", ""),
            )
        )
    return out
