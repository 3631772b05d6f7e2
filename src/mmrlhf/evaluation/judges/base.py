"""The one judge interface every judge implements (rule, API, local model).

A judge does two things, both in batches so that API and model judges can run them concurrently
or batched:

- :meth:`Judge.rate` gives MMHal-style ratings 0-6 (METHODS.md section 8): 6 very informative
  with good reasoning and no hallucination ... 0 not informative with hallucination. A rating
  that cannot be obtained or parsed is 0 with ``parsed=False`` (the MMHal rule), and is counted
  and reported by the caller, never dropped.
- :meth:`Judge.compare` gives a RefoMB-style pairwise verdict between answers ``a`` and ``b``
  given a detailed description of the image. Position bias is cancelled one level up
  (:func:`mmrlhf.evaluation.metrics.refomb.combine_orders`) by asking both orders.

Items carry both what a text judge sees (question, object labels, reference answer or
description) and, optionally, the world's exact ground truth (``scene``/``record``) for the
rule judge; API and model judges ignore the ground-truth fields.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Winner = Literal["a", "b", "tie"]


@dataclass
class RateItem:
    """One answer to rate on the MMHal rubric."""

    #: Stable id of the answer (the question's record id); cache keys and reports use it.
    id: str
    question: str
    #: MMHal question type (attribute, adversarial, comparison, counting, relation,
    #: environment, holistic, other).
    question_type: str
    #: Object labels shown to a text judge in place of the image (MMHal's ``image_content``).
    image_content: list[str]
    #: The human/reference answer (MMHal's ``gt_answer``).
    gt_answer: str
    #: The answer under evaluation.
    answer: str
    #: World ground truth for the rule judge (a ``mmrlhf.world.scene.Scene``), else None.
    scene: Any = None
    #: The question's record (``mmrlhf.data.record.Record``) for the rule judge, else None.
    record: Any = None


@dataclass
class Rating:
    """A judge's 0-6 rating of one :class:`RateItem`."""

    id: str
    #: 0-6; 0 also when nothing parsable came back (see ``parsed``).
    rating: int
    #: False when the judge's output held no rating or several (the rating is then 0).
    parsed: bool = True
    #: The judge's explanation (or the rule judge's account of what it found).
    explanation: str = ""
    #: Why no rating could be obtained (timeout, HTTP error after retries, ...), else None.
    error: str | None = None
    #: Extra details a judge may attach (the rule judge: informativeness, hallucinated words).
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def hallucination(self) -> bool:
        """MMHal's hallucination flag: a rating below 3."""
        return self.rating < 3


@dataclass
class CompareItem:
    """Two answers to one question, to compare for trustworthiness and helpfulness."""

    id: str
    question: str
    #: Long, detailed description of the image (RefoMB's human-written description).
    description: str
    answer_a: str
    answer_b: str
    scene: Any = None
    record: Any = None


@dataclass
class Verdict:
    """A judge's pairwise verdict on one :class:`CompareItem`."""

    id: str
    #: "a", "b" or "tie"; None when nothing parsable came back (counted as a tie by RefoMB
    #: scoring, and reported).
    winner: Winner | None
    parsed: bool = True
    explanation: str = ""
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class Judge(Protocol):
    """What every judge provides. ``name`` identifies it in reports and cache keys."""

    name: str

    def rate(self, items: Sequence[RateItem]) -> list[Rating]:
        """One :class:`Rating` per item, in order."""
        ...

    def compare(self, items: Sequence[CompareItem]) -> list[Verdict]:
        """One :class:`Verdict` per item, in order."""
        ...
