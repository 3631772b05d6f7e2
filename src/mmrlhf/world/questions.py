"""Questions about a scene, with ground-truth long and short answers, in nine families.

The families mirror MMHal-Bench's eight question types (attribute, adversarial, comparison,
counting, relation, environment, holistic, other) plus POPE-style ``existence`` probes. Each
family has a few fixed phrasings; all of them are listed in :data:`TEMPLATES` so that
:func:`mmrlhf.world.vocabulary` can enumerate every word the world can produce.

A question is a :class:`QA`: the question, a one-sentence answer, a short answer (what
:func:`mmrlhf.world.truth.check_short_answer` compares against) and ``asks``, the kind of value
the short answer is (``color``, ``count``, ``yes_no`` ...), so that checking never has to guess.
Objects are only ever referred to by descriptions that single them out in the scene.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mmrlhf.world.config import FAMILIES, SIZES, WorldConfig
from mmrlhf.world.scene import (
    Scene,
    SceneObject,
    article,
    plural,
    position_name,
    position_phrase,
)

#: Every phrasing used, by family (placeholders in braces). Kept in one place so that the
#: vocabulary is derived from the same strings the generator uses.
TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "attribute": {
        "color_q": ("What color is the {d}?", "Which color does the {d} have?"),
        "size_q": ("What size is the {d}?", "Is the {d} small or large?"),
        "shape_q": ("What shape is the {d}?", "Which shape is the {d}?"),
        "color_a": ("The {d} is {v}.",),
        "shape_a": ("The {d} is a {v}.",),
    },
    "adversarial": {
        "absent_shape_q": ("What color is the {d}?", "What size is the {d}?"),
        "absent_kind_q": ("What size is the {d}?", "Where is the {d}?"),
        "absent_color_q": ("What shape is the {d}?",),
        "absent_digit_q": ("What digit is written in the image?",),
        "a": ("There is no {d} in the image.",),
    },
    "comparison": {
        "larger_q": ("Which is larger, the {a} or the {b}?",),
        "smaller_q": ("Which is smaller, the {a} or the {b}?",),
        "which_a": ("The {x} is {cmp}.",),
        "same_color_q": ("Are the {a} and the {b} the same color?",),
        "same_size_q": ("Are the {a} and the {b} the same size?",),
        "same_yes_a": ("Yes, both are {v}.",),
        "same_no_a": ("No, the {a} is {va} and the {b} is {vb}.",),
    },
    "counting": {
        "all_q": ("How many objects are there?", "How many objects are in the image?"),
        "kind_q": ("How many {p} are there?", "How many {p} are in the image?"),
        "zero_a": ("There are no {p}.",),
        "one_a": ("There is 1 {s}.",),
        "many_a": ("There are {n} {p}.",),
    },
    "relation": {
        "q": ("Where is the {a} relative to the {b}?", "Where is the {a} compared to the {b}?"),
        "a": ("The {a} is {rel} the {b}.",),
        # WorldConfig.relation_rationale: both places first, then the comparison.
        "a_rationale": ("The {a} is {pa} and the {b} is {pb}, so the {a} is {rel} the {b}.",),
    },
    "environment": {
        "q": ("Where does this scene take place?", "What kind of place is shown in the image?"),
        "a": ("The scene takes place in {art} {v}.",),
    },
    "holistic": {
        "q": ("Describe the image in detail.", "What do you see in this image?"),
    },
    "other": {
        "digit_q": ("What digit is written in the image?", "What number is shown in the image?"),
        "digit_a": ("The digit {v} is written in the image.",),
        "digit_where_q": ("Where is the digit written?",),
        "digit_where_a": ("The digit is written {where}.",),
        "where_q": ("Where is the {d}?",),
        "where_a": ("The {d} is {where}.",),
    },
    "existence": {
        "q": ("Is there {art} {d} in the image?",),
        "yes_a": ("Yes, there is {art} {d}.",),
        "no_a": ("No, there is no {d}.",),
    },
}

#: Relation words: short answer -> phrase used in the long answer.
RELATIONS = {"left": "left of", "right": "right of", "above": "above", "below": "below"}

#: Extra words the templates build from (comparatives, yes/no answers, generic noun).
EXTRA_WORDS = ("larger", "smaller", "yes", "no", "none", "object", "objects")


@dataclass
class QA:
    """One question about one scene with its ground truth.

    ``short`` is ``None`` only for descriptions (holistic). ``asks`` names what ``short`` is:
    ``color``, ``size``, ``shape``, ``count``, ``relation``, ``environment``, ``digit``,
    ``position``, ``yes_no``, ``which`` (one of ``extra["options"]``), ``none`` (the asked-about
    thing is absent) or ``description``.
    """

    family: str
    question: str
    answer: str
    short: str | None
    asks: str
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# referring to objects

_ATTRS = ("size", "color", "shape")


def phrase(size: str | None = None, color: str | None = None, shape: str | None = None) -> str:
    """``"large red circle"``, ``"red object"``: attributes in fixed order, noun last."""
    return " ".join(x for x in (size, color, shape or "object") if x)


def describe(obj: SceneObject, scene: Scene, forms: tuple[tuple[str, ...], ...]) -> str | None:
    """The first description form (tuple of attribute names) that singles ``obj`` out.

    ``None`` when none of the allowed forms is unique in the scene, so the caller never asks
    about an ambiguous referent.
    """
    for form in forms:
        attrs = {a: getattr(obj, a) for a in form}
        if len(scene.find(**attrs)) == 1:
            return phrase(**attrs)
    return None


# description forms by what the question must not give away
_ANY = (("shape",), ("color", "shape"), ("size", "color", "shape"))
_NO_COLOR = (("shape",), ("size", "shape"))
_NO_SIZE = (("shape",), ("color", "shape"))
_NO_SHAPE = (("color",), ("size", "color"))


def _t(rng: random.Random, family: str, key: str) -> str:
    return rng.choice(TEMPLATES[family][key])


def _absent_kinds(scene: Scene, cfg: WorldConfig) -> list[tuple[str, str]]:
    return [(s, c) for s in cfg.shapes for c in cfg.colors if not scene.has(shape=s, color=c)]


# ----------------------------------------------------------------------------------------------
# the families: each returns one QA drawn with ``rng``, or None when the scene allows none


def ask_attribute(scene: Scene, cfg: WorldConfig, rng: random.Random) -> QA | None:
    options = []
    for obj in scene.objects:
        for attr, forms in (("color", _NO_COLOR), ("size", _NO_SIZE), ("shape", _NO_SHAPE)):
            if (d := describe(obj, scene, forms)) is not None:
                options.append((attr, obj, d))
    if not options:
        return None
    attr, obj, d = rng.choice(options)
    v = getattr(obj, attr)
    q = _t(rng, "attribute", f"{attr}_q").format(d=d)
    a = _t(rng, "attribute", "shape_a" if attr == "shape" else "color_a").format(d=d, v=v)
    return QA("attribute", q, a, v, attr, {"target": obj.label()})


def ask_adversarial(scene: Scene, cfg: WorldConfig, rng: random.Random) -> QA | None:
    kinds: dict[str, list[str]] = {
        "absent_shape_q": [s for s in cfg.shapes if not scene.has(shape=s)],
        # near misses first: a shape that is there, in a colour it does not have here
        "absent_kind_q": [
            phrase(color=c, shape=s)
            for s, c in _absent_kinds(scene, cfg)
            if scene.has(shape=s) or scene.has(color=c)
        ],
        "absent_color_q": [phrase(color=c) for c in cfg.colors if not scene.has(color=c)],
        "absent_digit_q": ["digit"] if scene.glyph is None else [],
    }
    kinds = {k: v for k, v in kinds.items() if v}
    if not kinds:
        return None
    key = rng.choice(sorted(kinds))
    d = rng.choice(kinds[key])
    q = _t(rng, "adversarial", key).format(d=d)
    a = _t(rng, "adversarial", "a").format(d=d)
    return QA("adversarial", q, a, "none", "none", {"absent": d})


def ask_comparison(scene: Scene, cfg: WorldConfig, rng: random.Random) -> QA | None:
    options: list[tuple[str, SceneObject, SceneObject]] = []
    for a, b in itertools.permutations(scene.objects, 2):
        if a.size != b.size:
            options += [("larger_q", a, b), ("smaller_q", a, b)]
        options += [("same_color_q", a, b), ("same_size_q", a, b)]
    rng.shuffle(options)
    for key, a, b in options:
        forms = _NO_COLOR if key == "same_color_q" else _NO_SIZE
        da, db = describe(a, scene, forms), describe(b, scene, forms)
        if da is None or db is None:
            continue
        q = _t(rng, "comparison", key).format(a=da, b=db)
        if key in ("larger_q", "smaller_q"):
            want = "large" if key == "larger_q" else "small"
            x = da if a.size == want else db
            cmp = "larger" if key == "larger_q" else "smaller"
            ans = _t(rng, "comparison", "which_a").format(x=x, cmp=cmp)
            return QA("comparison", q, ans, x, "which", {"options": [da, db]})
        attr = "color" if key == "same_color_q" else "size"
        va, vb = getattr(a, attr), getattr(b, attr)
        if va == vb:
            ans = _t(rng, "comparison", "same_yes_a").format(v=va)
            return QA("comparison", q, ans, "yes", "yes_no", {"attribute": attr})
        ans = _t(rng, "comparison", "same_no_a").format(a=da, b=db, va=va, vb=vb)
        return QA("comparison", q, ans, "no", "yes_no", {"attribute": attr})
    return None


def _count_answer(rng: random.Random, n: int, singular: str, plural_: str) -> str:
    if n == 0:
        return _t(rng, "counting", "zero_a").format(p=plural_)
    if n == 1:
        return _t(rng, "counting", "one_a").format(s=singular)
    return _t(rng, "counting", "many_a").format(n=n, p=plural_)


def ask_counting(scene: Scene, cfg: WorldConfig, rng: random.Random) -> QA | None:
    kind = rng.choice(("all", "shape", "color"))
    if kind == "all":
        n = len(scene.objects)
        q = _t(rng, "counting", "all_q")
        return QA("counting", q, _count_answer(rng, n, "object", "objects"), str(n), "count")
    values = list(cfg.shapes) if kind == "shape" else list(cfg.colors)
    present = sorted({getattr(o, kind) for o in scene.objects}, key=values.index)
    absent = [v for v in values if v not in present]
    # mostly ask about what is there; sometimes about what is not (answer: 0)
    v = rng.choice(absent) if absent and rng.random() < 0.2 else rng.choice(present)
    n = len(scene.find(**{kind: v}))
    s = v if kind == "shape" else phrase(color=v)
    p = plural(v) if kind == "shape" else f"{v} objects"
    q = _t(rng, "counting", "kind_q").format(p=p)
    return QA("counting", q, _count_answer(rng, n, s, p), str(n), "count", {kind: v})


def ask_relation(scene: Scene, cfg: WorldConfig, rng: random.Random) -> QA | None:
    options = []
    for a, b in itertools.permutations(scene.objects, 2):
        if a.row == b.row:
            rel = "left" if a.col < b.col else "right"
        elif a.col == b.col:
            rel = "above" if a.row < b.row else "below"
        else:
            continue  # diagonal pairs have no single relation word
        da, db = describe(a, scene, _ANY), describe(b, scene, _ANY)
        if da is not None and db is not None:
            options.append((da, db, rel, a, b))
    if not options:
        return None
    da, db, rel, oa, ob = rng.choice(options)
    q = _t(rng, "relation", "q").format(a=da, b=db)
    if cfg.relation_rationale:
        pa, pb = (position_phrase(o.row, o.col, cfg.grid) for o in (oa, ob))
        a = _t(rng, "relation", "a_rationale").format(a=da, b=db, rel=RELATIONS[rel], pa=pa, pb=pb)
    else:
        a = _t(rng, "relation", "a").format(a=da, b=db, rel=RELATIONS[rel])
    return QA("relation", q, a, rel, "relation")


def ask_environment(scene: Scene, cfg: WorldConfig, rng: random.Random) -> QA | None:
    v = scene.background
    a = _t(rng, "environment", "a").format(art=article(v), v=v)
    return QA("environment", _t(rng, "environment", "q"), a, v, "environment")


def ask_holistic(scene: Scene, cfg: WorldConfig, rng: random.Random) -> QA | None:
    return QA("holistic", _t(rng, "holistic", "q"), scene.caption(), None, "description")


def ask_other(scene: Scene, cfg: WorldConfig, rng: random.Random) -> QA | None:
    g = scene.glyph
    r = rng.random()
    if g is not None and r < 0.5:
        q = _t(rng, "other", "digit_q")
        a = _t(rng, "other", "digit_a").format(v=g.digit)
        return QA("other", q, a, str(g.digit), "digit")
    if g is not None and r < 0.7:
        where = position_phrase(g.row, g.col, scene.grid)
        a = _t(rng, "other", "digit_where_a").format(where=where)
        q = _t(rng, "other", "digit_where_q")
        return QA("other", q, a, position_name(g.row, g.col, scene.grid), "position")
    options = [(o, d) for o in scene.objects if (d := describe(o, scene, _ANY)) is not None]
    if not options:
        return None
    o, d = rng.choice(options)
    a = _t(rng, "other", "where_a").format(d=d, where=position_phrase(o.row, o.col, scene.grid))
    q = _t(rng, "other", "where_q").format(d=d)
    return QA("other", q, a, position_name(o.row, o.col, scene.grid), "position")


def ask_existence(scene: Scene, cfg: WorldConfig, rng: random.Random) -> QA | None:
    """POPE-style probe, yes and no equally likely.

    Negatives are ``random`` (any absent shape/colour pair), ``popular`` (absent but favoured
    by this environment, i.e. frequent co-occurrence) or ``near_miss`` (a present shape in a
    wrong colour, or a present colour on a wrong shape), as POPE's random / popular /
    adversarial settings.
    """
    if rng.random() < 0.5:
        o = rng.choice(scene.objects)
        d = o.shape if rng.random() < 0.25 else phrase(color=o.color, shape=o.shape)
        q = _t(rng, "existence", "q").format(art=article(d), d=d)
        a = _t(rng, "existence", "yes_a").format(art=article(d), d=d)
        return QA("existence", q, a, "yes", "yes_no", {"pope": "positive"})
    absent = _absent_kinds(scene, cfg)
    if not absent:
        return None
    favs = (
        set(cfg.env_shapes.get(scene.background, ())),
        set(cfg.env_colors.get(scene.background, ())),
    )
    pools = {
        "random": absent,
        "popular": [(s, c) for s, c in absent if s in favs[0] and c in favs[1]],
        "near_miss": [(s, c) for s, c in absent if scene.has(shape=s) or scene.has(color=c)],
    }
    kind = rng.choice([k for k in ("random", "popular", "near_miss") if pools[k]])
    s, c = rng.choice(pools[kind])
    d = phrase(color=c, shape=s)
    q = _t(rng, "existence", "q").format(art=article(d), d=d)
    a = _t(rng, "existence", "no_a").format(d=d)
    return QA("existence", q, a, "no", "yes_no", {"pope": kind})


ASKERS: dict[str, Callable[[Scene, WorldConfig, random.Random], QA | None]] = {
    "attribute": ask_attribute,
    "adversarial": ask_adversarial,
    "comparison": ask_comparison,
    "counting": ask_counting,
    "relation": ask_relation,
    "environment": ask_environment,
    "holistic": ask_holistic,
    "other": ask_other,
    "existence": ask_existence,
}
assert set(ASKERS) == set(FAMILIES)


def ask(
    scene: Scene,
    cfg: WorldConfig,
    rng: random.Random,
    n: int,
    weights: dict[str, float],
) -> list[QA]:
    """Up to ``n`` distinct questions about ``scene``, families drawn by ``weights``.

    A family that has nothing to ask about in this scene (no relation without two aligned
    objects, ...) drops out for this scene and the others share its weight. Fewer than ``n``
    come back only when the scene runs out of distinct questions.
    """
    weights = {f: w for f, w in weights.items() if w > 0}
    out: list[QA] = []
    seen: set[str] = set()
    tries = 0
    while len(out) < n and weights and tries < 20 * n:
        tries += 1
        fams = list(weights)
        fam = rng.choices(fams, weights=[weights[f] for f in fams])[0]
        qa = ASKERS[fam](scene, cfg, rng)
        if qa is None:
            del weights[fam]
            continue
        # dedupe on the answer: two phrasings of one question teach nothing new
        key = f"{qa.family}|{qa.answer}"
        if key in seen:
            continue
        seen.add(key)
        out.append(qa)
    return out


def template_words(relation_rationale: bool = False) -> list[str]:
    """All template strings with their placeholders removed (input to the vocabulary); the
    rationale templates only for a world that uses them, so other worlds' vocabularies (and
    the tokenizers trained on them) stay as they were."""
    return [
        re.sub(r"\{[a-z]+\}", " ", t)
        for fam in TEMPLATES.values()
        for key, ts in fam.items()
        if relation_rationale or not key.endswith("_rationale")
        for t in ts
    ] + [*RELATIONS.values(), *EXTRA_WORDS, *SIZES]
