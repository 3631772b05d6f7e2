"""`mmrlhf world ...` commands: generate the shapes world and inspect a generated one."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from mmrlhf.data.record import Record
    from mmrlhf.world.generate import World

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
    companion_rate: float = typer.Option(
        0.8,
        "--companion-rate",
        min=0.0,
        max=1.0,
        help="How often a training description adds its environment's typical object (meadow: "
        "yellow circle, ocean: white circle, snowfield: blue cross) when the scene lacks it.",
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
    relation_rationale: bool = typer.Option(
        False,
        "--relation-rationale",
        help="Relation answers place both objects before comparing them ('The X is at the top "
        "left and the Y is on the right, so the X is left of the Y.').",
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
            companion_rate=companion_rate,
            questions_per_scene=questions_per_scene,
            glyph_prob=glyph_prob,
            max_objects=max_objects,
            relation_rationale=relation_rationale,
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


@app.command()
def annotate(
    world_dir: Path = typer.Option(..., "--world", help="A generated world directory."),
    split: str = typer.Option(
        "train",
        "--split",
        help="train: the SFT questions (training preference data, default file "
        "annotated_train.jsonl); test: the held-out questions and safety items (the reward "
        "bench, default file rewardbench_test.jsonl).",
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Output JSONL (default: inside the world directory, see --split)."
    ),
    n_queries: int | None = typer.Option(
        None, "--n-queries", min=1, help="Annotate a seeded sample of this many queries."
    ),
    k: int = typer.Option(4, "--k", min=2, help="Candidate responses per query."),
    safety_share: float | None = typer.Option(
        None,
        "--safety-share",
        min=0.0,
        max=1.0,
        help="train only: make this share of the queries safety queries (harmful requests and "
        "benign look-alikes; the SFT corpus has ~3%, the reward bench ~1/3), topping up with "
        "new ones on training scenes. Default: the corpus's own mix.",
    ),
    noise: float | None = typer.Option(
        None,
        "--noise",
        min=0.0,
        max=1.0,
        help="Annotator noise: probability of moving each score by +-1 and of swapping two "
        "adjacent ranks (default 0.1 for train, 0 for test).",
    ),
    annotators: int = typer.Option(
        3,
        "--annotators",
        min=1,
        help="Simulated annotators per query (the first one's labels "
        "go on the record, all of them into meta.annotators).",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of every random choice."),
    no_truth: bool = typer.Option(
        False, "--no-truth", help="Do not force the reference answer into every query."
    ),
    critique_order: str = typer.Option(
        "reason_first",
        "--critique-order",
        help="reason_first (MM-RLHF: reasons, then the verdict) or verdict_first (the verdict "
        "sentence first; better for a critique RM that generates its critique).",
    ),
    quote_question: bool = typer.Option(
        True,
        "--quote-question/--no-quote-question",
        help="Restate the question in each critique (MM-RLHF's style) or open with the "
        "judgement (easier for a small critique RM to write).",
    ),
    states_claim: bool = typer.Option(
        False,
        "--critique-states-claim/--critique-judges-first",
        help="Short answers: the critique repeats the response's value before judging it "
        '("answers 2, which is right: ...") instead of opening with the judgement.',
    ),
    states_reference: bool = typer.Option(
        False,
        "--critique-states-reference",
        help="With --critique-states-claim: the true answer's value beside the claim "
        '("answers 4, the reference answers 2, so it is wrong: ..."), for the '
        "reference-guided critique RM.",
    ),
    weight: list[str] = typer.Option(
        [],
        "--weight",
        help="SOURCE=W: draw weight of one candidate source (repeatable; 0 turns it off), e.g. "
        "--weight false_denial=0 --weight model=3. Sources: the corruption names "
        "(wrong_count ... unsafe_compliance, false_denial), model (every --model sample) and "
        "model_corrected (a --model description with its hallucinations corrected).",
    ),
    model: str | None = typer.Option(
        None, "--model", help="Optional model directory: its samples join the candidates."
    ),
    temperatures: str = typer.Option(
        "0.7,1.0", "--temperatures", help="Comma-separated sampling temperatures for --model."
    ),
    samples_per_temperature: int = typer.Option(
        1, "--samples-per-temperature", min=1, help="Samples per query and temperature."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Generation batch size."),
    max_new_tokens: int = typer.Option(
        96, "--max-new-tokens", min=1, help="Longest model sample, in tokens."
    ),
) -> None:
    """Build MM-RLHF-style fine-grained preference data for a world: K candidates per query
    (truth, controlled corruptions, optional model samples), scored 1-5 on helpfulness,
    faithfulness and ethics with reasons, ranked with ties, with critiques; prints counts,
    pair counts and annotator agreement."""
    import os
    from collections import Counter

    from mmrlhf.data.io import save_records
    from mmrlhf.data.pairs import derive_pairs
    from mmrlhf.world.annotate import (
        AnnotateConfig,
        agreement_stats,
        annotate_records,
        annotation_queries,
        count_empty_answers,
        parse_weights,
    )
    from mmrlhf.world.generate import load_world

    if split not in ("train", "test"):
        raise typer.BadParameter(f"--split must be train or test, got {split!r}")
    try:
        world = load_world(world_dir)
    except FileNotFoundError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(1) from None
    if noise is None:
        noise = 0.1 if split == "train" else 0.0
    try:
        weights = parse_weights(weight)
        cfg = AnnotateConfig(
            weights=weights,
            k=k,
            noise=noise,
            annotators=annotators,
            seed=seed,
            include_truth=not no_truth,
            critique_order=critique_order,
            critique_quotes_question=quote_question,
            critique_states_claim=states_claim,
            critique_states_reference=states_reference,
        )
        temps = [float(t) for t in temperatures.split(",") if t.strip()]
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    t0 = time.perf_counter()
    try:
        queries = annotation_queries(world, split, n_queries, seed, safety_share)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--safety-share") from None
    model_answers = None
    if model is not None:
        model_answers = _model_samples(
            model, world, queries, temps, samples_per_temperature, seed, batch_size, max_new_tokens
        )
    records = annotate_records(queries, world, cfg, model_answers)
    dt = time.perf_counter() - t0
    if model_answers and (empty := count_empty_answers(model_answers)):
        n = sum(map(len, model_answers.values()))
        typer.echo(f"{empty} of {n} model samples empty: not candidates")
    default = "annotated_train.jsonl" if split == "train" else "rewardbench_test.jsonl"
    out = out or world.root / default
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.parent.resolve() != world.root.resolve():  # keep image paths valid from out's folder
        for r in records:
            for im in r.images:
                if im.path and not os.path.isabs(im.path):
                    im.path = os.path.relpath(world.root / im.path, out.parent)
    save_records(records, out, format="jsonl")
    pairs = [p for r in records for p in derive_pairs(r, ties="keep")]
    ties = sum(p.is_tie for p in pairs)
    typer.echo(
        f"wrote {out}: {len(records)} records ({len(queries) - len(records)} of "
        f"{len(queries)} queries dropped: no pair), "
        f"{sum(r.k for r in records)} responses, {len(pairs) - ties} pairs (+{ties} tie "
        f"pairs) in {dt:.1f}s"
    )
    cats = Counter(r.category for r in records)
    typer.echo("  categories: " + ", ".join(f"{c} {n}" for c, n in sorted(cats.items())))
    srcs = Counter(x.source for r in records for x in r.responses)
    typer.echo("  sources: " + ", ".join(f"{s} {n}" for s, n in srcs.most_common()))
    stats = agreement_stats(records)
    typer.echo("  agreement: " + json.dumps(stats))


def _model_samples(
    path: str,
    world: World,
    queries: list[Record],
    temps: list[float],
    samples: int,
    seed: int,
    batch_size: int,
    max_new_tokens: int,
) -> dict[str, list[tuple[str, str]]]:
    """Sampled answers of a model, ``{record id: [("model@T", text), ...]}`` (seeded)."""
    from mmrlhf.evaluation.generate import generate_answers
    from mmrlhf.models.load import ModelConfig, load_vlm

    vlm, processor = load_vlm(ModelConfig(path=path), for_training=False)
    out: dict[str, list[tuple[str, str]]] = {}
    for t in temps:
        for s in range(samples):
            answers = generate_answers(
                vlm,
                processor,
                queries,
                media_root=world.root,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                temperature=t,
                seed=seed * 1000 + s,
            )
            for rid, text in answers.items():
                out.setdefault(rid, []).append((f"model@{t:g}", text))
    return out
