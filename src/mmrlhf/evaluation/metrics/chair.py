"""CHAIR (Caption Hallucination Assessment with Image Relevance) for free-text descriptions.

Object mentions are found through a synonym vocabulary (e.g. the COCO CHAIR list, 80 classes)
and checked against each image's ground-truth classes:

- CHAIR_i = hallucinated mentions / all mentions
- CHAIR_s = responses with at least one hallucinated mention / all responses

Every mention counts, repeats included (as in the reference implementation). This module is
generic (any vocabulary); the shapes world has its own exact CHAIR in ``mmrlhf.world.truth``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

# Words (letters/digits) and single punctuation marks; hyphens are dropped, so "semi-trailer",
# "semi - trailer" and "semi trailer" all read as the words ["semi", "trailer"]. Punctuation
# tokens stay in the sequence so that a phrase never matches across them.
_TOKEN = re.compile(r"[^\W_]+|[^\w\s-]")


def _words(text: str) -> list[str]:
    return [m.group(0) for m in _TOKEN.finditer(text.lower()) if m.group(0)[0].isalnum()]


def _singulars(word: str) -> list[str]:
    """Candidate singulars of ``word`` in the order tried: itself, then ``-ies -> -y``,
    ``-es -> ''``, ``-s -> ''``."""
    out = [word]
    if word.endswith("ies") and len(word) > 3:
        out.append(word[:-3] + "y")
    if word.endswith("es") and len(word) > 2:
        out.append(word[:-2])
    if word.endswith("s") and len(word) > 1:
        out.append(word[:-1])
    return out


def load_synonyms(path: str | Path) -> dict[str, str]:
    """``{synonym phrase: class}`` from a ``{class: [synonym, ...]}`` JSON file.

    Phrases are lower-cased with words joined by single spaces (hyphens dropped, see
    ``_TOKEN``). Every class name maps to itself. A synonym listed under several classes (the
    COCO file has a few, e.g. "calf" under cow and elephant) keeps the first class in file
    order, unless it is itself a class name.
    """
    path = Path(path)
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg}, line {e.lineno})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object {{class: [synonym, ...]}}")
    return build_synonyms(data, source=str(path))


def build_synonyms(
    classes: Mapping[str, Iterable[str]], source: str = "synonyms"
) -> dict[str, str]:
    """The phrase -> class map of :func:`load_synonyms` from an in-memory ``{class: [syn]}``."""
    out: dict[str, str] = {}
    for cls in classes:
        if not isinstance(cls, str) or not _words(cls):
            raise ValueError(f"{source}: class name {cls!r}: expected a non-empty word")
        out[" ".join(_words(cls))] = cls
    for cls, syns in classes.items():
        if isinstance(syns, str) or not isinstance(syns, Iterable):
            raise ValueError(f"{source}: {cls}: expected a list of synonyms, got {syns!r}")
        for s in syns:
            if not isinstance(s, str) or not _words(s):
                raise ValueError(f"{source}: {cls}: synonym {s!r} is not a non-empty string")
            out.setdefault(" ".join(_words(s)), cls)
    return out


def extract_objects(text: str, synonyms: Mapping[str, str]) -> list[tuple[str, str]]:
    """Object mentions in ``text`` as ``(mention as written, class)``, in reading order.

    Matching is case-insensitive and on whole words. At each position the longest phrase of
    the vocabulary wins ("tennis player" before "player"), and matched words are consumed.
    Plurals: the last word of a phrase may carry ``-s``, ``-es`` or ``-ies`` (for ``-y``), so
    "dogs", "buses", "ladies" and "tennis players" match. Irregular plurals match only when
    the vocabulary lists them (COCO lists "people", "children").
    """
    return _extract(text, _index(synonyms))


def _index(synonyms: Mapping[str, str]) -> tuple[dict[tuple[str, ...], str], int]:
    keys = {tuple(_words(k)): v for k, v in synonyms.items() if _words(k)}
    return keys, max((len(k) for k in keys), default=0)


def _extract(
    text: str, index: tuple[dict[tuple[str, ...], str], int], what: str = "text"
) -> list[tuple[str, str]]:
    if not isinstance(text, str):
        raise ValueError(f"{what}: expected a string, got {type(text).__name__}")
    keys, longest = index
    tokens = [(m.group(0), m.start(), m.end()) for m in _TOKEN.finditer(text.lower())]
    out: list[tuple[str, str]] = []
    i = 0
    while i < len(tokens):
        found = None
        for n in range(min(longest, len(tokens) - i), 0, -1):
            words = [t[0] for t in tokens[i : i + n]]
            if not all(w[0].isalnum() for w in words):
                continue
            for last in _singulars(words[-1]):
                cls = keys.get((*words[:-1], last))
                if cls is not None:
                    found = (n, cls)
                    break
            if found:
                break
        if found:
            n, cls = found
            out.append((text[tokens[i][1] : tokens[i + n - 1][2]], cls))
            i += n
        else:
            i += 1
    return out


def chair_metrics(
    texts: Sequence[str],
    gt_objects: Sequence[Iterable[str]],
    synonyms: Mapping[str, str],
) -> dict[str, float | int]:
    """CHAIR over responses ``texts`` with their images' ground-truth classes ``gt_objects``.

    A mention is hallucinated when its class is not in that response's ground-truth set.
    Keys: ``chair_i`` = hallucinated / mentions, ``chair_s`` = responses with >= 1
    hallucinated mention / responses (0.0 when the denominator is 0), and the counts
    ``mentions``, ``hallucinated``, ``responses``, ``responses_hallucinated``.
    Ground-truth classes unknown to the vocabulary raise ``ValueError`` (usually a typo).
    """
    if len(texts) != len(gt_objects):
        raise ValueError(f"texts/gt_objects: lengths differ ({len(texts)} vs {len(gt_objects)})")
    classes = set(synonyms.values())
    index = _index(synonyms)
    mentions = hallucinated = bad_responses = 0
    for i, (text, gt) in enumerate(zip(texts, gt_objects, strict=True)):
        if isinstance(gt, str):
            raise ValueError(f"gt_objects[{i}]: expected a set of classes, got a string")
        truth = set(gt)
        unknown = truth - classes
        if unknown:
            raise ValueError(f"gt_objects[{i}]: unknown classes {sorted(unknown)}")
        found = _extract(text, index, f"texts[{i}]")
        bad = sum(cls not in truth for _, cls in found)
        mentions += len(found)
        hallucinated += bad
        bad_responses += bad > 0
    n = len(texts)
    return {
        "chair_i": hallucinated / mentions if mentions else 0.0,
        "chair_s": bad_responses / n if n else 0.0,
        "mentions": mentions,
        "hallucinated": hallucinated,
        "responses": n,
        "responses_hallucinated": bad_responses,
    }
