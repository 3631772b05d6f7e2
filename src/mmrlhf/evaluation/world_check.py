"""A quick held-out check of a model on the shapes world: short-answer accuracy per question
family and hallucination in free descriptions (CHAIR), against exact ground truth.

The full evaluation suite (POPE, MMHal-style judge, RefoMB pairwise, safety, reports) builds on
this; the quick check is what ``mmrlhf demo`` and SFT use to say "did it learn".
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from mmrlhf.evaluation.generate import generate_answers
from mmrlhf.world.generate import World
from mmrlhf.world.truth import (
    HALLUCINATION_KINDS,
    chair,
    check_short_answer,
    hallucinated_mentions,
    hallucination_kinds,
)

# The families whose accuracy the foundation's acceptance names; the rest are reported too.
CORE_SHORT_FAMILIES = ("attribute", "counting", "existence", "relation")
DESCRIPTION_FAMILIES = ("holistic",)


def score_world_answers(world: World, answers: dict[str, str]) -> dict[str, Any]:
    """Metrics for ``{record id: answer}`` over the world's held-out records.

    Returns flat keys: ``short_answer_acc`` (all short-answer families), ``core_short_answer_acc``
    (attribute, counting, existence, relation), ``acc/<family>``, ``n/<family>``, CHAIR over
    the holistic descriptions (``chair_i``, ``chair_s``, ``mentions``, ``hallucinated``) and its
    hallucinated mentions by kind (``chair_hallucinated/<kind>``, see
    :func:`mmrlhf.world.truth.hallucination_kinds`).
    """
    right: dict[str, int] = defaultdict(int)
    total: dict[str, int] = defaultdict(int)
    texts, scenes = [], []
    for r in world.eval:
        if r.id not in answers:
            continue
        family = r.meta.get("family", r.category or "")
        if family in DESCRIPTION_FAMILIES:
            texts.append(answers[r.id])
            scenes.append(world.scene(r))
            continue
        total[family] += 1
        right[family] += bool(check_short_answer(r, answers[r.id], world.config))
    out: dict[str, Any] = {}
    for fam in sorted(total):
        out[f"acc/{fam}"] = right[fam] / total[fam]
        out[f"n/{fam}"] = total[fam]
    n_all = sum(total.values())
    out["short_answer_acc"] = sum(right.values()) / n_all if n_all else 0.0
    n_core = sum(total[f] for f in CORE_SHORT_FAMILIES)
    out["core_short_answer_acc"] = (
        sum(right[f] for f in CORE_SHORT_FAMILIES) / n_core if n_core else 0.0
    )
    out.update(chair(texts, scenes, world.config))
    kinds = dict.fromkeys(HALLUCINATION_KINDS, 0)
    for text, scene in zip(texts, scenes, strict=True):
        for k, v in hallucination_kinds(text, scene, world.config).items():
            kinds[k] += v
    out.update({f"chair_hallucinated/{k}": v for k, v in kinds.items()})
    return out


def quick_check(
    model: torch.nn.Module,
    processor: Any,
    world: World,
    *,
    out_dir: str | Path | None = None,
    batch_size: int = 32,
    max_new_tokens: int = 64,
    progress: bool = True,
) -> dict[str, Any]:
    """Generate greedy answers to every held-out question and score them.

    With ``out_dir``: answers go to ``answers.jsonl`` (resumable), metrics to ``metrics.json``,
    and ``examples.jsonl`` lists each description with its hallucinated mentions.
    """
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    answers = generate_answers(
        model,
        processor,
        world.eval,
        media_root=world.root,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        out_path=out / "answers.jsonl" if out is not None else None,
        progress=progress,
    )
    metrics = score_world_answers(world, answers)
    if out is not None:
        (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
        with open(out / "examples.jsonl", "w") as f:
            for r in world.eval:
                if r.meta.get("family") in DESCRIPTION_FAMILIES:
                    bad = hallucinated_mentions(answers[r.id], world.scene(r), world.config)
                    f.write(
                        json.dumps(
                            {
                                "id": r.id,
                                "question": r.query,
                                "answer": answers[r.id],
                                "truth": r.responses[0].text,
                                "hallucinated": [m.text for m in bad],
                            }
                        )
                        + "\n"
                    )
    return metrics
