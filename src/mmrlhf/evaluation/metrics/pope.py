"""POPE (Polling-based Object Probing Evaluation): yes/no object-existence probes.

Answer parsing follows the reference scoring script shipped with POPE (and LLaVA-RLHF) exactly;
see :func:`parse_pope_answer`. Metrics treat "yes" as the positive class:

- accuracy  = (TP + TN) / N
- precision = TP / (TP + FP)
- recall    = TP / (TP + FN)
- f1        = 2 * precision * recall / (precision + recall)
- yes_ratio = (TP + FP) / N   (share of "yes" predictions)

Any ratio whose denominator is 0 is reported as 0.0.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal, TypedDict

YesNo = Literal["yes", "no"]

#: The words that make the first sentence a "no" (compared exactly, case-sensitive).
NEGATIVE_WORDS = ("No", "not", "no")


class PopeQuestion(TypedDict):
    """One line of a COCO POPE file."""

    question_id: int
    image: str
    text: str
    label: YesNo


def parse_pope_answer(text: str) -> YesNo:
    """Map a free answer to ``"yes"``/``"no"`` with the reference POPE rule.

    The reference script keeps only the text before the first ``"."``, deletes commas, splits
    on single spaces and answers ``"no"`` when one of the resulting words is exactly ``No``,
    ``no`` or ``not``; everything else is ``"yes"``. Being exact, it inherits the script's
    quirks: ``"NO"``, ``"No!"`` and ``"Not"`` count as "yes", and an empty answer is "yes".
    """
    if not isinstance(text, str):
        raise ValueError(f"answer: expected a string, got {type(text).__name__}")
    if text.find(".") != -1:
        text = text.split(".")[0]
    words = text.replace(",", "").split(" ")
    return "no" if any(w in words for w in NEGATIVE_WORDS) else "yes"


def _yes_no(v: object, what: str) -> YesNo:
    if v not in ("yes", "no"):
        raise ValueError(f"{what}: expected 'yes' or 'no', got {v!r}")
    return v  # type: ignore[return-value]


def pope_metrics(predictions: Sequence[str], labels: Sequence[str]) -> dict[str, float | int]:
    """POPE metrics of parsed predictions against gold labels (both ``"yes"``/``"no"``).

    Keys: ``accuracy``, ``precision``, ``recall``, ``f1``, ``yes_ratio`` (floats, formulas in
    the module docstring; 0.0 where a denominator is 0) and ``n``, ``tp``, ``fp``, ``tn``,
    ``fn`` (ints).
    """
    if len(predictions) != len(labels):
        raise ValueError(
            f"predictions/labels: lengths differ ({len(predictions)} vs {len(labels)})"
        )
    tp = fp = tn = fn = 0
    for i, (p, g) in enumerate(zip(predictions, labels, strict=True)):
        p, g = _yes_no(p, f"predictions[{i}]"), _yes_no(g, f"labels[{i}]")
        if p == "yes":
            tp, fp = (tp + 1, fp) if g == "yes" else (tp, fp + 1)
        else:
            tn, fn = (tn + 1, fn) if g == "no" else (tn, fn + 1)
    n = tp + fp + tn + fn

    def div(a: float, b: float) -> float:
        return a / b if b else 0.0

    precision, recall = div(tp, tp + fp), div(tp, tp + fn)
    return {
        "accuracy": div(tp + tn, n),
        "precision": precision,
        "recall": recall,
        "f1": div(2 * precision * recall, precision + recall),
        "yes_ratio": div(tp + fp, n),
        "n": n,
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
    }


def load_pope_file(path: str | Path) -> list[PopeQuestion]:
    """Read a COCO POPE jsonl file (``question_id, image, text, label`` per line).

    Blank lines are skipped. Problems raise ``ValueError("file:line: field: problem")``;
    question ids must be unique within the file.
    """
    path = Path(path)
    out: list[PopeQuestion] = []
    seen: dict[int, int] = {}
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
            for key in ("question_id", "image", "text", "label"):
                if key not in d:
                    raise ValueError(f"{where}: {key}: missing")
            qid = d["question_id"]
            if not isinstance(qid, int) or isinstance(qid, bool):
                raise ValueError(f"{where}: question_id: expected an integer, got {qid!r}")
            for key in ("image", "text"):
                if not isinstance(d[key], str):
                    raise ValueError(f"{where}: {key}: expected a string, got {d[key]!r}")
            if d["label"] not in ("yes", "no"):
                raise ValueError(f"{where}: label: expected 'yes' or 'no', got {d['label']!r}")
            if qid in seen:
                raise ValueError(
                    f"{where}: question_id: duplicate {qid} (first on line {seen[qid]})"
                )
            seen[qid] = lineno
            out.append(
                PopeQuestion(question_id=qid, image=d["image"], text=d["text"], label=d["label"])
            )
    return out


def score_pope_file(
    path: str | Path,
    answers: Mapping[int, str],
    *,
    missing: Literal["raise", "wrong"] = "raise",
) -> dict[str, float | int]:
    """POPE metrics of free-text ``answers`` (``{question_id: answer}``) on a POPE file.

    Answers are parsed with :func:`parse_pope_answer`. ``missing="raise"`` (default) raises a
    ``ValueError`` giving how many questions have no answer; ``missing="wrong"`` scores each
    unanswered question as the wrong answer (the opposite of its label). The result is
    :func:`pope_metrics`' dict plus ``missing`` (unanswered questions). Answers to ids that
    are not in the file are an error.
    """
    if missing not in ("raise", "wrong"):
        raise ValueError(f"missing: expected 'raise' or 'wrong', got {missing!r}")
    questions = load_pope_file(path)
    ids = {q["question_id"] for q in questions}
    extra = [k for k in answers if k not in ids]
    if extra:
        raise ValueError(
            f"answers: {len(extra)} question ids are not in {path} (first: {extra[0]!r})"
        )
    absent = [q["question_id"] for q in questions if q["question_id"] not in answers]
    if absent and missing == "raise":
        raise ValueError(
            f"answers: {len(absent)} of {len(questions)} questions in {path} have no answer "
            f"(first: {absent[0]}); pass missing='wrong' to count them as wrong"
        )
    preds: list[str] = []
    for q in questions:
        a = answers.get(q["question_id"])
        if a is None:
            preds.append("no" if q["label"] == "yes" else "yes")
        else:
            preds.append(parse_pope_answer(a))
    out = pope_metrics(preds, [q["label"] for q in questions])
    out["missing"] = len(absent)
    return out
