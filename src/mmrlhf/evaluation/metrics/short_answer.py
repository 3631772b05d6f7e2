"""Accuracy of short answers (already judged right or wrong), overall and per group.

- short_answer_acc = correct / all
- acc/<group>      = correct in group / answers in group
"""

from __future__ import annotations

from collections.abc import Sequence


def accuracy_by_group(correct: Sequence[bool], groups: Sequence[str]) -> dict[str, float | int]:
    """Accuracy of ``correct`` flags overall and per group label.

    Keys: ``short_answer_acc`` (0.0 when empty), ``short_answer_n``, and per group ``acc/<group>``,
    ``n/<group>``.
    """
    if len(correct) != len(groups):
        raise ValueError(f"correct/groups: lengths differ ({len(correct)} vs {len(groups)})")
    per: dict[str, list[bool]] = {}
    for i, (c, g) in enumerate(zip(correct, groups, strict=True)):
        if not isinstance(c, bool) and type(c).__name__ != "bool_":  # numpy bools too
            raise ValueError(f"correct[{i}]: expected a bool, got {c!r}")
        if not isinstance(g, str):
            raise ValueError(f"groups[{i}]: expected a string, got {g!r}")
        per.setdefault(g, []).append(bool(c))
    n = len(correct)
    out: dict[str, float | int] = {
        "short_answer_acc": sum(sum(v) for v in per.values()) / n if n else 0.0,
        "short_answer_n": n,
    }
    for g in sorted(per):
        out[f"acc/{g}"] = sum(per[g]) / len(per[g])
        out[f"n/{g}"] = len(per[g])
    return out
