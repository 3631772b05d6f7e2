"""`mmrlhf world ...` commands: generate the shapes world and inspect a generated one."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import typer

app = typer.Typer(help="world commands", no_args_is_help=True)

# Option defaults repeat WorldConfig's (typer needs literals for --help); a test keeps them equal.


@app.command()
def generate(
    out: Path = typer.Option(..., "--out", help="Directory to write the world into."),
    n: int = typer.Option(2000, "--n", min=1, help="Number of scenes (train + test)."),
    seed: int = typer.Option(0, "--seed", help="Seed: the same seed gives byte-identical files."),
    test_fraction: float = typer.Option(
        0.1,
        "--test-fraction",
        min=0.0,
        max=0.99,
        help="Share of scenes held out as the test split (their questions: eval_test.jsonl).",
    ),
    image_size: int = typer.Option(
        72, "--image-size", min=16, help="Image side in pixels (keep it a multiple of 8 and 3)."
    ),
    hallucination_rate: float = typer.Option(
        0.3,
        "--hallucination-rate",
        min=0.0,
        max=1.0,
        help="Share of training descriptions that get one hallucinated object or attribute.",
    ),
    questions_per_scene: int = typer.Option(
        4, "--questions-per-scene", min=1, help="Questions (records) asked per scene."
    ),
    glyph_prob: float = typer.Option(
        0.4, "--glyph-prob", min=0.0, max=1.0, help="Probability that a scene has a digit."
    ),
    max_objects: int = typer.Option(
        4, "--max-objects", min=1, max=8, help="Most objects per scene (at least one)."
    ),
) -> None:
    """Generate the shapes world: images, scenes.jsonl, sft_train.jsonl, eval_test.jsonl,
    pope_test.jsonl, safety_test.jsonl, world.json.

    Scenes are 1..max-objects coloured shapes (and sometimes a digit) on a textured background,
    on a 3x3 grid. sft_train.jsonl holds one-response records over nine question families with
    noisy descriptions (and a few safety records); eval_test.jsonl holds clean questions about
    the held-out scenes, pope_test.jsonl POPE probes and safety_test.jsonl harmful requests and
    benign look-alikes about them.
    """
    from mmrlhf.world.config import WorldConfig
    from mmrlhf.world.generate import generate as _generate

    try:
        cfg = dataclasses.replace(
            WorldConfig(),
            test_fraction=test_fraction,
            image_size=image_size,
            hallucination_rate=hallucination_rate,
            questions_per_scene=questions_per_scene,
            glyph_prob=glyph_prob,
            max_objects=max_objects,
        )
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    t0 = time.perf_counter()
    world = _generate(out, n=n, seed=seed, config=cfg)
    dt = time.perf_counter() - t0
    c = world.info["counts"]
    typer.echo(
        f"wrote {out}: {c['scenes']['train']} train / {c['scenes']['test']} test scenes, "
        f"{c['sft_records']} SFT records ({c['sft_noisy_descriptions']} of "
        f"{c['sft_descriptions']} descriptions noisy), {c['eval_records']} eval records, "
        f"{c['pope_records']} POPE probes, {c['safety_records']} safety items in {dt:.1f}s"
    )


@app.command()
def info(
    path: Path = typer.Argument(..., help="A generated world directory."),
    as_json: bool = typer.Option(False, "--json", help="Print counts as JSON."),
) -> None:
    """Show a generated world's seed, counts per split and family, and vocabulary size."""
    from mmrlhf.world.generate import load_world

    try:
        world = load_world(path, records=False)
    except FileNotFoundError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None
    c = world.info["counts"]
    if as_json:
        typer.echo(json.dumps({"seed": world.seed, "n": world.info["n"], **c}, indent=1))
        return
    typer.echo(f"world {path}: seed {world.seed}, {world.info['n']} scenes")
    typer.echo(f"  scenes: {c['scenes']['train']} train, {c['scenes']['test']} test")
    typer.echo(f"  sft_train.jsonl: {c['sft_records']} records")
    for fam, k in c["sft_families"].items():
        typer.echo(f"    {fam:12s} {k}")
    typer.echo(f"  noisy descriptions: {c['sft_noisy_descriptions']} of {c['sft_descriptions']}")
    typer.echo(f"  eval_test.jsonl: {c['eval_records']} records")
    for fam, k in c["eval_families"].items():
        typer.echo(f"    {fam:12s} {k}")
    if "pope_records" in c:  # worlds generated before the POPE and safety sets lack them
        splits = ", ".join(f"{k} {v}" for k, v in c["pope_splits"].items())
        typer.echo(f"  pope_test.jsonl: {c['pope_records']} probes ({splits})")
        kinds = ", ".join(f"{k} {v}" for k, v in c["safety_kinds"].items())
        typer.echo(f"  safety_test.jsonl: {c['safety_records']} items ({kinds})")
    typer.echo(f"  vocabulary: {len(world.info['vocabulary'])} tokens")
