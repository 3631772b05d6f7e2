"""The shapes world: mmrlhf's embedded, procedurally generated data with complete ground truth.

Scenes of coloured shapes on textured backgrounds (:mod:`.scene`), questions in MMHal-Bench's
families plus POPE-style probes (:mod:`.questions`), held-out POPE and safety sets
(:mod:`.probes`), an SFT corpus whose descriptions carry measurable hallucinations
(:mod:`.corpus`), files on disk (:mod:`.generate`) and the checks evaluators run on model answers
(:mod:`.truth`). See ``docs/world.md``.
"""

from mmrlhf.world.config import FAMILIES, MMHAL_TYPE, SIZES, SUPPORTED_SHAPES, WorldConfig
from mmrlhf.world.generate import World, generate, load_world, make_record, vocabulary
from mmrlhf.world.questions import QA, ask
from mmrlhf.world.scene import Glyph, Scene, SceneObject, render_scene, sample_scene
from mmrlhf.world.truth import (
    Mention,
    chair,
    check_short_answer,
    hallucinated_mentions,
    is_refusal,
    object_mentions,
)

__all__ = [
    "FAMILIES",
    "MMHAL_TYPE",
    "QA",
    "SIZES",
    "SUPPORTED_SHAPES",
    "Glyph",
    "Mention",
    "Scene",
    "SceneObject",
    "World",
    "WorldConfig",
    "ask",
    "chair",
    "check_short_answer",
    "generate",
    "hallucinated_mentions",
    "is_refusal",
    "load_world",
    "make_record",
    "object_mentions",
    "render_scene",
    "sample_scene",
    "vocabulary",
]
