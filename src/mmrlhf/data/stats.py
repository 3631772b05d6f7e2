"""Dataset statistics: counts, length histograms, score distributions, ranking and tie stats.

:func:`compute_stats` returns a plain JSON-able dict; :func:`print_stats` renders it with rich
(tables, and text histograms drawn with block characters). Lengths are in whitespace-separated
words: tokenizer-free, so the numbers do not depend on which model is trained.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable
from typing import Any

from mmrlhf.data.pairs import derive_pairs
from mmrlhf.data.record import SCORE_DIMENSIONS, Record, RecordError

# Fixed bin edges (words) so that histograms of different datasets are comparable.
LENGTH_BINS = (0, 10, 25, 50, 100, 200, 400, 800)


def _bin_labels() -> list[str]:
    labels = [f"{a}-{b - 1}" for a, b in zip(LENGTH_BINS, LENGTH_BINS[1:], strict=False)]
    return [*labels, f"{LENGTH_BINS[-1]}+"]


def length_summary(lengths: list[int]) -> dict[str, Any]:
    """Mean/median/min/max and a fixed-bin histogram of word counts."""
    counts = [0] * len(LENGTH_BINS)
    for n in lengths:
        i = max(j for j, edge in enumerate(LENGTH_BINS) if n >= edge)
        counts[i] += 1
    out: dict[str, Any] = {"count": len(lengths)}
    if lengths:
        out.update(
            mean=round(statistics.fmean(lengths), 2),
            median=statistics.median(lengths),
            min=min(lengths),
            max=max(lengths),
        )
    out["histogram"] = dict(zip(_bin_labels(), counts, strict=True))
    return out


def _words(text: str) -> int:
    return len(text.split())


def compute_stats(records: Iterable[Record]) -> dict[str, Any]:
    """Statistics of ``records`` as a JSON-able dict (see docs/data.md, "stats")."""
    records = list(records)
    k_counts: Counter[int] = Counter()
    categories: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    scores: dict[str, Counter[str]] = {d: Counter() for d in SCORE_DIMENSIONS}
    score_vals: dict[str, list[float]] = {d: [] for d in SCORE_DIMENSIONS}
    q_len, r_len = [], []
    with_images = with_video = n_images = 0
    ranked = tied = with_prefs = 0
    pairs_per_record: Counter[int] = Counter()
    pair_total = tie_pairs = 0
    unpairable = 0
    for r in records:
        k_counts[r.k] += 1
        categories[r.category or "(none)"] += 1
        q_len.append(_words(r.query))
        n_images += len(r.images)
        with_images += bool(r.images)
        with_video += r.video is not None
        for x in r.responses:
            r_len.append(_words(x.text))
            if x.source:
                sources[x.source] += 1
            for dim, s in x.scores().items():
                scores[dim][f"{s.value:g}"] += 1
                score_vals[dim].append(s.value)
        if r.ranking is not None:
            ranked += 1
            tied += r.ranking.has_ties
        with_prefs += bool(r.preferences)
        try:
            pairs = derive_pairs(r, strategy="all", ties="keep")
        except RecordError:
            unpairable += 1  # invalid ranking: the validator reports it
            continue
        ties_here = sum(p.is_tie for p in pairs)
        pairs_per_record[len(pairs) - ties_here] += 1
        pair_total += len(pairs) - ties_here
        tie_pairs += ties_here
    n = len(records)
    return {
        "records": n,
        "responses": sum(k * c for k, c in k_counts.items()),
        "responses_per_record": {str(k): c for k, c in sorted(k_counts.items())},
        "media": {
            "records_with_images": with_images,
            "images": n_images,
            "records_with_video": with_video,
        },
        "categories": dict(categories.most_common()),
        "sources": dict(sources.most_common()),
        "query_words": length_summary(q_len),
        "response_words": length_summary(r_len),
        "scores": {
            d: {
                "count": len(score_vals[d]),
                "mean": round(statistics.fmean(score_vals[d]), 3) if score_vals[d] else None,
                "distribution": dict(sorted(scores[d].items(), key=lambda kv: float(kv[0]))),
            }
            for d in SCORE_DIMENSIONS
            if score_vals[d]
        },
        "ranking": {
            "records_with_ranking": ranked,
            "records_with_ties": tied,
            "tie_share": round(tied / ranked, 4) if ranked else None,
            "records_with_preferences": with_prefs,
        },
        "pairs": {
            "total": pair_total,
            "tie_pairs": tie_pairs,
            "per_record_mean": round(pair_total / n, 3) if n else None,
            "per_record": {str(k): c for k, c in sorted(pairs_per_record.items())},
            "records_with_invalid_ranking": unpairable,
        },
    }


def _bars(hist: dict[str, int], width: int = 30) -> list[tuple[str, int, str]]:
    top = max(hist.values(), default=0) or 1
    return [(label, c, "█" * round(width * c / top)) for label, c in hist.items()]


def print_stats(stats: dict[str, Any], console: Any = None) -> None:
    """Pretty-print :func:`compute_stats` output with rich."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title="records", show_header=False)
    t.add_row("records", str(stats["records"]))
    t.add_row("responses", str(stats["responses"]))
    t.add_row(
        "responses per record",
        ", ".join(f"K={k}: {c}" for k, c in stats["responses_per_record"].items()) or "-",
    )
    m = stats["media"]
    t.add_row(
        "with images / images / with video",
        f"{m['records_with_images']} / {m['images']} / {m['records_with_video']}",
    )
    rk, pr = stats["ranking"], stats["pairs"]
    t.add_row(
        "ranked / with ties / tie share",
        f"{rk['records_with_ranking']} / {rk['records_with_ties']} / {rk['tie_share']}",
    )
    t.add_row("with explicit preferences", str(rk["records_with_preferences"]))
    t.add_row(
        "pairs (all) / tie pairs / per record",
        f"{pr['total']} / {pr['tie_pairs']} / {pr['per_record_mean']}",
    )
    console.print(t)
    for title, key in (("categories", "categories"), ("response sources", "sources")):
        if stats[key]:
            ct = Table(title=title)
            ct.add_column("name")
            ct.add_column("count", justify="right")
            for name, c in stats[key].items():
                ct.add_row(name, str(c))
            console.print(ct)
    for title, key in (
        ("query length (words)", "query_words"),
        ("response length (words)", "response_words"),
    ):
        s = stats[key]
        ht = Table(
            title=f"{title}: mean {s.get('mean', '-')}, median {s.get('median', '-')}, "
            f"max {s.get('max', '-')}"
        )
        ht.add_column("words")
        ht.add_column("count", justify="right")
        ht.add_column("")
        for label, c, bar in _bars(s["histogram"]):
            ht.add_row(label, str(c), bar)
        console.print(ht)
    for dim, s in stats["scores"].items():
        st = Table(title=f"{dim}: {s['count']} scores, mean {s['mean']}")
        st.add_column("score")
        st.add_column("count", justify="right")
        st.add_column("")
        for label, c, bar in _bars(s["distribution"]):
            st.add_row(label, str(c), bar)
        console.print(st)
