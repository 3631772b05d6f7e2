"""``mmrlhf train ...``: one command per recipe, each configured by a typed config."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from mmrlhf.config import ConfigError, describe, load_config, to_yaml

app = typer.Typer(help="Training recipes.", no_args_is_help=True)


def _config_epilog(cls: type) -> str:
    rows = describe(cls)
    return "Config keys (YAML or key=value overrides):\n\n" + "\n\n".join(
        f"{k} = {d}: {h}" for k, d, h in rows
    )


def _sft_epilog() -> str:
    from mmrlhf.training.sft import SFTConfig

    return _config_epilog(SFTConfig)


@app.command("sft", epilog=_sft_epilog())
def sft(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config file (see configs/)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. train.lr=1e-4."),
    resume: str = typer.Option(
        None, "--resume", help="Checkpoint folder to resume from, or 'auto' for the newest one."
    ),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved config and exit."
    ),
) -> None:
    """Supervised fine-tuning of a vision-language model (response tokens only)."""
    from mmrlhf.training.sft import SFTConfig, run_sft

    try:
        cfg = load_config(SFTConfig, config, overrides or [])
    except ConfigError as e:
        typer.echo(f"config error: {e}", err=True)
        raise typer.Exit(2) from None
    if print_config:
        typer.echo(to_yaml(cfg))
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(cfg.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(to_yaml(cfg))
    summary = run_sft(cfg, resume=resume)
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    typer.echo(
        f"final model: {summary['final']}  (steps {summary['steps']}, last loss {summary['losses'][-1]:.4f})"
    )


def _dpo_epilog() -> str:
    from mmrlhf.training.dpo import DPOConfig

    return _config_epilog(DPOConfig)


@app.command("dpo", epilog=_dpo_epilog())
def dpo(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config file (see configs/)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. loss.w=0.5."),
    resume: str = typer.Option(
        None, "--resume", help="Checkpoint folder to resume from, or 'auto' for the newest one."
    ),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved config and exit."
    ),
) -> None:
    """MM-DPO (DPO with dynamic reward scaling; loss.w=0 is plain DPO) on preference records."""
    from mmrlhf.training.dpo import DPOConfig, run_dpo

    try:
        cfg = load_config(DPOConfig, config, overrides or [])
    except ConfigError as e:
        typer.echo(f"config error: {e}", err=True)
        raise typer.Exit(2) from None
    if print_config:
        typer.echo(to_yaml(cfg))
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(cfg.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(to_yaml(cfg))
    try:
        summary = run_dpo(cfg, resume=resume)
    except ValueError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    typer.echo(
        f"final model: {summary['final']}  (steps {summary['steps']}, "
        f"last loss {summary['losses'][-1]:.4f}, reference log-probs computed {summary['ref_computed']})"
    )


def _rm_epilog() -> str:
    from mmrlhf.training.reward import RewardConfig

    return _config_epilog(RewardConfig)


@app.command("rm", epilog=_rm_epilog())
def rm(
    config: Path = typer.Option(None, "--config", "-c", help="YAML config file (see configs/)."),
    overrides: list[str] = typer.Argument(None, help="Dotted overrides, e.g. train.lr=1e-4."),
    rm_type: str = typer.Option(
        None, "--type", help="Reward model type: scalar, fact or critique (same as rm.type=...)."
    ),
    resume: str = typer.Option(
        None, "--resume", help="Checkpoint folder to resume from, or 'auto' for the newest one."
    ),
    print_config: bool = typer.Option(
        False, "--print-config", help="Print the resolved config and exit."
    ),
) -> None:
    """Train a reward model (scalar, factually augmented or critique-based) on preference data."""
    from mmrlhf.training.reward import RewardConfig, run_reward

    extra = [f"rm.type={rm_type}"] if rm_type else []
    try:
        cfg = load_config(RewardConfig, config, [*(overrides or []), *extra])
    except ConfigError as e:
        typer.echo(f"config error: {e}", err=True)
        raise typer.Exit(2) from None
    if print_config:
        typer.echo(to_yaml(cfg))
        return
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = Path(cfg.train.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(to_yaml(cfg))
    try:
        summary = run_reward(cfg, resume=resume)
    except ValueError as e:  # bad data (RecordError, DataError, no usable records): no traceback
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    acc = summary["accuracies"][-1]
    ev = f", eval pair acc {summary['eval_pair_acc']:.3f}" if "eval_pair_acc" in summary else ""
    typer.echo(
        f"final reward model: {summary['final']}  (steps {summary['steps']}, last loss "
        f"{summary['losses'][-1]:.4f}, pair acc {acc:.3f}{ev})"
    )
