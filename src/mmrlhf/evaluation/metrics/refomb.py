"""RefoMB: pairwise comparison of a model's answer with a reference answer, both orders.

A judge compares two answers ``a`` and ``b`` (given a long image description) and names a
winner: ``"a"``, ``"b"``, ``"tie"``, or None when its output could not be parsed. Each question
is asked twice with the order swapped to cancel position bias, and the two verdicts combine
into one outcome for the model (:func:`combine_orders`):

- win  when both orders prefer the model,
- loss when both orders prefer the reference,
- tie  otherwise (disagreement, a tie, or an unparsed verdict).

refomb_score = (wins + ties / 2) / N.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypedDict

Outcome = Literal["win", "tie", "loss"]
_WINNERS = ("a", "b", "tie", None)


class RefoMBQuestion(TypedDict):
    """One RefoMB record (``refomb_dev.jsonl`` / ``refomb_dev_gpt4v_reference.jsonl``)."""

    id: int
    image_url: str
    question: str
    description: str
    type: str
    split: str
    answer: str


def combine_orders(first: str | None, second: str | None) -> Outcome:
    """The model's outcome from two verdicts on the same question.

    ``first`` is the winner with the model as ``a`` and the reference as ``b``; ``second`` the
    winner with the reference as ``a`` and the model as ``b``. Each is ``"a"``, ``"b"``,
    ``"tie"`` or None (unparsed, treated as a tie). The model wins when ``first == "a"`` and
    ``second == "b"``, loses when ``first == "b"`` and ``second == "a"``, else it is a tie.
    """
    for name, v in (("first", first), ("second", second)):
        if v not in _WINNERS:
            raise ValueError(f"{name}: expected 'a', 'b', 'tie' or None, got {v!r}")
    if first == "a" and second == "b":
        return "win"
    if first == "b" and second == "a":
        return "loss"
    return "tie"


def refomb_metrics(outcomes: Sequence[str], unparsed: int = 0) -> dict[str, float | int]:
    """RefoMB metrics of the model's outcomes (``"win"``/``"tie"``/``"loss"``).

    Keys: ``refomb_score`` = (wins + ties / 2) / N, ``refomb_win_rate`` = wins / N, ``refomb_tie_rate`` =
    ties / N, ``refomb_loss_rate`` = losses / N (0.0 when N = 0), ``refomb_n`` = N, and ``refomb_unparsed``
    = ``unparsed``, the number of questions with at least one unparsed verdict (already
    counted as ties; pass it through from the caller, or use :func:`refomb_from_verdicts`).
    """
    counts = {"win": 0, "tie": 0, "loss": 0}
    for i, o in enumerate(outcomes):
        if o not in counts:
            raise ValueError(f"outcomes[{i}]: expected 'win', 'tie' or 'loss', got {o!r}")
        counts[o] += 1
    n = len(outcomes)
    if isinstance(unparsed, bool) or not isinstance(unparsed, int) or not 0 <= unparsed <= n:
        raise ValueError(f"unparsed: expected an integer in 0..{n}, got {unparsed!r}")

    def share(k: float) -> float:
        return k / n if n else 0.0

    return {
        "refomb_score": share(counts["win"] + counts["tie"] / 2),
        "refomb_win_rate": share(counts["win"]),
        "refomb_tie_rate": share(counts["tie"]),
        "refomb_loss_rate": share(counts["loss"]),
        "refomb_n": n,
        "refomb_unparsed": unparsed,
    }


def refomb_from_verdicts(
    first: Sequence[str | None], second: Sequence[str | None]
) -> dict[str, float | int]:
    """:func:`refomb_metrics` of paired winners in the two orders (see :func:`combine_orders`),
    counting ``refomb_unparsed`` as the questions where either verdict is None."""
    if len(first) != len(second):
        raise ValueError(f"first/second: lengths differ ({len(first)} vs {len(second)})")
    outcomes = [combine_orders(a, b) for a, b in zip(first, second, strict=True)]
    unparsed = sum(a is None or b is None for a, b in zip(first, second, strict=True))
    return refomb_metrics(outcomes, unparsed)


def load_refomb(path: str | Path) -> list[RefoMBQuestion]:
    """Read a RefoMB jsonl file (``image_url, question, description, type, split, id,
    answer`` per line). ``answer`` is "" in the question file and the reference model's answer
    in the reference file. Problems raise ``ValueError("file:line: field: problem")``; ids
    must be unique."""
    path = Path(path)
    out: list[RefoMBQuestion] = []
    seen: dict[int, int] = {}
    fields = ("image_url", "question", "description", "type", "split", "answer")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                d = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: line: not valid JSON ({e.msg})") from None
            if not isinstance(d, dict):
                raise ValueError(f"{where}: line: expected a JSON object")
            for key in ("id", *fields):
                if key not in d:
                    raise ValueError(f"{where}: {key}: missing")
            for key in fields:
                if not isinstance(d[key], str):
                    raise ValueError(f"{where}: {key}: expected a string, got {d[key]!r}")
            rid = d["id"]
            if isinstance(rid, bool) or not isinstance(rid, int):
                raise ValueError(f"{where}: id: expected an integer, got {rid!r}")
            if rid in seen:
                raise ValueError(f"{where}: id: duplicate {rid} (first on line {seen[rid]})")
            seen[rid] = lineno
            out.append(
                RefoMBQuestion(
                    id=rid,
                    image_url=d["image_url"],
                    question=d["question"],
                    description=d["description"],
                    type=d["type"],
                    split=d["split"],
                    answer=d["answer"],
                )
            )
    return out
