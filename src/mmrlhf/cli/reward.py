"""``mmrlhf reward ...``: use a trained reward model."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

app = typer.Typer(help="Reward models: score preference data.", no_args_is_help=True)

MODE_HELP = (
    "Critique RM: generate (greedy or --beams critique, default), sample (mean over --samples sampled "
    "critiques), given (the data's critiques) or none (empty critique). Ignored by other RMs."
)


REFERENCE_HELP = (
    "Reference-guided critique RM: its reference answer is generated (its own, greedy) or given "
    "(the record's best-ranked response, an oracle)."
)
REFERENCE_MODEL_HELP = (
    "Reference-guided critique RM: this model (e.g. the SFT policy) writes the generated "
    "references instead of the RM."
)


def reference_writer(path: Path | None, device: str) -> tuple[object, object] | None:
    """``(vlm, processor)`` of ``--reference-model`` (None: the RM writes its own)."""
    if path is None:
        return None
    from mmrlhf.models.load import ModelConfig, load_vlm

    return load_vlm(ModelConfig(path=str(path), device=device), for_training=False)


@app.command("score")
def score(
    data: Path = typer.Argument(..., help="Preference records (any supported format)."),
    rm: Path = typer.Option(..., "--rm", help="Reward model folder (mmrlhf train rm's final/)."),
    out: Path = typer.Option(..., "--out", help="Output records JSONL (resumed if it exists)."),
    mode: str = typer.Option(None, "--mode", help=MODE_HELP),
    samples: int = typer.Option(4, "--samples", min=1, help="Critiques per response (sample)."),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="Sampling temperature."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1, help="Longest critique."),
    beams: int = typer.Option(
        1, "--beams", min=1, help="Critique RM, mode generate: beam search over this many beams."
    ),
    length_penalty: float = typer.Option(
        1.0, "--length-penalty", help="Beam search: score = sum log p / length**this."
    ),
    reference: str = typer.Option("generate", "--reference", help=REFERENCE_HELP),
    reference_model: Path = typer.Option(None, "--reference-model", help=REFERENCE_MODEL_HELP),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Responses per forward."),
    media_root: Path = typer.Option(
        None, "--media-root", help="Folder image paths are relative to (default: DATA's folder)."
    ),
    pairs: str = typer.Option(
        "all", "--pairs", help="Pairs of ranked records: all, best_vs_rest, adjacent."
    ),
    seed: int = typer.Option(0, "--seed", help="Sampling seed."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Write Response.reward for every response and Preference.margin = r_chosen - r_rejected."""
    from mmrlhf.data.io import load_records
    from mmrlhf.models.reward import RewardModel
    from mmrlhf.reward.score import score_records

    logging.basicConfig(level=logging.WARNING)
    try:
        records, _ = load_records(data, media_root=media_root)
        model = RewardModel.from_pretrained(rm, device=device)
        writer = reference_writer(reference_model, device)
        out.parent.mkdir(parents=True, exist_ok=True)
        scored = score_records(
            model,
            model.processor,
            records,
            mode=mode,
            n_samples=samples,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            num_beams=beams,
            length_penalty=length_penalty,
            reference=reference,
            reference_model=writer,
            batch_size=batch_size,
            media_root=media_root or data.parent,
            pair_strategy=pairs,
            seed=seed,
            out_path=out,
            progress=progress,
        )
    except (ValueError, FileNotFoundError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"scored {len(scored)} records -> {out}")
