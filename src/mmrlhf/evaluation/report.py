"""Evaluation reports: one self-contained HTML file (plots embedded as PNG data URIs) and a short
markdown summary, for one run or several side by side.

Inputs are what the suite writes: a flat ``metrics.json`` per run (keys documented in
``docs/evaluation.md``) and, optionally, example answers per run. Example format (one dict per
question; ``answers`` maps a run name to that run's answer)::

    {"id": "s01800-q1", "question": "...", "family": "holistic", "reference": "...",
     "answers": {"sft": {"text": "...", "spans": [[12, 24]], "verdict": "hallucinated",
                         "rating": 2}}}

``spans`` are character ranges of hallucinated words in ``text``; they are highlighted.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: Headline metrics shown first in the table and the markdown summary, in this order.
HEADLINE = (
    "short_answer_acc",
    "core_short_answer_acc",
    "pope_f1",
    "pope_accuracy",
    "pope_yes_ratio",
    "chair_i",
    "chair_s",
    "chair_coverage",
    "mmhal_score",
    "mmhal_hallucination_rate",
    "refomb_score",
    "refusal_rate",
    "attack_success_rate",
    "over_refusal_rate",
)

#: Metrics where lower is better (the table marks the best run per row).
LOWER_IS_BETTER = {
    "chair_i",
    "chair_s",
    "mmhal_hallucination_rate",
    "attack_success_rate",
    "over_refusal_rate",
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;
color:#222;line-height:1.4}
h1{font-size:1.6rem}h2{font-size:1.25rem;margin-top:2rem;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5rem 0;font-size:.92rem}
td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:right}
th:first-child,td:first-child{text-align:left}
td.best{font-weight:700;background:#eef7ee}
.plots img{max-width:49%;vertical-align:top}
.ex{border:1px solid #ddd;border-radius:6px;padding:.6rem .8rem;margin:.6rem 0}
.ex .q{font-weight:600}.ex .ref{color:#555;font-size:.9rem}
.ans{display:grid;grid-template-columns:repeat(auto-fit,minmax(250px,1fr));gap:.6rem;margin-top:.4rem}
.ans div{background:#fafafa;padding:.4rem .5rem;border-radius:4px}
mark{background:#ffc9c9;padding:0 .1rem}
.tag{font-size:.75rem;padding:.05rem .35rem;border-radius:3px;margin-left:.3rem}
.correct{background:#d3f9d8}.wrong{background:#ffe3e3}.hallucinated{background:#ffc9c9}
.note{color:#666;font-size:.85rem}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return html.escape(str(v))


def _png(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _grouped_bars(
    runs: Mapping[str, Mapping[str, Any]],
    keys: Sequence[str],
    labels: Sequence[str],
    title: str,
    ylim: tuple[float, float] | None = (0.0, 1.0),
) -> str | None:
    """A grouped bar chart (one group per key, one bar per run) as a data URI, or None when no
    run has any of the keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [
        (k, lab) for k, lab in zip(keys, labels, strict=True) if any(k in m for m in runs.values())
    ]
    if not present:
        return None
    names = list(runs)
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.9 * len(present) + 2), 3.0))
    for i, name in enumerate(names):
        vals = [float(runs[name].get(k, float("nan"))) for k, _ in present]
        xs = [j + (i - (len(names) - 1) / 2) * width for j in range(len(present))]
        ax.bar(xs, vals, width=width, label=name)
    ax.set_xticks(range(len(present)), [lab for _, lab in present], rotation=20, ha="right")
    ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.grid(axis="y", alpha=0.3)
    if len(names) > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def _suffixes(runs: Mapping[str, Mapping[str, Any]], prefix: str) -> list[str]:
    out: set[str] = set()
    for m in runs.values():
        out.update(k[len(prefix) :] for k in m if k.startswith(prefix))
    return sorted(out)


def plots(runs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The report's figures (data URIs): MMHal per type, POPE per split, CHAIR, safety,
    short-answer accuracy per family."""
    figs = []
    types = _suffixes(runs, "mmhal_score/")
    figs.append(
        _grouped_bars(
            runs,
            [f"mmhal_score/{t}" for t in types],
            types,
            "MMHal-style score by type (0-6)",
            ylim=(0.0, 6.0),
        )
    )
    splits = sorted({s.split("/")[0] for s in _suffixes(runs, "pope/")})
    pope_keys = [f"pope/{s}/{k}" for s in splits for k in ("accuracy", "f1", "yes_ratio")]
    pope_labels = [f"{s} {k}" for s in splits for k in ("acc", "F1", "yes")]
    figs.append(_grouped_bars(runs, pope_keys, pope_labels, "POPE by negative sampling"))
    figs.append(
        _grouped_bars(
            runs, ["chair_i", "chair_s"], ["CHAIR_i", "CHAIR_s"], "CHAIR (lower is better)"
        )
    )
    figs.append(
        _grouped_bars(
            runs,
            ["refusal_rate", "attack_success_rate", "over_refusal_rate"],
            ["refusal (harmful)", "attack success", "over-refusal (benign)"],
            "Safety",
        )
    )
    fams = _suffixes(runs, "acc/")
    figs.append(
        _grouped_bars(runs, [f"acc/{f}" for f in fams], fams, "Short-answer accuracy by family")
    )
    return [f for f in figs if f]


def _table(runs: Mapping[str, Mapping[str, Any]], keys: Sequence[str]) -> str:
    names = list(runs)
    rows = ["<table><tr><th>metric</th>" + "".join(f"<th>{html.escape(n)}</th>" for n in names)]
    for k in keys:
        vals = [runs[n].get(k) for n in names]
        nums = [v for v in vals if isinstance(v, (int, float)) and not math.isnan(float(v))]
        best = None
        if len(names) > 1 and nums:
            best = min(nums) if k in LOWER_IS_BETTER else max(nums)
        cells = []
        for v in vals:
            cls = ' class="best"' if best is not None and v == best else ""
            cells.append(f"<td{cls}>{'' if v is None else _fmt(v)}</td>")
        rows.append(f"<tr><td>{html.escape(k)}</td>{''.join(cells)}</tr>")
    return "\n".join(rows) + "</table>"


def highlight(text: str, spans: Sequence[Sequence[int]]) -> str:
    """``text`` HTML-escaped with each ``[start, end)`` span wrapped in ``<mark>``."""
    out, pos = [], 0
    for start, end in sorted((int(a), int(b)) for a, b in spans):
        if start < pos:
            continue
        out += [html.escape(text[pos:start]), "<mark>", html.escape(text[start:end]), "</mark>"]
        pos = end
    out.append(html.escape(text[pos:]))
    return "".join(out)


def _examples_html(examples: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    for ex in examples:
        cells = []
        for name, a in ex.get("answers", {}).items():
            tag = ""
            if a.get("verdict"):
                tag = f'<span class="tag {html.escape(a["verdict"])}">{html.escape(a["verdict"])}</span>'
            rating = (
                f'<span class="tag">rating {a["rating"]}</span>'
                if a.get("rating") is not None
                else ""
            )
            cells.append(
                f"<div><b>{html.escape(name)}</b>{tag}{rating}<br>"
                f"{highlight(a.get('text', ''), a.get('spans', []))}</div>"
            )
        parts.append(
            f'<div class="ex"><div class="q">[{html.escape(ex.get("family", ""))}] '
            f"{html.escape(ex.get('question', ''))}</div>"
            f'<div class="ref">reference: {html.escape(ex.get("reference", ""))}</div>'
            f'<div class="ans">{"".join(cells)}</div></div>'
        )
    return "\n".join(parts)


def render_html(
    runs: Mapping[str, Mapping[str, Any]],
    *,
    title: str = "mmrlhf evaluation",
    examples: Sequence[Mapping[str, Any]] = (),
    extra_sections: Sequence[tuple[str, str]] = (),
    notes: Sequence[str] = (),
) -> str:
    """The whole report as one HTML string (no external files, no scripts).

    ``extra_sections`` are ``(heading, html)`` pairs appended before the examples (the demo adds
    the reward bench and training curves there).
    """
    keys_all = sorted({k for m in runs.values() for k in m})
    head = [k for k in HEADLINE if k in keys_all]
    rest = [k for k in keys_all if k not in head and isinstance(_first(runs, k), (int, float))]
    body = [f"<h1>{html.escape(title)}</h1>"]
    body += [f'<p class="note">{html.escape(n)}</p>' for n in notes]
    body.append("<h2>Headline metrics</h2>" + _table(runs, head))
    figs = plots(runs)
    if figs:
        body.append(
            '<h2>Plots</h2><div class="plots">'
            + "".join(f'<img alt="plot" src="{f}">' for f in figs)
            + "</div>"
        )
    for heading, section in extra_sections:
        body.append(f"<h2>{html.escape(heading)}</h2>{section}")
    if examples:
        body.append(
            "<h2>Example answers</h2><p class=note>Hallucinated words, and denials of what "
            "is there, are highlighted.</p>" + _examples_html(examples)
        )
    body.append("<h2>All metrics</h2>" + _table(runs, rest))
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>"
    )


def _first(runs: Mapping[str, Mapping[str, Any]], key: str) -> Any:
    for m in runs.values():
        if key in m:
            return m[key]
    return None


def render_markdown(runs: Mapping[str, Mapping[str, Any]], title: str = "mmrlhf evaluation") -> str:
    """A short markdown summary: the headline metrics, one column per run."""
    names = list(runs)
    keys = [k for k in HEADLINE if any(k in m for m in runs.values())]
    lines = [f"# {title}", "", "| metric | " + " | ".join(names) + " |"]
    lines.append("| --- |" + " --- |" * len(names))
    for k in keys:
        cells = [_fmt(runs[n][k]) if k in runs[n] else "" for n in names]
        arrow = " (lower is better)" if k in LOWER_IS_BETTER else ""
        lines.append(f"| {k}{arrow} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(
    out_dir: str | Path,
    runs: Mapping[str, Mapping[str, Any]],
    *,
    title: str = "mmrlhf evaluation",
    examples: Sequence[Mapping[str, Any]] = (),
    extra_sections: Sequence[tuple[str, str]] = (),
    notes: Sequence[str] = (),
    stem: str = "report",
) -> tuple[Path, Path]:
    """Write ``{stem}.html`` and ``{stem}.md`` into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    html_path, md_path = out / f"{stem}.html", out / f"{stem}.md"
    html_path.write_text(
        render_html(
            runs, title=title, examples=examples, extra_sections=extra_sections, notes=notes
        )
    )
    md_path.write_text(render_markdown(runs, title))
    return html_path, md_path


def load_run(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``(metrics, examples)`` of a run folder written by the suite (``metrics.json`` and, if
    present, ``examples.jsonl``)."""
    p = Path(path)
    mfile = p / "metrics.json" if p.is_dir() else p
    if not mfile.is_file():
        raise FileNotFoundError(f"{mfile}: no metrics.json (is this an eval output folder?)")
    metrics = json.loads(mfile.read_text())
    ex_file = mfile.parent / "examples.jsonl"
    examples = []
    if ex_file.is_file():
        examples = [json.loads(x) for x in ex_file.read_text().splitlines() if x.strip()]
    return metrics, examples
