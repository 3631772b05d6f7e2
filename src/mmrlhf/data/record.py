"""The preference record: one query, its media and K responses, with every annotation we know of.

A :class:`Record` is what every part of mmrlhf reads and writes. The MM-RLHF annotation is the
richest case (METHODS.md section 2) and fits without loss:

- per response: text, source model, helpfulness / faithfulness / ethics scores (1-5) each with a
  reason, a critique (the teacher-expanded reason), cached reward and reference log-prob;
- per query: a ranking with ties (``1>2=3>4``) and its reason, or, for data that only ever had
  pairwise labels (pair files), an explicit list of :class:`Preference`;
- optional :class:`Facts` for factual augmentation and symbolic rewards.

SFT data is a record with a single response. Preference data needs K >= 2; that rule is checked by
the validator (``mmrlhf data validate``), not by the constructor, so that one type serves both.

Serialisation is plain JSON (``to_dict`` / ``from_dict``). ``from_dict`` raises
:class:`RecordError` naming the offending field with a dotted path (``responses[2].helpfulness``),
and the loaders add the file and line.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

ROLES = ("system", "user", "assistant")
SCORE_MIN, SCORE_MAX = 1, 5
SCORE_DIMENSIONS = ("helpfulness", "faithfulness", "ethics")


class RecordError(ValueError):
    """A problem with one record, reported as ``file:line: field: message``.

    ``source`` and ``line`` are filled in by the loaders; ``field`` is a dotted path into the
    record (``responses[1].text``) or ``-`` when the problem is the whole line.
    """

    def __init__(
        self, field: str, message: str, source: str | None = None, line: int | None = None
    ) -> None:
        self.field = field
        self.message = message
        self.source = source
        self.line = line
        super().__init__(str(self))

    def located(self, source: str, line: int | None) -> RecordError:
        """A copy of this error that names the file and line (1-based) it came from."""
        return RecordError(self.field, self.message, source=source, line=line)

    def __str__(self) -> str:
        where = ""
        if self.source is not None:
            where = f"{self.source}:{self.line}: " if self.line is not None else f"{self.source}: "
        return f"{where}{self.field}: {self.message}"


# ----------------------------------------------------------------------------------------------
# small parsing helpers: every failure names its field


def _req(d: dict, key: str, path: str) -> Any:
    if key not in d or d[key] is None:
        raise RecordError(f"{path}{key}", "is required")
    return d[key]


def _str(v: Any, path: str, *, allow_none: bool = True) -> str | None:
    if v is None and allow_none:
        return None
    if not isinstance(v, str):
        raise RecordError(path, f"must be a string, got {type(v).__name__}")
    return v


def _num(v: Any, path: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise RecordError(path, f"must be a number, got {type(v).__name__}")
    return float(v)


def _dict(v: Any, path: str) -> dict:
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise RecordError(path, f"must be an object, got {type(v).__name__}")
    return v


def _list(v: Any, path: str) -> list:
    if v is None:
        return []
    if not isinstance(v, list):
        raise RecordError(path, f"must be a list, got {type(v).__name__}")
    return v


def _each(d: dict, key: str, parse: Any) -> list:
    """Parse every item of the list ``d[key]`` with ``parse(item, "key[i]")``."""
    return [parse(x, f"{key}[{i}]") for i, x in enumerate(_list(d.get(key), key))]


def _drop_empty(d: dict) -> dict:
    """Leave out None, empty lists and empty dicts so files stay small and readable."""
    return {k: v for k, v in d.items() if v is not None and v != [] and v != {}}


# ----------------------------------------------------------------------------------------------
# media


@dataclass
class ImageRef:
    """One image: a path (relative to the dataset's media root, or absolute) and/or its bytes.

    When both are present the bytes win (the path is kept as provenance).
    """

    path: str | None = None
    data: bytes | None = None

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        if self.path is not None:
            out["path"] = self.path
        if self.data is not None:
            out["bytes_b64"] = base64.b64encode(self.data).decode("ascii")
        return out

    @classmethod
    def from_dict(cls, d: Any, path: str) -> ImageRef:
        if isinstance(d, str):
            return cls(path=d)
        d = _dict(d, path)
        data = None
        if d.get("bytes_b64") is not None:
            try:
                data = base64.b64decode(_str(d["bytes_b64"], f"{path}.bytes_b64"), validate=True)
            except (ValueError, TypeError) as e:
                raise RecordError(f"{path}.bytes_b64", f"is not valid base64 ({e})") from None
        elif isinstance(d.get("bytes"), bytes | bytearray):
            data = bytes(d["bytes"])
        ref = cls(path=_str(d.get("path"), f"{path}.path"), data=data)
        if ref.path is None and ref.data is None:
            raise RecordError(path, "an image needs a path or bytes")
        return ref


@dataclass
class VideoRef:
    """A video file and how to sample frames from it.

    Frames are sampled uniformly over the clip: ``num_frames`` of them (MM-RLHF used 10 for
    training, 32 for RM evaluation), or, when ``fps`` is set, that many per second capped at
    ``max_frames``.
    """

    path: str
    num_frames: int = 10
    fps: float | None = None
    max_frames: int = 32

    def to_dict(self) -> dict:
        return {
            "path": self.path,
            "num_frames": self.num_frames,
            "fps": self.fps,
            "max_frames": self.max_frames,
        }

    @classmethod
    def from_dict(cls, d: Any, path: str) -> VideoRef:
        if isinstance(d, str):
            return cls(path=d)
        d = _dict(d, path)
        num_frames = d.get("num_frames", 10)
        if not isinstance(num_frames, int) or num_frames < 1:
            raise RecordError(
                f"{path}.num_frames", f"must be a positive integer, got {num_frames!r}"
            )
        max_frames = d.get("max_frames", 32)
        if not isinstance(max_frames, int) or max_frames < 1:
            raise RecordError(
                f"{path}.max_frames", f"must be a positive integer, got {max_frames!r}"
            )
        return cls(
            path=_str(_req(d, "path", f"{path}."), f"{path}.path"),
            num_frames=num_frames,
            fps=_num(d.get("fps"), f"{path}.fps"),
            max_frames=max_frames,
        )


# ----------------------------------------------------------------------------------------------
# conversation


@dataclass
class Turn:
    """One conversation turn. In a record's ``conversation`` the last turn is the user's query;
    earlier turns (multi-turn) are context. Images are not placed inside turns: a record's images
    belong to its first user turn, in order (the convention of every format we read)."""

    role: str
    text: str

    def to_dict(self) -> dict:
        return {"role": self.role, "text": self.text}

    @classmethod
    def from_dict(cls, d: Any, path: str) -> Turn:
        d = _dict(d, path)
        role = _str(_req(d, "role", f"{path}."), f"{path}.role")
        if role not in ROLES:
            raise RecordError(f"{path}.role", f"must be one of {', '.join(ROLES)}, got {role!r}")
        return cls(role=role, text=_str(_req(d, "text", f"{path}."), f"{path}.text") or "")


# ----------------------------------------------------------------------------------------------
# responses and their annotation


@dataclass
class Score:
    """A fine-grained score (1-5 in MM-RLHF) with the annotator's reason."""

    value: float
    reason: str | None = None

    def to_dict(self) -> dict:
        return _drop_empty({"value": self.value, "reason": self.reason})

    @classmethod
    def from_dict(cls, d: Any, path: str) -> Score | None:
        if d is None:
            return None
        if isinstance(d, int | float) and not isinstance(d, bool):
            return cls(value=float(d))
        d = _dict(d, path)
        value = _num(_req(d, "value", f"{path}."), f"{path}.value")
        assert value is not None
        return cls(value=value, reason=_str(d.get("reason"), f"{path}.reason"))


@dataclass
class Response:
    """One candidate answer to the record's query, with everything annotated or cached about it."""

    text: str
    source: str | None = None
    helpfulness: Score | None = None
    faithfulness: Score | None = None
    ethics: Score | None = None
    critique: str | None = None
    reward: float | None = None
    ref_logp: float | None = None
    meta: dict = field(default_factory=dict)

    def scores(self) -> dict[str, Score]:
        """The fine-grained scores that are present, by dimension name."""
        return {d: s for d in SCORE_DIMENSIONS if (s := getattr(self, d)) is not None}

    def to_dict(self) -> dict:
        return _drop_empty(
            {
                "text": self.text,
                "source": self.source,
                **{d: s.to_dict() for d, s in self.scores().items()},
                "critique": self.critique,
                "reward": self.reward,
                "ref_logp": self.ref_logp,
                "meta": self.meta,
            }
        )

    @classmethod
    def from_dict(cls, d: Any, path: str) -> Response:
        if isinstance(d, str):
            return cls(text=d)
        d = _dict(d, path)
        text = _str(d.get("text"), f"{path}.text")
        if text is None:
            raise RecordError(f"{path}.text", "is required")
        return cls(
            text=text,
            source=_str(d.get("source"), f"{path}.source"),
            helpfulness=Score.from_dict(d.get("helpfulness"), f"{path}.helpfulness"),
            faithfulness=Score.from_dict(d.get("faithfulness"), f"{path}.faithfulness"),
            ethics=Score.from_dict(d.get("ethics"), f"{path}.ethics"),
            critique=_str(d.get("critique"), f"{path}.critique"),
            reward=_num(d.get("reward"), f"{path}.reward"),
            ref_logp=_num(d.get("ref_logp"), f"{path}.ref_logp"),
            meta=_dict(d.get("meta"), f"{path}.meta"),
        )


_RANK_RE = re.compile(r"^\s*\d+(\s*[>=]\s*\d+)*\s*$")


@dataclass
class Ranking:
    """A ranking with ties, best first: ``groups[0]`` holds the indices (0-based) of the best
    responses, ties share a group. Written 1-based as MM-RLHF does: ``"1>2=3>4"``."""

    groups: list[list[int]]
    reason: str | None = None

    @classmethod
    def parse(cls, text: str, reason: str | None = None, path: str = "ranking") -> Ranking:
        """Parse ``"1>2=3>4"`` (1-based response numbers) into 0-based groups."""
        if not isinstance(text, str) or not _RANK_RE.match(text):
            raise RecordError(path, f"is not a ranking like '1>2=3>4': {text!r}")
        groups = [[int(x) - 1 for x in g.split("=")] for g in text.replace(" ", "").split(">")]
        if any(i < 0 for g in groups for i in g):
            raise RecordError(path, f"response numbers start at 1: {text!r}")
        return cls(groups=groups, reason=reason)

    def format(self) -> str:
        return ">".join("=".join(str(i + 1) for i in g) for g in self.groups)

    def rank_of(self) -> dict[int, int]:
        """Response index -> rank (0 = best; tied responses share a rank)."""
        return {i: r for r, g in enumerate(self.groups) for i in g}

    @property
    def has_ties(self) -> bool:
        return any(len(g) > 1 for g in self.groups)

    def problems(self, k: int) -> list[str]:
        """Why this is not a ranking of ``k`` responses (empty when it is one)."""
        seen = [i for g in self.groups for i in g]
        out = []
        if any(len(g) == 0 for g in self.groups):
            out.append("has an empty group")
        dup = sorted({i + 1 for i in seen if seen.count(i) > 1})
        if dup:
            out.append(f"lists response(s) {dup} more than once")
        bad = sorted({i + 1 for i in seen if not 0 <= i < k})
        if bad:
            out.append(f"names response(s) {bad} but there are {k} responses")
        missing = sorted(set(range(k)) - set(seen))
        if missing:
            out.append(f"leaves out response(s) {[i + 1 for i in missing]}")
        return out

    def to_dict(self) -> dict:
        return _drop_empty({"order": self.format(), "reason": self.reason})

    @classmethod
    def from_dict(cls, d: Any, path: str) -> Ranking | None:
        if d is None:
            return None
        if isinstance(d, str):
            return cls.parse(d, path=path)
        d = _dict(d, path)
        order = _req(d, "order", f"{path}.")
        reason = _str(d.get("reason"), f"{path}.reason")
        if isinstance(order, list):
            groups = [_list(g, f"{path}.order[{i}]") for i, g in enumerate(order)]
            if not all(isinstance(x, int) for g in groups for x in g):
                raise RecordError(f"{path}.order", "groups must hold integer indices")
            return cls(groups=groups, reason=reason)
        return cls.parse(order, reason=reason, path=f"{path}.order")


@dataclass
class Preference:
    """An explicit pairwise label, for data that has pairs but no full ranking (pair files).

    ``chosen`` / ``rejected`` index ``Record.responses``. ``is_tie`` marks a tie pair (the two
    were judged equal; only the reward-model tie term uses those). ``margin`` is an optional
    strength (score difference or a published per-pair scaling value)."""

    chosen: int
    rejected: int
    is_tie: bool = False
    margin: float | None = None
    meta: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return _drop_empty(
            {
                "chosen": self.chosen,
                "rejected": self.rejected,
                "is_tie": self.is_tie or None,
                "margin": self.margin,
                "meta": self.meta,
            }
        )

    @classmethod
    def from_dict(cls, d: Any, path: str) -> Preference:
        d = _dict(d, path)
        c, r = _req(d, "chosen", f"{path}."), _req(d, "rejected", f"{path}.")
        for name, v in (("chosen", c), ("rejected", r)):
            if not isinstance(v, int) or isinstance(v, bool):
                raise RecordError(f"{path}.{name}", f"must be a response index, got {v!r}")
        return cls(
            chosen=c,
            rejected=r,
            is_tie=bool(d.get("is_tie", False)),
            margin=_num(d.get("margin"), f"{path}.margin"),
            meta=_dict(d.get("meta"), f"{path}.meta"),
        )


@dataclass
class Facts:
    """Ground truth for factual augmentation (LLaVA-RLHF) and symbolic rewards.

    ``objects`` is the exact list of object labels in the image (what MMHal-Bench's judge sees in
    place of the image); ``choices``/``answer_index`` describe a multiple-choice question."""

    captions: list[str] = field(default_factory=list)
    rationale: str | None = None
    short_answer: str | None = None
    choices: list[str] = field(default_factory=list)
    answer_index: int | None = None
    objects: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not self.to_dict()

    def to_dict(self) -> dict:
        return _drop_empty(
            {
                "captions": self.captions,
                "rationale": self.rationale,
                "short_answer": self.short_answer,
                "choices": self.choices,
                "answer_index": self.answer_index,
                "objects": self.objects,
            }
        )

    @classmethod
    def from_dict(cls, d: Any, path: str) -> Facts | None:
        if d is None:
            return None
        d = _dict(d, path)

        def strs(key: str) -> list[str]:
            items = _list(d.get(key), f"{path}.{key}")
            return [_str(x, f"{path}.{key}[{i}]", allow_none=False) for i, x in enumerate(items)]

        ai = d.get("answer_index")
        if ai is not None and (not isinstance(ai, int) or isinstance(ai, bool)):
            raise RecordError(f"{path}.answer_index", f"must be an integer, got {ai!r}")
        return cls(
            captions=strs("captions"),
            rationale=_str(d.get("rationale"), f"{path}.rationale"),
            short_answer=_str(d.get("short_answer"), f"{path}.short_answer"),
            choices=strs("choices"),
            answer_index=ai,
            objects=strs("objects"),
        )


# ----------------------------------------------------------------------------------------------
# the record


@dataclass
class Record:
    """One query (with media and optional context turns) and its K responses."""

    id: str
    conversation: list[Turn]
    responses: list[Response]
    images: list[ImageRef] = field(default_factory=list)
    video: VideoRef | None = None
    ranking: Ranking | None = None
    preferences: list[Preference] = field(default_factory=list)
    facts: Facts | None = None
    category: str | None = None
    tags: list[str] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def query(self) -> str:
        """The text of the final user turn."""
        return self.conversation[-1].text

    @property
    def k(self) -> int:
        return len(self.responses)

    def to_dict(self) -> dict:
        return _drop_empty(
            {
                "id": self.id,
                "images": [im.to_dict() for im in self.images],
                "video": self.video.to_dict() if self.video else None,
                "conversation": [t.to_dict() for t in self.conversation],
                "responses": [r.to_dict() for r in self.responses],
                "ranking": self.ranking.to_dict() if self.ranking else None,
                "preferences": [p.to_dict() for p in self.preferences],
                "facts": self.facts.to_dict() if self.facts and not self.facts.is_empty() else None,
                "category": self.category,
                "tags": self.tags,
                "meta": self.meta,
            }
        )

    @classmethod
    def from_dict(cls, d: Any) -> Record:
        """Build a record from its JSON form; raises :class:`RecordError` naming the field."""
        d = _dict(d, "-")
        rid = _req(d, "id", "")
        if not isinstance(rid, str | int) or isinstance(rid, bool):
            raise RecordError("id", f"must be a string, got {type(rid).__name__}")
        conv = [
            Turn.from_dict(t, f"conversation[{i}]")
            for i, t in enumerate(_list(d.get("conversation"), "conversation"))
        ]
        if not conv:
            raise RecordError("conversation", "needs at least one user turn")
        if conv[-1].role != "user":
            raise RecordError(
                f"conversation[{len(conv) - 1}].role", "the last turn must be the user's query"
            )
        return cls(
            id=str(rid),
            conversation=conv,
            responses=[
                Response.from_dict(r, f"responses[{i}]")
                for i, r in enumerate(_list(d.get("responses"), "responses"))
            ],
            images=[
                ImageRef.from_dict(x, f"images[{i}]")
                for i, x in enumerate(_list(d.get("images"), "images"))
            ],
            video=VideoRef.from_dict(d["video"], "video") if d.get("video") is not None else None,
            ranking=Ranking.from_dict(d.get("ranking"), "ranking"),
            preferences=[
                Preference.from_dict(p, f"preferences[{i}]")
                for i, p in enumerate(_list(d.get("preferences"), "preferences"))
            ],
            facts=Facts.from_dict(d.get("facts"), "facts"),
            category=_str(d.get("category"), "category"),
            tags=_each(d, "tags", lambda t, p: _str(t, p, allow_none=False)),
            meta=_dict(d.get("meta"), "meta"),
        )

    @classmethod
    def single(
        cls,
        id: str,
        query: str,
        responses: Iterable[str | Response],
        images: Iterable[str | ImageRef] = (),
        **kw: Any,
    ) -> Record:
        """Convenience constructor for the common single-turn case."""
        return cls(
            id=id,
            conversation=[Turn("user", query)],
            responses=[r if isinstance(r, Response) else Response(text=r) for r in responses],
            images=[im if isinstance(im, ImageRef) else ImageRef(path=im) for im in images],
            **kw,
        )
