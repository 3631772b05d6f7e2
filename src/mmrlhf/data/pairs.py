"""Preference pairs derived from a record's ranking (or taken from its explicit preferences).

MM-RLHF ranks 3-5 responses per query with ties (``1>2=3>4``). Trainers need pairs. The rules
(METHODS.md section 2, docs/data.md "Pairs"):

- ``strategy="all"``: every two responses of *different* rank, the better one chosen;
- ``strategy="best_vs_rest"``: the best rank group against every lower response;
- ``strategy="adjacent"``: each rank group against the next one down.

Tied responses give no pair unless ``ties="keep"``; then each two responses sharing a rank group
give one pair flagged ``is_tie`` (used only by the reward model's tie term). For ``all`` and
``adjacent`` that is every group; for ``best_vs_rest`` only the best group, because that strategy
never looks at how lower responses compare among themselves.

Records without a ranking use their explicit ``preferences`` as they are (pair files carry
nothing else): the strategy does not apply, ``ties="skip"`` drops tie preferences.

``margin`` attaches a strength to each pair: ``"rank"`` (rank gap; 0 for ties), ``"scores"``
(mean fine-grained score of chosen minus rejected, over the dimensions both have), ``"reward"``
(cached reward difference), ``"given"`` (the margin stored on an explicit preference) or
``"none"``. It is ``None`` whenever the needed information is missing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from mmrlhf.data.record import SCORE_DIMENSIONS, Record, RecordError, Response

Strategy = Literal["all", "best_vs_rest", "adjacent"]
Ties = Literal["skip", "keep"]
Margin = Literal["none", "rank", "scores", "reward", "given"]

STRATEGIES: tuple[str, ...] = ("all", "best_vs_rest", "adjacent")
TIES: tuple[str, ...] = ("skip", "keep")
MARGINS: tuple[str, ...] = ("none", "rank", "scores", "reward", "given")


@dataclass
class Pair:
    """One preference pair: indices into ``Record.responses`` of the record ``record_id``."""

    record_id: str
    chosen: int
    rejected: int
    is_tie: bool = False
    margin: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Pair:
        return cls(
            record_id=str(d["record_id"]),
            chosen=int(d["chosen"]),
            rejected=int(d["rejected"]),
            is_tie=bool(d.get("is_tie", False)),
            margin=None if d.get("margin") is None else float(d["margin"]),
        )


def _check_options(strategy: str, ties: str, margin: str) -> None:
    for name, value, allowed in (
        ("strategy", strategy, STRATEGIES),
        ("ties", ties, TIES),
        ("margin", margin, MARGINS),
    ):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")


def _mean_score(resp: Response, dims: Iterable[str]) -> float:
    vals = [getattr(resp, d).value for d in dims]
    return sum(vals) / len(vals)


def score_margin(chosen: Response, rejected: Response) -> float | None:
    """Mean fine-grained score of ``chosen`` minus that of ``rejected``, over the dimensions
    scored on both (comparing means over different dimensions would compare unlike things)."""
    both = [d for d in SCORE_DIMENSIONS if getattr(chosen, d) and getattr(rejected, d)]
    if not both:
        return None
    return _mean_score(chosen, both) - _mean_score(rejected, both)


def _margin(
    record: Record, c: int, r: int, kind: str, rank_gap: int | None, given: float | None
) -> float | None:
    if kind == "none":
        return None
    if kind == "rank":
        return None if rank_gap is None else float(rank_gap)
    if kind == "given":
        return given
    rc, rr = record.responses[c], record.responses[r]
    if kind == "scores":
        return score_margin(rc, rr)
    # kind == "reward"
    if rc.reward is None or rr.reward is None:
        return None
    return rc.reward - rr.reward


def derive_pairs(
    record: Record,
    strategy: Strategy | str = "all",
    ties: Ties | str = "skip",
    margin: Margin | str = "none",
) -> list[Pair]:
    """The preference pairs of ``record`` (see the module docstring for the rules).

    Pairs come in a fixed order so that outputs are reproducible: ranked pairs by rank group of
    the chosen response, then of the rejected one, then by position in the group; tie pairs
    after them. Raises :class:`RecordError` when the ranking is not a ranking of the responses
    (the validator reports those with file and line; here we refuse to guess).
    """
    _check_options(strategy, ties, margin)
    out: list[Pair] = []
    if record.ranking is not None:
        problems = record.ranking.problems(record.k)
        if problems:
            raise RecordError("ranking", "; ".join(problems))
        groups = record.ranking.groups
        n = len(groups)
        if strategy == "all":
            spans = [(a, b) for a in range(n) for b in range(a + 1, n)]
        elif strategy == "best_vs_rest":
            spans = [(0, b) for b in range(1, n)]
        else:
            spans = [(a, a + 1) for a in range(n - 1)]
        tie_groups = (
            [] if ties == "skip" else (groups[:1] if strategy == "best_vs_rest" else groups)
        )
        for a, b in spans:
            for c in groups[a]:
                for r in groups[b]:
                    m = _margin(record, c, r, margin, b - a, None)
                    out.append(Pair(record.id, c, r, False, m))
        for g in tie_groups:
            for x in range(len(g)):
                for y in range(x + 1, len(g)):
                    m = _margin(record, g[x], g[y], margin, 0, None)
                    out.append(Pair(record.id, g[x], g[y], True, m))
        return out
    for i, p in enumerate(record.preferences):
        if not (0 <= p.chosen < record.k and 0 <= p.rejected < record.k):
            raise RecordError(f"preferences[{i}]", f"indexes a response outside 0..{record.k - 1}")
        if p.is_tie and ties == "skip":
            continue
        out.append(
            Pair(
                record.id,
                p.chosen,
                p.rejected,
                p.is_tie,
                _margin(record, p.chosen, p.rejected, margin, None, p.margin),
            )
        )
    return out


# ----------------------------------------------------------------------------------------------
# flat rows: one pair per row, the MM-RLHF pair-file columns plus ours


def _reason(record: Record, idx: int, pref_meta: dict[str, Any], side: str) -> str:
    """The reason text for one side of a pair: the pair's own, else the response's."""
    if pref_meta.get(f"{side}_reason") is not None:
        return str(pref_meta[f"{side}_reason"])
    resp = record.responses[idx]
    reason = resp.meta.get("reason")
    if reason is None:
        reason = resp.critique
    return "" if reason is None else str(reason)


def pair_row(record: Record, pair: Pair) -> dict[str, Any]:
    """One pair as a flat row of the MM-RLHF pair file, plus the columns that make the file
    read back into the same record (``chosen_index`` ...). See docs/data.md for the columns."""
    pref_meta: dict[str, Any] = {}
    for p in record.preferences:
        if (p.chosen, p.rejected) == (pair.chosen, pair.rejected):
            pref_meta = p.meta
            break
    rc, rr = record.responses[pair.chosen], record.responses[pair.rejected]
    row: dict[str, Any] = {"id": record.id}
    if record.video is not None:
        row["video"] = record.video.path
    elif record.images:
        row["image"] = record.images[0].path
    row["prompt"] = record.query
    row["chosen"] = rc.text
    row["rejected"] = rr.text
    row["chosen_reason"] = _reason(record, pair.chosen, pref_meta, "chosen")
    row["rejected_reason"] = _reason(record, pair.rejected, pref_meta, "rejected")
    if pair.is_tie:
        row["is_tie"] = True
    if pair.margin is not None:
        row["margin"] = pair.margin
    if rc.ref_logp is not None and rr.ref_logp is not None:
        row["reference_chosen_logp"] = rc.ref_logp
        row["reference_rejected_logp"] = rr.ref_logp
    # Our columns: enough to rebuild the record (response order, sources, category, context).
    row["chosen_index"] = pair.chosen
    row["rejected_index"] = pair.rejected
    if rc.source is not None:
        row["chosen_model"] = rc.source
    if rr.source is not None:
        row["rejected_model"] = rr.source
    if record.category is not None:
        row["category"] = record.category
    if len(record.images) > 1:
        row["images"] = [im.path for im in record.images]
    if len(record.conversation) > 1:
        row["context"] = [t.to_dict() for t in record.conversation[:-1]]
    return row


def pairs_to_rows(record: Record, pairs: Iterable[Pair]) -> list[dict[str, Any]]:
    """Flatten ``pairs`` of ``record`` into pair-file rows (see :func:`pair_row`)."""
    return [pair_row(record, p) for p in pairs]


def rows_to_pairs(rows: Iterable[dict[str, Any]]) -> list[tuple[Record, list[Pair]]]:
    """Group pair-file rows back into records and their pairs (the inverse of
    :func:`pairs_to_rows`). Raises :class:`RecordError` on the first bad row."""
    from mmrlhf.data.formats.mmrlhf_pairs import records_from_rows

    out = []
    for _line, item in records_from_rows(enumerate(rows, start=1), source="<rows>"):
        if isinstance(item, Record):
            out.append((item, derive_pairs(item, ties="keep", margin="given")))
        elif isinstance(item, Exception):
            raise item
    return out
