"""Label noise for the SFT corpus: hallucinations injected into training descriptions.

Real instruction data for VLMs is machine-written and imperfect: short answers are usually right,
but long descriptions mention things that are not there, most often objects that *usually*
co-occur with what is there. A model trained on such data hallucinates in the same way, which is
what preference alignment (DPO, RLHF) is then supposed to fix. This module reproduces that:

- ``extra_object``: one fabricated sentence about an object drawn from the environment's
  co-occurrence prior (:func:`mmrlhf.world.scene.sample_object_kind`), placed in a free cell and in
  reading order, so it reads exactly like a true sentence;
- ``wrong_color`` / ``wrong_shape``: an existing object described with another colour or shape;
- ``companion`` (systematic, on top of the above): the environment's typical object
  (``WorldConfig.env_companions``) added as the last sentence, in the last free cell, when the
  scene lacks it - with probability ``companion_rate``, so a model learns it as a habit.

The first three are i.i.d. label noise; a model decoded greedily does not reproduce them (at a
30% rate the clean continuation is always likelier). The companion is predictable from the image
(its environment, its absence), so a model learns to add it: that is the hallucination
alignment should remove, while the model's own misreads are a perception limit it cannot fix.

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
    #: Cells the fabricated sentences claim (so that a second one does not reuse them).
    cells: list[tuple[int, int]] = dataclasses.field(default_factory=list)

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
    return NoisyDescription(_describe(scene, objects), "extra_object", [fake.label()], [(row, col)])


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
    ``cfg.hallucination_rate``, else the clean caption; then, in an environment with a companion
    the scene lacks, the companion added with probability ``cfg.companion_rate``."""
    if rng.random() < cfg.hallucination_rate:
        d = corrupt_description(scene, cfg, rng)
    else:
        d = NoisyDescription(scene.caption())
    pair = cfg.env_companions.get(scene.background)
    if pair is not None and rng.random() < cfg.companion_rate:
        d = add_companion(scene, d, pair)
    return d


def add_companion(scene: Scene, d: NoisyDescription, pair: str) -> NoisyDescription:
    """``d`` with a last sentence about a small ``pair`` ("yellow circle") in the last free cell
    (reading order), unless the scene has that pair (then it is no hallucination and the
    caption already names it) or ``d`` already fabricated it or no cell is free."""
    color, shape = pair.split()
    if scene.has(shape=shape, color=color) or any(h.endswith(f" {pair}") for h in d.hallucinated):
        return d
    taken = scene.occupied() | set(d.cells)
    free = [(r, c) for r in range(scene.grid) for c in range(scene.grid) if (r, c) not in taken]
    if not free:
        return d
    row, col = free[-1]
    fake = SceneObject(shape, color, "small", row, col, 0, 0)
    kind = "companion" if d.kind is None else f"{d.kind}+companion"
    return NoisyDescription(
        f"{d.text} {scene.object_sentence(fake)}",
        kind,
        [*d.hallucinated, fake.label()],
        [*d.cells, (row, col)],
    )
