"""Label noise for the SFT corpus: hallucinations injected into training descriptions.

Real instruction data for VLMs is machine-written and imperfect: short answers are usually right,
but long descriptions mention things that are not there, most often objects that *usually*
co-occur with what is there. A model trained on such data hallucinates in the same way, which is
what preference alignment (DPO, RLHF) is then supposed to fix. This module reproduces that:

- ``extra_object``: one fabricated sentence about an object drawn from the environment's
  co-occurrence prior (:func:`mmrlhf.world.scene.sample_object_kind`), placed in a free cell and in
  reading order, so it reads exactly like a true sentence;
- ``wrong_color`` / ``wrong_shape``: an existing object described with another colour or shape.

Every fabricated mention is a shape/colour pair that the scene does not contain at all, so
:func:`mmrlhf.world.truth.hallucinated_mentions` flags exactly the labels this module records.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass

from mmrlhf.world.config import SIZES, WorldConfig
from mmrlhf.world.scene import Scene, SceneObject, sample_object_kind


@dataclass
class NoisyDescription:
    """A description with its injected hallucination (``kind`` is ``None`` when clean)."""

    text: str
    kind: str | None = None
    hallucinated: list[str] = dataclasses.field(default_factory=list)

    @property
    def noisy(self) -> bool:
        return self.kind is not None


def _describe(scene: Scene, objects: list[SceneObject]) -> str:
    """A caption for ``scene`` with ``objects`` in place of its own (same templates)."""
    return dataclasses.replace(scene, objects=objects).caption()


def _extra_object(scene: Scene, cfg: WorldConfig, rng: random.Random) -> NoisyDescription | None:
    free = [
        (r, c) for r in range(cfg.grid) for c in range(cfg.grid) if (r, c) not in scene.occupied()
    ]
    if not free:
        return None
    for _ in range(50):
        # the same prior that lays out real scenes: a fabricated object is a *plausible* one
        shape, color = sample_object_kind(rng, cfg, scene.background)
        if not scene.has(shape=shape, color=color):
            break
    else:
        return None
    row, col = rng.choice(free)
    fake = SceneObject(shape, color, rng.choice(SIZES), row, col, 0, 0)
    objects = sorted([*scene.objects, fake], key=lambda o: (o.row, o.col))
    return NoisyDescription(_describe(scene, objects), "extra_object", [fake.label()])


def _swap(scene: Scene, cfg: WorldConfig, rng: random.Random, attr: str) -> NoisyDescription | None:
    values = list(cfg.colors) if attr == "color" else list(cfg.shapes)
    options = []
    for i, o in enumerate(scene.objects):
        for v in values:
            new = dataclasses.replace(o, **{attr: v})
            # the wrong pair must be absent from the scene, or it would not be a hallucination
            if v != getattr(o, attr) and not scene.has(shape=new.shape, color=new.color):
                options.append((i, new))
    if not options:
        return None
    i, new = rng.choice(options)
    objects = list(scene.objects)
    objects[i] = new
    return NoisyDescription(_describe(scene, objects), f"wrong_{attr}", [new.label()])


def corrupt_description(scene: Scene, cfg: WorldConfig, rng: random.Random) -> NoisyDescription:
    """A description of ``scene`` with exactly one hallucination of a kind drawn by
    ``cfg.noise_weights`` (falling back to another kind when the scene allows none)."""
    kinds = [k for k, w in cfg.noise_weights.items() if w > 0]
    first = rng.choices(kinds, weights=[cfg.noise_weights[k] for k in kinds])[0]
    for kind in [first, *[k for k in ("extra_object", "wrong_color", "wrong_shape") if k != first]]:
        if kind == "extra_object":
            out = _extra_object(scene, cfg, rng)
        else:
            out = _swap(scene, cfg, rng, kind.removeprefix("wrong_"))
        if out is not None:
            return out
    return NoisyDescription(scene.caption())  # pragma: no cover - a scene always has a free cell


def training_description(scene: Scene, cfg: WorldConfig, rng: random.Random) -> NoisyDescription:
    """The description a training record gets: noisy with probability
    ``cfg.hallucination_rate``, else the clean caption."""
    if rng.random() < cfg.hallucination_rate:
        return corrupt_description(scene, cfg, rng)
    return NoisyDescription(scene.caption())
