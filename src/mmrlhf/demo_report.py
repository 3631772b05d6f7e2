"""The demo's report: SFT vs aligned side by side, the reward bench, the DPO training curves."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from mmrlhf.evaluation.report import _png, load_run, write_report


def _curves(history: list[dict[str, Any]]) -> str:
    """DPO loss, implicit-reward accuracy and margin per step, as one embedded PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(11, 2.8))
    for ax, key, title in zip(
        axes,
        ("loss", "rewards/accuracies", "rewards/margins"),
        ("loss", "pair accuracy (implicit reward)", "implicit reward margin"),
        strict=True,
    ):
        ax.plot(steps, [h.get(key, float("nan")) for h in history], lw=1)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return f'<img alt="DPO curves" src="{_png(fig)}">'


def _bench_table(bench: dict[str, Any]) -> str:
    cats = sorted({k.split("/", 1)[1] for k in bench if k.startswith("acc/")})
    rows = [
        "<table><tr><th>category</th><th>Acc</th><th>Acc+</th><th>pairs</th><th>queries</th></tr>"
    ]
    for c, a, ap, n, q in [
        ("all", bench["acc"], bench["acc_plus"], bench["n_pairs"], bench["n_queries"])
    ] + [
        (
            c,
            bench[f"acc/{c}"],
            bench[f"acc_plus/{c}"],
            bench[f"n_pairs/{c}"],
            bench[f"n_queries/{c}"],
        )
        for c in cats
    ]:
        rows.append(
            f"<tr><td>{html.escape(c)}</td><td>{a:.3f}</td><td>{ap:.3f}</td><td>{n}</td><td>{q}</td></tr>"
        )
    return "\n".join(rows) + "</table>"


def write_demo_report(out: Path, result: dict[str, Any], history: list[dict[str, Any]]) -> Path:
    """``out/report.html`` + ``out/report.md`` comparing the SFT and aligned models."""
    runs, merged = {}, {}
    for label, name in (("SFT", "sft"), ("aligned", "aligned")):
        metrics, examples = load_run(out / "eval" / name)
        runs[label] = metrics
        for ex in examples:
            slot = merged.setdefault(ex["id"], {**ex, "answers": {}})
            for a in ex["answers"].values():
                slot["answers"][label] = a
    sections = []
    if result.get("reward_bench"):
        sections.append(
            (
                "Critique reward model on the held-out reward bench",
                _bench_table(result["reward_bench"]),
            )
        )
    if history:
        sections.append(("MM-DPO training", _curves(history)))
    notes = [
        f"wall time {result['wall_seconds']:.0f} s; stages: "
        + ", ".join(f"{k} {v:.0f} s" for k, v in result["stage_seconds"].items()),
        "Unseen scenes; exact rule judge; CHAIR/MMHal/POPE/safety as in docs/evaluation.md.",
    ]
    html_path, _ = write_report(
        out,
        runs,
        title="mmrlhf demo: SFT vs MM-DPO aligned",
        examples=list(merged.values()),
        extra_sections=sections,
        notes=notes,
    )
    (out / "dpo_history.json").write_text(json.dumps(history))
    return html_path
