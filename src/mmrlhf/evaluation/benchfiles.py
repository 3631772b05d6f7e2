"""Scoring answers to the real public benchmark files (user data, images not needed).

Each function joins a benchmark file with the user's answers (``{id: answer}``, the same JSONL
that generation writes) and returns flat metrics. A text judge (API or local model) stands in for
GPT-4 where the benchmark needs one; the rule judge needs the world's ground truth and is refused
here with a clear message.

- POPE (COCO files): answers keyed by ``question_id``; the reference yes/no parsing rule.
- MMHal-Bench (``mmhal_bench.json``): answers keyed by the question's index 0-95 (or the
  file's own ``model_answer`` when no answers are given); the judge sees the image's object
  labels, the human answer and the model answer.
- RefoMB (``refomb_dev.jsonl`` + the reference answers file): answers keyed by ``id``; the judge
  compares with the reference in both orders.
- CHAIR with the COCO synonym list: per-response ground-truth object classes given in a file.
- Reward bench (``mm_rlhf_reward_bench.jsonl`` or any pair file): rewards per response.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mmrlhf.evaluation.judges.base import CompareItem, Judge, RateItem
from mmrlhf.evaluation.metrics.mmhal import load_mmhal_bench, mmhal_metrics
from mmrlhf.evaluation.metrics.pope import score_pope_file
from mmrlhf.evaluation.metrics.refomb import load_refomb, refomb_from_verdicts


def _text_judge(judge: Judge) -> Judge:
    if getattr(judge, "name", "") == "rule":
        raise ValueError(
            "the rule judge needs the shapes world's ground truth; score real benchmark files "
            "with --judge api or --judge local"
        )
    return judge


def score_pope(
    path: str | Path, answers: Mapping[str, str], missing: str = "raise"
) -> dict[str, Any]:
    """POPE metrics of ``answers`` (keys: question ids as strings or ints) on a COCO POPE file."""
    by_int: dict[int, str] = {}
    for k, v in answers.items():
        try:
            by_int[int(k)] = v
        except ValueError:
            raise ValueError(f"answers: id {k!r} is not a POPE question_id (an integer)") from None
    return {f"pope_{k}": v for k, v in score_pope_file(path, by_int, missing=missing).items()}  # type: ignore[arg-type]


def score_mmhal(
    path: str | Path, judge: Judge, answers: Mapping[str, str] | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """MMHal-Bench metrics of answers (keyed by question index) rated by a text judge.

    Without ``answers`` the file's own ``model_answer`` fields are rated (the published file
    carries empty ones: that is an error, not a silent 0). Returns ``(metrics, ratings rows)``.
    """
    judge = _text_judge(judge)
    qs = load_mmhal_bench(path)
    items = []
    for i, q in enumerate(qs):
        ans = answers.get(str(i)) if answers is not None else q["model_answer"]
        if ans is None or (answers is None and not ans.strip()):
            raise ValueError(f"{path}: question {i}: no answer to rate")
        items.append(
            RateItem(
                id=str(i),
                question=q["question"],
                question_type=q["question_type"],
                image_content=list(q["image_content"]),
                gt_answer=q["gt_answer"],
                answer=ans,
            )
        )
    ratings = judge.rate(items)
    metrics = mmhal_metrics(
        [r.rating if r.parsed else None for r in ratings], [i.question_type for i in items]
    )
    metrics["judge_errors"] = sum(r.error is not None for r in ratings)
    rows = [
        {
            "id": r.id,
            "rating": r.rating,
            "parsed": r.parsed,
            "error": r.error,
            "explanation": r.explanation,
        }
        for r in ratings
    ]
    return metrics, rows


def score_refomb(
    questions: str | Path, reference: str | Path, answers: Mapping[str, str], judge: Judge
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """RefoMB score of ``answers`` (keyed by question id) against the reference answers file,
    asked in both orders. Returns ``(metrics, verdict rows)``."""
    judge = _text_judge(judge)
    qs = load_refomb(questions)
    refs = {q["id"]: q["answer"] for q in load_refomb(reference)}
    first, second = [], []
    for q in qs:
        key = str(q["id"])
        if key not in answers:
            raise ValueError(f"answers: no answer for RefoMB question id {key}")
        if q["id"] not in refs:
            raise ValueError(f"{reference}: no reference answer for question id {key}")
        a, ref = answers[key], refs[q["id"]]
        first.append(CompareItem(key, q["question"], q["description"], a, ref))
        second.append(CompareItem(key, q["question"], q["description"], ref, a))
    v1, v2 = judge.compare(first), judge.compare(second)
    metrics = refomb_from_verdicts([v.winner for v in v1], [v.winner for v in v2])
    rows = [
        {
            "id": a.id,
            "model_first": a.winner,
            "reference_first": b.winner,
            "errors": [a.error, b.error],
        }
        for a, b in zip(v1, v2, strict=True)
    ]
    return metrics, rows


def score_chair(
    answers: Mapping[str, str], objects_path: str | Path, synonyms_path: str | Path
) -> dict[str, Any]:
    """CHAIR of free descriptions with the COCO synonym list.

    ``objects_path`` is JSONL with ``{"id": ..., "objects": [class, ...]}`` per image/answer (the
    ground-truth COCO classes of each answered image).
    """
    from mmrlhf.evaluation.metrics.chair import chair_metrics, load_synonyms

    gt: dict[str, list[str]] = {}
    for n, line in enumerate(Path(objects_path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{objects_path}:{n}: not JSON ({e.msg})") from None
        if "id" not in row or not isinstance(row.get("objects"), list):
            raise ValueError(f"{objects_path}:{n}: objects: need 'id' and a list 'objects'")
        gt[str(row["id"])] = row["objects"]
    missing = [k for k in answers if k not in gt]
    if missing:
        raise ValueError(
            f"{objects_path}: no ground-truth objects for {len(missing)} answers (first: {missing[0]!r})"
        )
    ids = list(answers)
    return chair_metrics(
        [answers[i] for i in ids], [gt[i] for i in ids], load_synonyms(synonyms_path)
    )


def score_rewardbench(data: str | Path, scores: str | Path) -> dict[str, Any]:
    """Acc / Acc+ per category of rewards given per response.

    ``scores`` is either a records file whose responses carry ``reward`` (what ``mmrlhf reward
    score`` writes) or JSONL rows ``{"id": record id, "text": response text, "reward": r}``
    (or ``"response": index`` instead of ``"text"``). Responses are matched to ``data``'s records
    (loaded with the usual loaders, media not checked); a response without a reward is an error
    naming the record.
    """
    from mmrlhf.data.io import load_records
    from mmrlhf.evaluation.metrics.rewardbench import rewardbench_metrics, rows_from_records

    records, _ = load_records(data, check_media=False)
    by_id = {r.id: r for r in records}
    lines = [x for x in Path(scores).read_text(encoding="utf-8").splitlines() if x.strip()]
    first = json.loads(lines[0]) if lines else {}
    if "responses" in first:
        scored, _ = load_records(scores, check_media=False)
        for s in scored:
            if s.id not in by_id:
                raise ValueError(f"{scores}: record {s.id!r} is not in {data}")
            rec = by_id[s.id]
            rewards = {x.text: x.reward for x in s.responses}
            for resp in rec.responses:
                resp.reward = rewards.get(resp.text)
    else:
        for n, line in enumerate(lines, 1):
            row = json.loads(line)
            rid = str(row.get("id"))
            if rid not in by_id:
                raise ValueError(f"{scores}:{n}: id: record {rid!r} is not in {data}")
            rec = by_id[rid]
            if "response" in row:
                idx = int(row["response"])
            else:
                # exact text first, then ignoring surrounding whitespace (files often differ there)
                text = row.get("text")
                texts = [x.text for x in rec.responses]
                if text not in texts and isinstance(text, str):
                    stripped = [t.strip() for t in texts]
                    text = texts[stripped.index(text.strip())] if text.strip() in stripped else None
                if text not in texts:
                    raise ValueError(f"{scores}:{n}: text: not a response of record {rid!r}")
                idx = texts.index(text)
            if not 0 <= idx < len(rec.responses):
                raise ValueError(f"{scores}:{n}: response: index {idx} out of range")
            rec.responses[idx].reward = float(row["reward"])
    return rewardbench_metrics(rows_from_records(records))
