"""Pretraining the tiny LLaVA's vision tower on the world's cells (``mmrlhf.world.vision``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from mmrlhf.world import WorldConfig
from mmrlhf.world.scene import Glyph, Scene, SceneObject
from mmrlhf.world.vision import (
    IGNORE,
    REPORT_FILE,
    VisionPretrainConfig,
    cell_labels,
    pretrain_vision_tower,
)


def test_cell_labels_hand_computed() -> None:
    """3x3 grid; a large red circle at (0, 0), a small blue cross at (1, 2), the digit 7 at
    (2, 2). Shapes (circle, square, triangle, diamond, cross) -> content 2..6, so the circle is
    2 and the cross 6; colours (red, green, blue, ...) -> red 0, blue 2; sizes (small, large)."""
    world = WorldConfig()
    assert world.shapes[0] == "circle" and world.shapes[4] == "cross"
    assert list(world.colors)[:3] == ["red", "green", "blue"]
    scene = Scene(
        id="s",
        background="ocean",
        objects=[
            SceneObject("circle", "red", "large", 0, 0, 12, 12),
            SceneObject("cross", "blue", "small", 1, 2, 60, 36),
        ],
        glyph=Glyph(digit=7, row=2, col=2),
    )
    y = cell_labels(scene, world)
    _ = IGNORE
    assert y["content"] == [2, 0, 0, 0, 0, 6, 0, 0, 1]
    assert y["color"] == [0, _, _, _, _, 2, _, _, _]
    assert y["size"] == [1, _, _, _, _, 0, _, _, _]
    assert y["digit"] == [_, _, _, _, _, _, _, _, 7]


def test_pretraining_changes_only_the_tower_and_reads_cells(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    model = tmp_path / "tiny"
    shutil.copytree(tiny_models["llava"], model)
    before = load_file(model / "model.safetensors")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        report = pretrain_vision_tower(
            model,
            WorldConfig(),
            VisionPretrainConfig(steps=150, batch_size=32, lr=3e-3, num_threads=1),
            progress=False,
        )
        assert torch.get_num_threads() == 2  # the caller's setting is restored
    finally:
        torch.set_num_threads(threads)
    assert report["config"]["num_threads"] == 1
    after = load_file(model / "model.safetensors")
    changed = {k for k in before if not (before[k] == after[k]).all()}
    assert changed and all("vision_tower" in k for k in changed)
    assert json.loads((model / REPORT_FILE).read_text()) == report
    probe = report["heldout_probe"]
    # unseen scenes: the cell contents beat the all-empty guess, colours are read
    assert probe["content"] > probe["content_majority"] + 0.1, probe  # 0.82 vs 0.68
    assert min(probe["color"], probe["size"]) > 0.95, probe
    assert probe["position"] > 0.7, probe  # which cell a token is: 0.80 here, chance 0.11
    assert not (model / ".vision-pretrain.tmp").exists()


def test_pretraining_needs_one_token_per_cell(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="patch_size must be 36"):
        pretrain_vision_tower(
            tiny_models["llava"], WorldConfig(grid=2, max_objects=3), progress=False
        )
    with pytest.raises(ValueError, match="needs the llava tiny model"):
        pretrain_vision_tower(tiny_models["qwen2_vl"], WorldConfig(), progress=False)


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        VisionPretrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="num_threads must be >= 0"):
        VisionPretrainConfig(num_threads=-1)


def test_build_tiny_cli_pretrains_with_a_world(world_dir: Path, tmp_path: Path) -> None:
    from mmrlhf.cli.main import app

    out = tmp_path / "m"
    args = ["model", "build-tiny", "--out", str(out), "--world", str(world_dir)]
    res = CliRunner().invoke(app, [*args, "--vision-steps", "3", "--text-layers", "1"])
    assert res.exit_code == 0, res.output
    assert "held-out cell probe" in res.output and (out / REPORT_FILE).exists()
    res = CliRunner().invoke(app, [*args, "--vision-steps", "3", "--patch-size", "12"])
    assert res.exit_code == 2 and "patch_size must be 24" in res.output
    assert "--vision-steps 0" in res.output
    res = CliRunner().invoke(
        app, [*args, "--vision-steps", "2", "--language-steps", "3", "--text-layers", "1"]
    )
    assert res.exit_code == 0, res.output
    assert "language model pretrained" in res.output and "held-out cosine" in res.output
    assert "held-out answers with perfect slots" in res.output and "core" in res.output
    assert (out / "language_pretrain.json").exists()
    # the recipe needs a world; on a world without relation rationales it warns
    res = CliRunner().invoke(app, ["model", "build-tiny", "--out", str(out), "--pretrained-lm"])
    assert res.exit_code == 2 and "give --world" in res.output
    res = CliRunner().invoke(
        app,
        [*args, "--vision-steps", "2", "--language-steps", "2", "--relation-steps", "1"],
    )
    assert res.exit_code == 0 and "relation rationales" in res.output, res.output
    res = CliRunner().invoke(app, [*args, "--vision-steps", "0", "--language-steps", "3"])
    assert res.exit_code == 2 and "needs the vision tower pretrained" in res.output


def test_build_tiny_annotation_vocabulary(world_dir: Path, tmp_path: Path) -> None:
    """--annotation-vocabulary makes the critique words whole tokens of the saved tokenizer;
    the default (world records only) leaves them in pieces."""
    from transformers import AutoTokenizer

    from mmrlhf.cli.main import app

    base = ["model", "build-tiny", "--world", str(world_dir), "--vision-steps", "0"]
    lengths = {}
    for flag in ("--annotation-vocabulary", "--world-vocabulary"):
        out = tmp_path / flag.strip("-")
        res = CliRunner().invoke(app, [*base, "--out", str(out), flag, "--text-layers", "1"])
        assert res.exit_code == 0, res.output
        tok = AutoTokenizer.from_pretrained(out)
        lengths[flag] = len(tok(" request declines Overall", add_special_tokens=False).input_ids)
    assert lengths["--annotation-vocabulary"] == 3
    assert lengths["--world-vocabulary"] > 6
