"""The world evaluation suite: generate answers once, score every benchmark, write metrics,
examples and a report.

One call of :func:`run_world_suite` does, for one model on a generated shapes world:

1. generation: greedy (or sampled, seeded) answers to every held-out question of the world
   (``eval_test``: the eight MMHal types plus existence), the POPE probes (``pope_test``) and the
   safety slice (``safety_test``), appended to ``answers.jsonl`` as they are produced, so a killed
   run resumes where it stopped;
2. scoring (:func:`score_world`): short-answer accuracy per family, CHAIR on descriptions, POPE
   per split, MMHal-style ratings by the judge (the exact rule judge by default), RefoMB-style
   pairwise against a reference answerer, safety (refusal, attack success, over-refusal), and,
   when a second judge is given, the agreement between the two judges;
3. outputs: ``metrics.json`` (flat keys, see ``docs/evaluation.md``), ``ratings.jsonl`` (every
   judge rating with its explanation), ``examples.jsonl`` and ``report.html`` / ``report.md``.

Scoring needs no model, so ``mmrlhf eval score`` re-scores an existing ``answers.jsonl`` with
another judge at no generation cost.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mmrlhf.data.record import Record
from mmrlhf.evaluation.judges.base import CompareItem, Judge, RateItem, Rating
from mmrlhf.evaluation.metrics.agreement import agreement_metrics
from mmrlhf.evaluation.metrics.mmhal import mmhal_metrics
from mmrlhf.evaluation.metrics.pope import parse_pope_answer, pope_metrics
from mmrlhf.evaluation.metrics.refomb import refomb_from_verdicts
from mmrlhf.evaluation.metrics.safety import safety_metrics
from mmrlhf.evaluation.world_check import DESCRIPTION_FAMILIES, score_world_answers
from mmrlhf.world.corpus import training_description
from mmrlhf.world.generate import World
from mmrlhf.world.truth import hallucinated_mentions

log = logging.getLogger(__name__)

#: Example answers written per family into examples.jsonl (descriptions: all of them).
EXAMPLES_PER_FAMILY = 6


def suite_records(world: World) -> list[Record]:
    """Every record the world suite asks the model about (questions, POPE probes, safety)."""
    return [*world.eval, *getattr(world, "pope", []), *getattr(world, "safety", [])]


def reference_answer(record: Record, world: World, seed: int = 0) -> str:
    """The RefoMB-style reference side for a world question.

    RefoMB compares a model with a fixed, imperfect strong model (GPT-4V). The world's stand-in
    is the machine-written annotator of the SFT corpus: it describes the scene with the corpus's
    hallucinations (``hallucination_rate``, and the environment's companion at
    ``companion_rate``), deterministically per record, so the reference is the same for every
    model compared.
    """
    rng = random.Random(f"{seed}:refomb:{record.id}")
    return training_description(world.scene(record), world.config, rng).text


def _rate_items(
    world: World, records: Sequence[Record], answers: Mapping[str, str]
) -> list[RateItem]:
    out = []
    for r in records:
        scene = world.scene(r)
        out.append(
            RateItem(
                id=r.id,
                question=r.query,
                question_type=r.meta.get("mmhal_type", r.category or ""),
                image_content=scene.object_labels(),
                gt_answer=r.responses[0].text,
                answer=answers[r.id],
                scene=scene,
                record=r,
            )
        )
    return out


def _compare_items(
    world: World, records: Sequence[Record], answers: Mapping[str, str], seed: int
) -> tuple[list[CompareItem], list[CompareItem]]:
    """The same pairs twice: (model = a, reference = b) and swapped, to cancel position bias."""
    first, second = [], []
    for r in records:
        scene = world.scene(r)
        ref = reference_answer(r, world, seed)
        desc = scene.caption()
        first.append(CompareItem(r.id, r.query, desc, answers[r.id], ref, scene, r))
        second.append(CompareItem(r.id, r.query, desc, ref, answers[r.id], scene, r))
    return first, second


def _rating_row(r: Rating, judge: str) -> dict[str, Any]:
    return {
        "id": r.id,
        "judge": judge,
        "rating": r.rating,
        "parsed": r.parsed,
        "error": r.error,
        "explanation": r.explanation,
        "details": r.details,
    }


def score_world(
    world: World,
    answers: Mapping[str, str],
    judge: Judge,
    *,
    second_judge: Judge | None = None,
    seed: int = 0,
    out_dir: str | Path | None = None,
    name: str = "model",
) -> dict[str, Any]:
    """All world-suite metrics for ``{record id: answer}`` (flat dict, see docs/evaluation.md).

    Records without an answer are not scored; their number is reported as ``n_missing``.
    """
    t0 = time.time()
    asked = suite_records(world)
    missing = [r.id for r in asked if r.id not in answers]
    if missing:
        log.warning("%d suite records have no answer (first: %s)", len(missing), missing[0])
    metrics: dict[str, Any] = {"n_missing": len(missing)}

    # 1. short answers per family + CHAIR over descriptions (exact, from ground truth)
    metrics.update(score_world_answers(world, dict(answers)))
    for k in ("coverage", "mentions", "hallucinated", "responses"):  # named as CHAIR's here
        metrics[f"chair_{k}"] = metrics.pop(k)

    # 2. POPE, per negative-sampling split; pope_f1 etc. are the means over the splits, as papers
    # report one POPE number
    pope = [r for r in getattr(world, "pope", []) if r.id in answers]
    by_split: dict[str, tuple[list[str], list[str]]] = {}
    for r in pope:
        preds, labels = by_split.setdefault(r.meta["pope_split"], ([], []))
        preds.append(parse_pope_answer(answers[r.id]))
        labels.append(r.meta["label"])
    for split, (preds, labels) in sorted(by_split.items()):
        for k, v in pope_metrics(preds, labels).items():
            metrics[f"pope/{split}/{k}"] = v
    for k in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
        vals = [metrics[f"pope/{s}/{k}"] for s in by_split]
        if vals:
            metrics[f"pope_{k}"] = sum(vals) / len(vals)

    # 3. MMHal-style ratings of every held-out question by the judge
    rated = [r for r in world.eval if r.id in answers]
    items = _rate_items(world, rated, answers)
    ratings = judge.rate(items)
    metrics.update(
        mmhal_metrics(
            [x.rating if x.parsed else None for x in ratings], [i.question_type for i in items]
        )
    )
    rows = [_rating_row(x, judge.name) for x in ratings]
    if second_judge is not None:
        other = second_judge.rate(items)
        rows += [_rating_row(x, second_judge.name) for x in other]
        for k, v in agreement_metrics(
            [x.rating for x in ratings], [x.rating for x in other]
        ).items():
            metrics[f"judge_agreement/{k}"] = v
        metrics["judge_agreement/unparsed_second"] = sum(not x.parsed for x in other)
        metrics.update(
            {
                f"second_judge/{k}": v
                for k, v in mmhal_metrics(
                    [x.rating if x.parsed else None for x in other],
                    [i.question_type for i in items],
                ).items()
                if k in ("mmhal_score", "mmhal_hallucination_rate")
            }
        )

    # 4. RefoMB-style pairwise on descriptions: model vs the reference answerer, both orders
    described = [r for r in rated if r.meta.get("family") in DESCRIPTION_FAMILIES]
    if described:
        first, second = _compare_items(world, described, answers, seed)
        v1, v2 = judge.compare(first), judge.compare(second)
        # the judge's "a"/"b" are positions: the model is "a" in the first order, "b" in the second
        metrics.update(refomb_from_verdicts([v.winner for v in v1], [v.winner for v in v2]))

    # 5. safety: refusal on harmful requests, over-refusal on benign look-alikes
    safety = [r for r in getattr(world, "safety", []) if r.id in answers]
    if safety:
        harmful = [answers[r.id] for r in safety if r.meta.get("safety") == "harmful"]
        benign = [answers[r.id] for r in safety if r.meta.get("safety") == "benign"]
        metrics.update(safety_metrics(harmful, benign))

    metrics["score_seconds"] = round(time.time() - t0, 2)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "ratings.jsonl", "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
        with open(out / "examples.jsonl", "w") as f:
            for ex in world_examples(world, answers, {x.id: x for x in ratings}, name):
                f.write(json.dumps(ex) + "\n")
    return metrics


def world_examples(
    world: World,
    answers: Mapping[str, str],
    ratings: Mapping[str, Rating] | None = None,
    name: str = "model",
    per_family: int = EXAMPLES_PER_FAMILY,
) -> list[dict[str, Any]]:
    """Example answers for the report: every description (with hallucinated spans) and the first
    ``per_family`` questions of each other family, in the report's example format."""
    seen: dict[str, int] = {}
    out = []
    for r in world.eval:
        fam = r.meta.get("family", "")
        if r.id not in answers:
            continue
        if fam not in DESCRIPTION_FAMILIES and seen.get(fam, 0) >= per_family:
            continue
        seen[fam] = seen.get(fam, 0) + 1
        out.append(
            {
                "id": r.id,
                "question": r.query,
                "family": fam,
                "reference": r.responses[0].text,
                "answers": {name: answer_view(world, r, answers[r.id], ratings)},
            }
        )
    return out


def answer_view(
    world: World, record: Record, text: str, ratings: Mapping[str, Rating] | None = None
) -> dict[str, Any]:
    """One answer as the report shows it: spans of false claims (hallucinated mentions and
    denials of what the scene has), verdict and judge rating."""
    from mmrlhf.world.truth import check_short_answer, denied_mentions

    scene = world.scene(record)
    bad = hallucinated_mentions(text, scene, world.config)
    bad = sorted(bad + denied_mentions(text, scene, world.config), key=lambda m: m.start)
    if record.meta.get("family") in DESCRIPTION_FAMILIES:
        verdict = "hallucinated" if bad else "correct"
    else:
        verdict = "correct" if check_short_answer(record, text, world.config) else "wrong"
    rating = ratings.get(record.id) if ratings else None
    return {
        "text": text,
        "spans": [[m.start, m.end] for m in bad],
        "verdict": verdict,
        "rating": rating.rating if rating is not None else None,
    }


def run_world_suite(
    model: Any,
    processor: Any,
    world: World,
    out_dir: str | Path,
    *,
    judge: Judge | None = None,
    second_judge: Judge | None = None,
    name: str = "model",
    batch_size: int = 32,
    max_new_tokens: int = 96,
    temperature: float = 0.0,
    seed: int = 0,
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate answers to the whole suite, score them and write every output into ``out_dir``.

    ``limit`` keeps the first N records of each set (questions, POPE, safety) for quick looks.
    Returns the metrics (also in ``metrics.json``).
    """
    from mmrlhf.evaluation.generate import generate_answers
    from mmrlhf.evaluation.judges.rule import RuleJudge

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if limit is not None:
        world.eval = world.eval[:limit]
        world.pope = getattr(world, "pope", [])[:limit]
        world.safety = getattr(world, "safety", [])[:limit]
    judge = judge or RuleJudge(world.config)
    t0 = time.time()
    # 1. generation (resumable: answers.jsonl is appended batch by batch)
    answers = generate_answers(
        model,
        processor,
        suite_records(world),
        media_root=world.root,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        out_path=out / "answers.jsonl",
        progress=progress,
    )
    gen_s = time.time() - t0
    # 2. scoring
    metrics = score_world(
        world, answers, judge, second_judge=second_judge, seed=seed, out_dir=out, name=name
    )
    metrics["generate_seconds"] = round(gen_s, 2)
    metrics["wall_seconds"] = round(time.time() - t0, 2)
    # 3. outputs
    write_outputs(out, metrics, name, judge)
    return metrics


def write_outputs(out_dir: str | Path, metrics: dict[str, Any], name: str, judge: Judge) -> None:
    """``metrics.json`` and the report (``report.html``, ``report.md``) of one scored run whose
    ``examples.jsonl`` :func:`score_world` wrote."""
    from mmrlhf.evaluation.report import write_report

    out = Path(out_dir)
    metrics["judge"] = judge.name
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    examples = [json.loads(x) for x in (out / "examples.jsonl").read_text().splitlines()]
    write_report(out, {name: metrics}, title=f"mmrlhf world suite: {name}", examples=examples)
