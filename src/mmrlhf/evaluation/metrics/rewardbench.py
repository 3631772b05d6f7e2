"""Reward-model accuracy on preference pairs (MM-RLHF-RewardBench style).

Each row is one pair ``(query_id, category, reward_chosen, reward_rejected)``:

- acc      = pairs with reward_chosen > reward_rejected / pairs (strict: a tie is wrong)
- acc_plus = query ids whose pairs are all correct / query ids

Both are reported overall and per category.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from mmrlhf.data.record import Record

Row = tuple[str, str, float, float]

#: Category given to pairs of records that have none.
NO_CATEGORY = "uncategorized"


def _reward(v: object, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise ValueError(f"{what}: expected a number, got {v!r}")
    return float(v)


def rewardbench_metrics(rows: Iterable[Sequence[object]]) -> dict[str, float | int]:
    """Acc and Acc+ of ``(query_id, category, reward_chosen, reward_rejected)`` rows.

    Keys: ``acc``, ``acc_plus``, ``n_pairs``, ``n_queries`` overall, and per category
    ``acc/<cat>``, ``acc_plus/<cat>``, ``n_pairs/<cat>``, ``n_queries/<cat>``. A query id must
    keep one category. Rates over no pairs are 0.0.
    """
    per_query: dict[str, list[bool]] = {}
    cat_of: dict[str, str] = {}
    for i, row in enumerate(rows):
        if len(row) != 4:
            raise ValueError(
                f"rows[{i}]: expected (query_id, category, reward_chosen, reward_rejected), "
                f"got {len(row)} fields"
            )
        qid, cat, rc, rr = row
        if not isinstance(qid, str) or not isinstance(cat, str):
            raise ValueError(f"rows[{i}]: query_id and category must be strings, got {row!r}")
        rc = _reward(rc, f"rows[{i}] (query {qid}): reward_chosen")
        rr = _reward(rr, f"rows[{i}] (query {qid}): reward_rejected")
        if cat_of.setdefault(qid, cat) != cat:
            raise ValueError(
                f"rows[{i}]: query {qid!r} has category {cat!r} but earlier {cat_of[qid]!r}"
            )
        per_query.setdefault(qid, []).append(rc > rr)

    def summary(qids: list[str]) -> tuple[float, float, int, int]:
        pairs = [ok for q in qids for ok in per_query[q]]
        acc = sum(pairs) / len(pairs) if pairs else 0.0
        acc_plus = sum(all(per_query[q]) for q in qids) / len(qids) if qids else 0.0
        return acc, acc_plus, len(pairs), len(qids)

    acc, acc_plus, n_pairs, n_queries = summary(list(per_query))
    out: dict[str, float | int] = {
        "acc": acc,
        "acc_plus": acc_plus,
        "n_pairs": n_pairs,
        "n_queries": n_queries,
    }
    for cat in sorted(set(cat_of.values())):
        acc, acc_plus, n_pairs, n_queries = summary([q for q in per_query if cat_of[q] == cat])
        out[f"acc/{cat}"] = acc
        out[f"acc_plus/{cat}"] = acc_plus
        out[f"n_pairs/{cat}"] = n_pairs
        out[f"n_queries/{cat}"] = n_queries
    return out


def rows_from_records(records: Iterable[Record]) -> list[Row]:
    """One row per non-tie preference of each record: ``(record.id, record.category,
    responses[chosen].reward, responses[rejected].reward)``.

    Tie preferences (``is_tie``) have no right answer here and are left out. Records without a
    category get :data:`NO_CATEGORY`. A missing reward or a bad index raises ``ValueError``
    naming the record id and the response index.
    """
    rows: list[Row] = []
    for rec in records:
        cat = rec.category or NO_CATEGORY
        for j, p in enumerate(rec.preferences):
            if p.is_tie:
                continue
            rewards = []
            for side, idx in (("chosen", p.chosen), ("rejected", p.rejected)):
                if not 0 <= idx < len(rec.responses):
                    raise ValueError(
                        f"record {rec.id}: preferences[{j}].{side}: index {idx} out of range "
                        f"({len(rec.responses)} responses)"
                    )
                r = rec.responses[idx].reward
                if r is None:
                    raise ValueError(
                        f"record {rec.id}: responses[{idx}].reward: missing "
                        f"(the {side} side of preferences[{j}])"
                    )
                rewards.append(_reward(r, f"record {rec.id}: responses[{idx}].reward"))
            rows.append((rec.id, cat, rewards[0], rewards[1]))
    return rows
