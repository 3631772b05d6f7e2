"""``mmrlhf demo``: the whole pipeline on the embedded shapes world."""

from __future__ import annotations

from pathlib import Path

import typer


def demo(
    out: Path = typer.Option(
        Path("mmrlhf_out/demo"), "--out", help="Output folder (stages are cached here)."
    ),
    n: int = typer.Option(2000, "--n", help="Number of world scenes (train + test)."),
    seed: int = typer.Option(0, "--seed", help="Seed for the world, the model and training."),
    sft_config: Path = typer.Option(
        None, "--sft-config", help="SFT config (default: configs/world/sft.yaml)."
    ),
    overrides: list[str] = typer.Argument(
        None, help="SFT config overrides, e.g. train.max_steps=100."
    ),
) -> None:
    """Run the main job: world -> tiny VLM -> SFT -> held-out check; prints where outputs are."""
    from mmrlhf.demo import DemoSettings, run_demo

    run_demo(
        DemoSettings(
            out=out, n_scenes=n, seed=seed, sft_config=sft_config, overrides=tuple(overrides or ())
        )
    )
