"""`mmrlhf world generate` / `info` through the root CLI app."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from mmrlhf.cli import world as world_cli
from mmrlhf.cli.main import app
from mmrlhf.world import WorldConfig, load_world

runner = CliRunner()


def test_generate_and_info(tmp_path: Path) -> None:
    out = tmp_path / "w"
    args = ["world", "generate", "--out", str(out), "--n", "25", "--seed", "5"]
    args += ["--test-fraction", "0.2", "--hallucination-rate", "0.5", "--questions-per-scene", "3"]
    res = runner.invoke(app, [*args, "--image-size", "48"])
    assert res.exit_code == 0, res.output
    assert "20 train / 5 test scenes" in res.output
    w = load_world(out)
    assert w.seed == 5 and w.config.image_size == 48 and w.config.hallucination_rate == 0.5
    questions = [r for r in w.sft if r.category != "safety"]  # plus a few safety records
    assert len(questions) <= 20 * 3 and len(w.eval) <= 5 * 3

    res = runner.invoke(app, ["world", "info", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["scenes"] == {"train": 20, "test": 5}
    res = runner.invoke(app, ["world", "info", str(out)])
    assert res.exit_code == 0 and "vocabulary" in res.output


def test_generate_help_documents_every_option() -> None:
    res = runner.invoke(app, ["world", "generate", "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0
    for opt in (
        "--out",
        "--n",
        "--seed",
        "--test-fraction",
        "--image-size",
        "--hallucination-rate",
        "--questions-per-scene",
    ):
        assert opt in res.output


def test_cli_defaults_match_world_config() -> None:
    import inspect

    cfg = WorldConfig()
    fields = {f.name for f in dataclasses.fields(cfg)}
    for name, p in inspect.signature(world_cli.generate).parameters.items():
        if name in fields:
            default = (
                p.default.default if isinstance(p.default, typer.models.OptionInfo) else p.default
            )
            assert default == getattr(cfg, name), name


def test_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["world", "generate", "--out", str(tmp_path), "--image-size", "16"])
    assert res.exit_code != 0


def test_info_on_missing_world(tmp_path: Path) -> None:
    res = runner.invoke(app, ["world", "info", str(tmp_path)])
    assert res.exit_code == 1
