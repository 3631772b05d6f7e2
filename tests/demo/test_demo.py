"""`mmrlhf demo` end to end on a miniature world (a few SFT steps): every stage runs, the metrics
file has the documented keys, and a re-run is served from the cache."""

from __future__ import annotations

import json
from pathlib import Path

from mmrlhf.demo import DemoSettings, run_demo

KEYS = (
    "chair_i",
    "chair_s",
    "pope_f1",
    "mmhal_score",
    "mmhal_hallucination_rate",
    "short_answer_acc",
    "refusal_rate",
    "over_refusal_rate",
)


def test_demo_runs_and_caches(tmp_path: Path) -> None:
    settings = DemoSettings(
        out=tmp_path / "demo",
        n_scenes=40,
        overrides=("train.max_steps=3", "train.batch_size=4", "train.save_every=2"),
    )
    first = run_demo(settings)
    for key in KEYS:
        assert key in first["sft"], key
    saved = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert saved["sft"] == first["sft"] and saved["wall_seconds"] > 0
    assert (tmp_path / "demo" / "eval" / "sft" / "report.html").is_file()
    again = run_demo(settings)
    assert again["sft"] == first["sft"]
    # every stage was cached: the second run only reads files back
    assert again["wall_seconds"] < first["wall_seconds"]
