from dataclasses import dataclass
from pathlib import Path

import pytest

from mmrlhf.config import ConfigError, load_config, opt, parse_overrides, sub
from mmrlhf.training.sft import SFTConfig

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Inner:
    lr: float = opt(1e-3, "learning rate")
    names: list[str] = opt(["a"], "names")


@dataclass
class Outer:
    inner: Inner = sub(Inner)
    steps: int = opt(10, "steps")
    tag: str | None = opt(None, "optional tag")

    def validate(self) -> list[str]:
        return ["steps must be positive"] if self.steps <= 0 else []


def test_overrides_are_typed_and_nested():
    assert parse_overrides(["inner.lr=0.5", "steps=3", "inner.names=[x, y]"]) == {
        "inner": {"lr": 0.5, "names": ["x", "y"]},
        "steps": 3,
    }
    cfg = load_config(Outer, None, ["inner.lr=1", "tag=abc"])
    assert cfg.inner.lr == 1.0 and isinstance(cfg.inner.lr, float) and cfg.tag == "abc"
    assert cfg.inner.names == ["a"] and Outer().inner.names is not cfg.inner.names


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("steps: 5\ninner:\n  lr: 0.1\n")
    cfg = load_config(Outer, f, ["steps=7"])
    assert (cfg.steps, cfg.inner.lr) == (7, 0.1)


def test_yes_no_on_off_stay_words(tmp_path):
    # YAML 1.1 would read these as booleans: `train.mixed_precision=no` failed with "expected
    # str, got False". Only true/false are booleans here, in files and overrides alike.
    assert parse_overrides(["tag=no", "a=off", "b=yes", "c=true", "d=False"]) == {
        "tag": "no",
        "a": "off",
        "b": "yes",
        "c": True,
        "d": False,
    }
    assert load_config(Outer, None, ["tag=no"]).tag == "no"
    f = tmp_path / "c.yaml"
    f.write_text("tag: on\n")
    assert load_config(Outer, f).tag == "on"
    assert (
        load_config(
            SFTConfig, None, ["train.mixed_precision=no", "model.path=m", "data.train=d"]
        ).train.mixed_precision
        == "no"
    )


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["inner.lrr=1"], "inner.lrr: unknown key; valid keys here: lr, names"),
        (["steps=abc"], "steps: expected int, got 'abc'"),
        (["steps=true"], "steps: expected int"),
        (["steps=0"], "steps must be positive"),
        (["inner=3"], "inner: expected a section"),
        (["steps"], "expected key=value"),
    ],
)
def test_bad_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(Outer, None, overrides)


def test_bad_file_is_named(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("inner:\n  lr: [1, 2]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: inner.lr: expected float"):
        load_config(Outer, f)


def _config_class(path):
    """The recipe a shipped config belongs to, by its file name."""
    if path.name.startswith("dpo"):
        from mmrlhf.training.dpo import DPOConfig

        return DPOConfig
    if path.name.startswith("rm"):
        from mmrlhf.training.reward import RewardConfig

        return RewardConfig
    return SFTConfig


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_parses(path):
    if path.parent.name == "accelerate":
        import yaml

        assert yaml.safe_load(path.read_text())["distributed_type"]
        return
    cfg = load_config(_config_class(path), path, ["model.path=m", "data.train=t"])
    assert cfg.train.lr > 0


def test_pretrained_lm_sft_config_is_sft_yaml_at_the_demos_lower_lr():
    """configs/world/sft_pretrained_lm.yaml is what the demo runs for a pretrained tiny LM
    (sft.yaml + train.lr=PRETRAINED_LM_SFT_LR): the two must not drift apart."""
    from mmrlhf.demo import PRETRAINED_LM_SFT_LR

    paths = ["model.path=m", "data.train=t", "train.output_dir=o"]
    shipped = load_config(SFTConfig, ROOT / "configs/world/sft_pretrained_lm.yaml", paths)
    demo = load_config(
        SFTConfig, ROOT / "configs/world/sft.yaml", [*paths, f"train.lr={PRETRAINED_LM_SFT_LR}"]
    )
    assert shipped == demo
