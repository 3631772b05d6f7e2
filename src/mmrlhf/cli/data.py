"""`mmrlhf data ...` commands: validate, convert, pairs, stats (docs/data.md, "CLI")."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from mmrlhf.data.formats import FORMATS
from mmrlhf.data.pairs import MARGINS, STRATEGIES, TIES
from mmrlhf.data.problems import DataError

app = typer.Typer(help="data commands", no_args_is_help=True)

_FORMATS = ", ".join(FORMATS)

FormatOpt = typer.Option(
    "auto", "--format", "-f", help=f"Input format: auto (from extension and keys) or {_FORMATS}."
)
MediaRootOpt = typer.Option(
    None,
    "--media-root",
    "-m",
    help="Folder that relative image/video paths point into (default: the data file's folder).",
)
NoMediaOpt = typer.Option(
    False, "--no-media-check", help="Do not check that images/videos exist and decode."
)
StrategyOpt = typer.Option(
    "all",
    "--strategy",
    help=f"How a ranking becomes pairs: {', '.join(STRATEGIES)} (all: every two responses of "
    "different rank; best_vs_rest: best group against all lower; adjacent: neighbouring groups).",
)
TiesOpt = typer.Option(
    "skip", "--ties", help=f"Tied responses: {', '.join(TIES)} (keep: add pairs flagged is_tie)."
)


def _fail(err: Exception) -> None:
    typer.echo(f"error: {err}", err=True)
    raise typer.Exit(1)


def _check_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise typer.BadParameter(
            f"must be one of {', '.join(allowed)}, got {value!r}", param_hint=name
        )


@app.command()
def validate(
    path: Path = typer.Argument(..., help="Data file to check."),
    format: str = FormatOpt,
    media_root: Path | None = MediaRootOpt,
    task: str = typer.Option(
        "preference",
        "--task",
        help="What the data is for: preference (K >= 2 and a ranking or preferences), "
        "sft (K >= 1) or prompts (no responses needed, e.g. PPO prompts).",
    ),
    no_media_check: bool = NoMediaOpt,
    json_out: Path | None = typer.Option(
        None, "--json", help="Also write the full result (problems, counts) as JSON here."
    ),
) -> None:
    """Report EVERY problem as file:line: field: message, then a summary. Exit code 1 if any."""
    from mmrlhf.data.checks import TASKS
    from mmrlhf.data.validate import validate as run

    _check_choice("--task", task, TASKS)
    result = run(
        path, format=format, media_root=media_root, task=task, check_media=not no_media_check
    )
    for line in result.lines():
        typer.echo(line)
    for notice in result.report.notices:
        typer.echo(f"note: {notice}")
    typer.echo(("OK: " if result.ok else "FAILED: ") + result.summary())
    if json_out is not None:
        from mmrlhf.data.io import atomic_write_text

        atomic_write_text(json_out, json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def convert(
    src: Path = typer.Argument(..., help="Input file."),
    dst: Path = typer.Argument(..., help="Output file (written atomically)."),
    from_: str = typer.Option("auto", "--from", help=f"Input format: auto or {_FORMATS}."),
    to: str = typer.Option(
        "auto",
        "--to",
        help="Output format: auto (.jsonl -> jsonl records, .parquet -> parquet records) or "
        "one of the writable formats: "
        + ", ".join(n for n, f in FORMATS.items() if f.can_write)
        + ".",
    ),
    media_root: Path | None = MediaRootOpt,
    embed_images: bool = typer.Option(
        False, "--embed-images", help="Read image files and store their bytes in the output."
    ),
    mode: str = typer.Option(
        "strict",
        "--mode",
        help="strict: stop at the first bad record; skip: leave bad records out (counted).",
    ),
    report: Path | None = typer.Option(
        None, "--report", help="Write the load report (counts, every problem) as JSON here."
    ),
    no_media_check: bool = NoMediaOpt,
    strategy: str = StrategyOpt,
    ties: str = TiesOpt,
    margin: str = typer.Option(
        "given",
        "--margin",
        help=f"Pair margin for pair-per-row outputs: {', '.join(MARGINS)}.",
    ),
) -> None:
    """Convert between formats (our records, MM-RLHF, RLAIF-V, LLaVA-RLHF, TRL, LLaMA-Factory,
    ms-swift). Pair-per-row outputs use --strategy/--ties/--margin."""
    from mmrlhf.data.io import load_records, save_records

    _check_choice("--mode", mode, ("strict", "skip"))
    _check_choice("--strategy", strategy, STRATEGIES)
    _check_choice("--ties", ties, TIES)
    _check_choice("--margin", margin, MARGINS)
    root = media_root if media_root is not None else src.parent
    try:
        records, rep = load_records(
            src,
            format=from_,
            media_root=root,
            mode=mode,
            check_media=not no_media_check,
            report_path=report,
        )
        n = save_records(
            records,
            dst,
            format=to,
            media_root=root,
            embed_images=embed_images,
            strategy=strategy,
            ties=ties,
            margin=margin,
        )
    except DataError as e:
        _fail(e)
    for p in rep.problems:
        typer.echo(f"skipped: {p}", err=True)
    typer.echo(f"{rep.summary()}; wrote {n} rows to {dst}")


@app.command()
def pairs(
    src: Path = typer.Argument(..., help="Input file (any readable format)."),
    dst: Path = typer.Argument(..., help="Output pair JSONL (MM-RLHF pair columns plus ours)."),
    strategy: str = StrategyOpt,
    ties: str = TiesOpt,
    margin: str = typer.Option(
        "none",
        "--margin",
        help=f"Margin per pair: {', '.join(MARGINS)} (rank: rank gap; scores: mean score "
        "difference; reward: cached reward difference; given: stored pair margin).",
    ),
    from_: str = typer.Option("auto", "--from", help=f"Input format: auto or {_FORMATS}."),
    media_root: Path | None = MediaRootOpt,
    no_media_check: bool = NoMediaOpt,
) -> None:
    """Derive preference pairs and write them one per line; `load_records` reads the file
    back, grouping rows into one record per query."""
    from mmrlhf.data.io import load_records, save_records

    _check_choice("--strategy", strategy, STRATEGIES)
    _check_choice("--ties", ties, TIES)
    _check_choice("--margin", margin, MARGINS)
    try:
        records, rep = load_records(
            src, format=from_, media_root=media_root, check_media=not no_media_check
        )
        n = save_records(
            records, dst, format="mmrlhf_pairs", strategy=strategy, ties=ties, margin=margin
        )
    except DataError as e:
        _fail(e)
    typer.echo(f"{len(records)} records -> {n} pairs written to {dst}")


@app.command()
def stats(
    path: Path = typer.Argument(..., help="Data file."),
    format: str = FormatOpt,
    json_out: Path | None = typer.Option(None, "--json", help="Also write the stats as JSON."),
) -> None:
    """Counts, length histograms, score distributions, ranking/tie and category stats.
    Media are not checked; bad records are skipped and counted."""
    from mmrlhf.data.io import atomic_write_text, load_records
    from mmrlhf.data.stats import compute_stats, print_stats

    try:
        records, rep = load_records(path, format=format, mode="skip", check_media=False)
    except DataError as e:
        _fail(e)
    s = compute_stats(records)
    s["load"] = {
        "records_ok": rep.records_ok,
        "records_bad": rep.records_bad,
        "problems": rep.counts,
    }
    print_stats(s)
    if rep.records_bad:
        typer.echo(
            f"note: {rep.records_bad} bad records skipped ({rep.counts}); "
            "run `mmrlhf data validate` for details"
        )
    if json_out is not None:
        atomic_write_text(json_out, json.dumps(s, indent=2, ensure_ascii=False) + "\n")
