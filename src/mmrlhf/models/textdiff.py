"""Claim-level difference between a response and a reference answer, as a short text.

The reference-guided critique RM (``rm.reference``) reads the model's own answer and then the
response; judging the response means comparing the two. A tiny LM does not learn that
comparison across thirty tokens of context: in the world it writes "the response answers blue,
the reference answers white, so it is right" (docs/reward.md, twenty-third session). With
``rm.reference_diff`` the prompt states the difference next to the response instead, so the
critic has to judge whether a difference matters (a wrong colour does, a filler sentence does
not), not find it.

Sentences are the claims (RLAIF-V's divide-and-conquer splits a response the same way): a
sentence found in both texts is no difference, whatever the order of the sentences; a response
sentence that is close to a left-over reference sentence is shown word by word; the others are
added or left out whole. Words are compared and shown lower-cased, without punctuation.
"""

from __future__ import annotations

import re
from difflib import SequenceMatcher

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_PUNCT = re.compile(r"^[^\w]+|[^\w]+$")

NO_DIFFERENCE = "none"


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(text.strip()) if s]


def _words(sentence: str) -> list[str]:
    return [w for w in (_PUNCT.sub("", w).lower() for w in sentence.split()) if w]


def _chunk(words: list[str], limit: int) -> str:
    return " ".join(words if len(words) <= limit else [*words[:limit], "..."])


def _pair_diff(resp: list[str], ref: list[str], limit: int) -> list[str]:
    """Word-level changes from ``ref`` to ``resp`` (two close sentences)."""
    out = []
    for op, i1, i2, j1, j2 in SequenceMatcher(a=ref, b=resp, autojunk=False).get_opcodes():
        if op == "replace":
            out.append(f'"{_chunk(resp[j1:j2], limit)}" instead of "{_chunk(ref[i1:i2], limit)}"')
        elif op == "insert":
            out.append(f'adds "{_chunk(resp[j1:j2], limit)}"')
        elif op == "delete":
            out.append(f'leaves out "{_chunk(ref[i1:i2], limit)}"')
    return out


def reference_diff(
    reference: str,
    response: str,
    *,
    pair_threshold: float = 0.5,
    max_items: int = 6,
    max_words: int = 12,
) -> str:
    """How ``response`` differs from ``reference``, e.g. ``'"white" instead of "green"; adds
    "there is a small red cross"'``, or ``"none"``.

    Steps: (1) split both into sentences and drop the ones they share (multiset, any order);
    (2) pair each left-over response sentence with the most similar left-over reference
    sentence whose word-level SequenceMatcher ratio is at least ``pair_threshold``, best pairs
    first, and show a pair as its word changes; (3) the unpaired response sentences are added,
    the unpaired reference sentences left out. At most ``max_items`` changes (then "..."),
    each chunk at most ``max_words`` words, so a long response costs a bounded prompt.

    Example: reference "The cross is red. There are 2 objects.", response "There are 2
    objects. The cross is blue. I hope this helps." -> ``'"blue" instead of "red"; adds "i hope
    this helps"'``.
    """
    resp = [_words(s) for s in _sentences(response)]
    ref = [_words(s) for s in _sentences(reference)]
    resp = [s for s in resp if s]
    ref = [s for s in ref if s]
    # 1. shared sentences are no difference, wherever they stand
    left_ref = list(ref)
    left_resp = []
    for s in resp:
        if s in left_ref:
            left_ref.remove(s)
        else:
            left_resp.append(s)
    # 2. close sentences become word-level changes, the most similar pairs first
    scored = sorted(
        (
            (SequenceMatcher(a=f, b=r, autojunk=False).ratio(), i, j)
            for i, r in enumerate(left_resp)
            for j, f in enumerate(left_ref)
        ),
        key=lambda t: (-t[0], t[1], t[2]),
    )
    pair_of: dict[int, int] = {}
    used_ref: set[int] = set()
    for ratio, i, j in scored:
        if ratio < pair_threshold:
            break
        if i not in pair_of and j not in used_ref:
            pair_of[i] = j
            used_ref.add(j)
    # 3. in response order, then what the response leaves out in reference order
    items: list[str] = []
    for i, r in enumerate(left_resp):
        if i in pair_of:
            items += _pair_diff(r, left_ref[pair_of[i]], max_words)
        else:
            items.append(f'adds "{_chunk(r, max_words)}"')
    items += [
        f'leaves out "{_chunk(f, max_words)}"' for j, f in enumerate(left_ref) if j not in used_ref
    ]
    if not items:
        return NO_DIFFERENCE
    if len(items) > max_items:
        items = [*items[:max_items], "..."]
    return "; ".join(items)


__all__ = ["NO_DIFFERENCE", "reference_diff"]
