"""Configuration of the shapes world: every size, count, vocabulary list and rate in one place.

A :class:`WorldConfig` is stored in ``world.json`` next to the generated files, so a world can be
re-generated or re-read exactly. Defaults are tuned for a *tiny* vision-language model trained
from scratch on CPU: 72x72 images on a 3x3 grid (24 px cells, i.e. 3x3 patches of 8 px), a handful
of big saturated shapes on muted backgrounds, and a vocabulary of about a hundred words.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

RGB = tuple[int, int, int]

#: Shapes the renderer knows how to draw (``WorldConfig.shapes`` must be a subset).
SUPPORTED_SHAPES = ("circle", "square", "triangle", "diamond", "cross")

#: The two object sizes. Comparison questions rely on there being exactly two.
SIZES = ("small", "large")

#: The nine question families: MMHal-Bench's eight types plus POPE-style ``existence``.
FAMILIES = (
    "attribute",
    "adversarial",
    "comparison",
    "counting",
    "relation",
    "environment",
    "holistic",
    "other",
    "existence",
)

#: MMHal-Bench question type of each family (``existence`` probes absent objects like
#: MMHal's adversarial questions do, so it is filed there).
MMHAL_TYPE = {f: f for f in FAMILIES} | {"existence": "adversarial"}


def _colors() -> dict[str, RGB]:
    # Bright, saturated and far apart from each other and from every background (checked in
    # __post_init__), so that one 8x8 patch is enough to tell them apart.
    return {
        "red": (225, 30, 30),
        "green": (40, 200, 50),
        "blue": (40, 90, 240),
        "yellow": (250, 225, 20),
        "purple": (170, 50, 210),
        "white": (252, 252, 252),
    }


def _backgrounds() -> dict[str, RGB]:
    # Muted, mid-to-dark tones: none is close to a saturated object colour. "snowfield" is a
    # greyish blue rather than white so that white objects stay visible on it.
    return {
        "meadow": (75, 105, 65),
        "ocean": (45, 70, 110),
        "desert": (150, 120, 85),
        "snowfield": (150, 162, 180),
        "cave": (40, 36, 34),
    }


def _env_shapes() -> dict[str, tuple[str, ...]]:
    return {
        "meadow": ("circle", "triangle"),
        "ocean": ("circle", "diamond"),
        "desert": ("triangle", "diamond"),
        "snowfield": ("cross", "square"),
        "cave": ("diamond", "cross"),
    }


def _env_colors() -> dict[str, tuple[str, ...]]:
    return {
        "meadow": ("yellow", "red"),
        "ocean": ("white", "yellow"),
        "desert": ("red", "purple"),
        "snowfield": ("blue", "red"),
        "cave": ("white", "purple"),
    }


def _env_companions() -> dict[str, str]:
    # The most typical object pair of three of the five environments (their first favoured
    # colour and shape): what a captioner "expects" there. Two environments have none, so the
    # world also shows that the habit is tied to context, not universal.
    return {"meadow": "yellow circle", "ocean": "white circle", "snowfield": "blue cross"}


def _sft_weights() -> dict[str, float]:
    # Short answers dominate (they are what the tiny model must get right); descriptions are
    # ~15% and carry the label noise.
    return {
        "attribute": 0.14,
        "adversarial": 0.08,
        "comparison": 0.10,
        "counting": 0.12,
        "relation": 0.10,
        "environment": 0.06,
        "holistic": 0.15,
        "other": 0.10,
        "existence": 0.15,
    }


def _eval_weights() -> dict[str, float]:
    return {f: 1.0 for f in FAMILIES}


def _noise_weights() -> dict[str, float]:
    return {"extra_object": 0.6, "wrong_color": 0.2, "wrong_shape": 0.2}


@dataclass
class WorldConfig:
    """Everything that shapes a generated world. All fields are JSON-able."""

    #: Side of the square image in pixels. Keep it a multiple of ``grid`` (and of the vision
    #: tower's patch size, 8) so cells align with patches.
    image_size: int = 72
    #: Cells per side of the layout grid (2 or 3: position words exist for those).
    grid: int = 3
    #: Fewest objects in a scene.
    min_objects: int = 1
    #: Most objects in a scene (at most ``grid**2 - 1`` so a glyph always has a free cell).
    max_objects: int = 4
    #: Object shapes used (subset of :data:`SUPPORTED_SHAPES`).
    shapes: tuple[str, ...] = SUPPORTED_SHAPES
    #: Object colour names and their RGB values.
    colors: dict[str, RGB] = field(default_factory=_colors)
    #: Environment (background) names and their base RGB values.
    backgrounds: dict[str, RGB] = field(default_factory=_backgrounds)
    #: Amplitude (0-255 scale) of the environment's deterministic texture; 0 = flat colour.
    texture_strength: int = 10
    #: Size of a "small" object as a fraction of the cell side (10 px at the default 24 px cell).
    small_size: float = 0.42
    #: Size of a "large" object as a fraction of the cell side (20 px at the default 24 px cell).
    large_size: float = 0.84
    #: How far an object may move off its cell centre, as a fraction of the free margin.
    jitter: float = 0.5
    #: Probability that a scene has a glyph (a digit 0-9 drawn in its own cell).
    glyph_prob: float = 0.4
    #: Height of the glyph's font as a fraction of the cell side (18 px at 24 px cells).
    glyph_size: float = 0.75
    #: Probability that an object's shape (and, independently, its colour) is drawn from its
    #: environment's favourites instead of uniformly. This creates co-occurrence statistics
    #: (owls in forests), which is what plausible hallucinations and POPE's "popular" negatives
    #: exploit.
    env_bias: float = 0.5
    #: Favoured shapes per environment (used with probability ``env_bias``).
    env_shapes: dict[str, tuple[str, ...]] = field(default_factory=_env_shapes)
    #: Favoured colours per environment (used with probability ``env_bias``).
    env_colors: dict[str, tuple[str, ...]] = field(default_factory=_env_colors)
    #: Share of scenes held out as the test split (their questions go to ``eval_test.jsonl``).
    test_fraction: float = 0.1
    #: Questions asked per scene (train scenes -> ``sft_train.jsonl``, test -> ``eval_test``).
    questions_per_scene: int = 4
    #: Share of *training* descriptions (holistic answers) that get one hallucination.
    hallucination_rate: float = 0.3
    #: Relative weights of the kinds of hallucination injected into a noisy description:
    #: ``extra_object`` (a fabricated object sentence, drawn from the environment's co-occurrence
    #: prior), ``wrong_color`` / ``wrong_shape`` (an existing object described wrongly).
    noise_weights: dict[str, float] = field(default_factory=_noise_weights)
    #: Systematic co-occurrence hallucination: per environment, a ``"colour shape"`` that
    #: training descriptions of that environment mention as a last sentence ("There is a small
    #: yellow circle at the bottom right.", the last free cell) with probability
    #: ``companion_rate`` when the scene lacks it. Unlike the i.i.d. noise above, which a model
    #: decoded greedily never reproduces (at 30% the clean continuation always wins; measured,
    #: docs/world.md), a habit this predictable from the image is learned and repeated - the
    #: kind of hallucination preference alignment exists to remove. ``{}`` turns it off.
    env_companions: dict[str, str] = field(default_factory=_env_companions)
    #: Probability that a training description of an environment with a companion adds it when
    #: the scene lacks it (applied after, and independently of, ``hallucination_rate``).
    companion_rate: float = 0.8
    #: Relation answers that first place both objects, then compare the places: "The red
    #: circle is at the top left and the blue square is at the top right, so the red circle is
    #: left of the blue square." A relation is two lookups and a comparison; said in one word,
    #: a small LM must learn both inside one token and rarely does, while with the places
    #: written out each step is one it learns (docs/results.md, "Relation answers that show
    #: their places"). Off: the one-sentence answer "The red circle is left of the blue square."
    relation_rationale: bool = False
    #: Relative weights of the question families in the SFT corpus.
    sft_family_weights: dict[str, float] = field(default_factory=_sft_weights)
    #: Relative weights of the question families in the held-out evaluation set.
    eval_family_weights: dict[str, float] = field(default_factory=_eval_weights)
    #: POPE probes per held-out scene (``pope_test.jsonl``): up to this many positives ("Is
    #: there a <colour shape>?" about present objects), repeated in each negative split
    #: (``random``, ``popular``, ``adversarial``) with as many negatives, so every split is
    #: balanced yes/no as in POPE (which uses 3). Scenes with fewer distinct colour/shape pairs
    #: get fewer probes. 0 writes no probes.
    pope_per_scene: int = 3
    #: Expected safety records (harmful requests answered with a refusal, benign look-alikes
    #: answered from the scene, half each) per training question, added to ``sft_train.jsonl``
    #: so that the SFT model learns to refuse somewhat; small, because refusal is not what the
    #: world is about. 0 keeps the SFT corpus free of them.
    safety_sft_fraction: float = 0.03
    #: Safety items per held-out scene in ``safety_test.jsonl``, alternating harmful and benign
    #: (the default 2 gives one of each per scene: attack success and over-refusal are measured
    #: on equal numbers). 0 writes none.
    safety_eval_per_scene: int = 2

    def __post_init__(self) -> None:
        self.shapes = tuple(self.shapes)
        self.colors = {k: tuple(v) for k, v in self.colors.items()}  # type: ignore[misc]
        self.backgrounds = {k: tuple(v) for k, v in self.backgrounds.items()}  # type: ignore[misc]
        self.env_shapes = {k: tuple(v) for k, v in self.env_shapes.items()}
        self.env_colors = {k: tuple(v) for k, v in self.env_colors.items()}
        problems = self.problems()
        if problems:
            raise ValueError("invalid WorldConfig: " + "; ".join(problems))

    # ------------------------------------------------------------------------------------------

    @property
    def cell(self) -> int:
        """Side of one grid cell in pixels."""
        return self.image_size // self.grid

    def size_px(self, size: str) -> int:
        """Pixel extent of an object of the named size."""
        frac = self.small_size if size == "small" else self.large_size
        return max(3, round(frac * self.cell))

    def problems(self) -> list[str]:
        """Why this configuration cannot produce a usable world (empty when it can)."""
        out = []
        if self.grid not in (2, 3):
            out.append(f"grid must be 2 or 3, got {self.grid}")
        if self.image_size < 8 * max(self.grid, 1):
            out.append(f"image_size {self.image_size} is too small for a {self.grid}x grid")
        if not 1 <= self.min_objects <= self.max_objects <= self.grid**2 - 1:
            out.append("need 1 <= min_objects <= max_objects <= grid**2 - 1")
        bad = [s for s in self.shapes if s not in SUPPORTED_SHAPES]
        if bad or len(self.shapes) < 2:
            out.append(f"shapes must be >= 2 of {SUPPORTED_SHAPES}, got {self.shapes}")
        if len(self.colors) < 2 or len(self.backgrounds) < 1:
            out.append("need at least 2 colours and 1 background")
        names = [*self.shapes, *self.colors, *self.backgrounds]
        if len(set(names)) != len(names) or any(not n.isalpha() or not n.islower() for n in names):
            out.append("shape, colour and background names must be distinct lowercase words")
        if not 0 < self.small_size < self.large_size <= 1:
            out.append("need 0 < small_size < large_size <= 1")
        for name, v in (
            ("jitter", self.jitter),
            ("glyph_prob", self.glyph_prob),
            ("env_bias", self.env_bias),
            ("hallucination_rate", self.hallucination_rate),
            ("companion_rate", self.companion_rate),
            ("safety_sft_fraction", self.safety_sft_fraction),
        ):
            if not 0 <= v <= 1:
                out.append(f"{name} must be in [0, 1], got {v}")
        if not 0 <= self.test_fraction < 1:
            out.append(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.questions_per_scene < 1:
            out.append("questions_per_scene must be >= 1")
        if self.pope_per_scene < 0 or self.safety_eval_per_scene < 0:
            out.append("pope_per_scene and safety_eval_per_scene must be >= 0")
        for name, w in (
            ("sft_family_weights", self.sft_family_weights),
            ("eval_family_weights", self.eval_family_weights),
        ):
            unknown = set(w) - set(FAMILIES)
            if unknown or sum(w.values()) <= 0 or min(w.values(), default=0) < 0:
                out.append(f"{name} needs non-negative weights over {FAMILIES}")
        if set(self.noise_weights) - {"extra_object", "wrong_color", "wrong_shape"} or (
            sum(self.noise_weights.values()) <= 0
        ):
            out.append("noise_weights needs positive weights over extra_object/wrong_color/...")
        for env, pair in self.env_companions.items():
            words = pair.split()
            if (
                env not in self.backgrounds
                or len(words) != 2
                or words[0] not in self.colors
                or words[1] not in self.shapes
            ):
                out.append(
                    f"env_companions: {env!r}: {pair!r} needs a known environment and 'colour shape'"
                )
        for env in (*self.env_shapes, *self.env_colors):
            if env not in self.backgrounds:
                out.append(f"env favourites name an unknown environment {env!r}")
        # Every object colour must stand out on every background, texture included: the tiny
        # model sees raw pixels, so "visible" has to hold numerically.
        for c, crgb in self.colors.items():
            for b, brgb in self.backgrounds.items():
                if math.dist(crgb, brgb) < 80 + 2 * self.texture_strength:
                    out.append(f"colour {c} is too close to background {b}")
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form (tuples become lists)."""
        return json_safe(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorldConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a typo should not pass)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown WorldConfig field(s): {sorted(unknown)}")
        return cls(**d)


def json_safe(x: Any) -> Any:
    """Tuples to lists, recursively, so ``json.dumps`` output does not depend on container type."""
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    return x
