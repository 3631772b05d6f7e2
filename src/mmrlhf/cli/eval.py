"""``mmrlhf eval ...``: run the evaluation suite, score existing answers, compare runs."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import typer

from mmrlhf.cli.reward import REFERENCE_HELP, REFERENCE_MODEL_HELP, reference_writer

app = typer.Typer(
    help="Evaluation: generate + score, re-score answer files, compare runs.", no_args_is_help=True
)
score_app = typer.Typer(help="Score existing answer files (no generation).", no_args_is_help=True)
app.add_typer(score_app, name="score")

JUDGE_HELP = (
    "Judge: 'rule' (exact, world only), 'api' (OpenAI-compatible server) or 'local' (model path)."
)


def make_judge(
    kind: str,
    *,
    world_config: Any = None,
    url: str | None = None,
    model: str | None = None,
    path: Path | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    cache: Path | None = None,
    concurrency: int = 8,
) -> Any:
    """Build a judge from CLI options, with a clear error when an option it needs is missing."""
    if kind == "rule":
        from mmrlhf.evaluation.judges.rule import RuleJudge

        return RuleJudge(world_config)
    if kind == "api":
        if not url or not model:
            raise typer.BadParameter("--judge api needs --judge-url and --judge-model")
        from mmrlhf.evaluation.judges.api import ApiJudge

        return ApiJudge(
            url, model, api_key_env=api_key_env, cache_path=cache, max_concurrency=concurrency
        )
    if kind == "local":
        if path is None:
            raise typer.BadParameter("--judge local needs --judge-path (a model folder)")
        from mmrlhf.evaluation.judges.local import LocalJudge

        return LocalJudge(str(path))
    raise typer.BadParameter(f"unknown judge {kind!r}; choose rule, api or local")


@contextmanager
def _clear_errors() -> Iterator[None]:
    """Bad input (a malformed file, an unknown id, a missing answer) ends the command with its
    message and exit code 2 instead of a traceback."""
    try:
        yield
    except (ValueError, FileNotFoundError, KeyError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def _fail(message: str) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _read_answers(path: Path) -> dict[str, str]:
    """``{id: answer}`` from a JSONL answers file (``{"id": ..., "answer": ...}`` per line)."""
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            _fail(f"{path}:{n}: not JSON ({e.msg})")
        for field in ("id", "answer"):
            if field not in row:
                _fail(f"{path}:{n}: {field}: missing")
        if not isinstance(row["answer"], str):
            _fail(f"{path}:{n}: answer: expected a string")
        out[str(row["id"])] = row["answer"]
    return out


def _print_metrics(metrics: dict[str, Any], keys: tuple[str, ...] | None = None) -> None:
    from mmrlhf.evaluation.report import HEADLINE

    keys = keys or tuple(k for k in HEADLINE if k in metrics)
    for k in keys:
        v = metrics[k]
        typer.echo(f"  {k:28s} {v:.4f}" if isinstance(v, float) else f"  {k:28s} {v}")


@app.command("run")
def run(
    model: Path = typer.Argument(..., help="Model folder (save_pretrained layout) to evaluate."),
    suite: str = typer.Option("world", "--suite", help="Suite to run (world)."),
    world: Path = typer.Option(..., "--world", help="Generated shapes world folder."),
    out: Path = typer.Option(None, "--out", help="Output folder (default: MODEL/eval)."),
    name: str = typer.Option(None, "--name", help="Run name in reports (default: folder name)."),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Generation batch size."),
    max_new_tokens: int = typer.Option(96, "--max-new-tokens", min=1, help="Longest answer."),
    temperature: float = typer.Option(0.0, "--temperature", min=0.0, help="0 = greedy."),
    seed: int = typer.Option(0, "--seed", help="Sampling seed (and the RefoMB reference's)."),
    limit: int = typer.Option(None, "--limit", min=1, help="Keep the first N items of each set."),
    device: str = typer.Option("cpu", "--device", help="Device for the model."),
    judge: str = typer.Option("rule", "--judge", help=JUDGE_HELP),
    second_judge: str = typer.Option(
        None, "--second-judge", help="Another judge rated on the same answers (agreement report)."
    ),
    judge_url: str = typer.Option(None, "--judge-url", help="API judge base URL (…/v1)."),
    judge_model: str = typer.Option(None, "--judge-model", help="API judge model name."),
    judge_path: Path = typer.Option(None, "--judge-path", help="Local judge model folder."),
    judge_cache: Path = typer.Option(
        None,
        "--judge-cache",
        help="SQLite cache of API judge replies (default: OUT/judge_cache.sqlite).",
    ),
    api_key_env: str = typer.Option(
        "OPENAI_API_KEY", "--api-key-env", help="Environment variable holding the API key."
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Generate answers to a suite and score them: metrics.json, report.html, report.md."""
    from mmrlhf.evaluation.suite import run_world_suite
    from mmrlhf.models.load import ModelConfig, load_vlm
    from mmrlhf.world.generate import load_world

    if suite != "world":
        raise typer.BadParameter(f"unknown suite {suite!r} (available: world)")
    logging.basicConfig(level=logging.WARNING)
    out = out or model / "eval"
    w = load_world(world)
    kw = dict(
        world_config=w.config,
        url=judge_url,
        model=judge_model,
        path=judge_path,
        api_key_env=api_key_env,
        cache=judge_cache or out / "judge_cache.sqlite",
    )
    j = make_judge(judge, **kw)
    j2 = make_judge(second_judge, **kw) if second_judge else None
    m, proc = load_vlm(ModelConfig(path=str(model), device=device), for_training=False)
    metrics = run_world_suite(
        m,
        proc,
        w,
        out,
        judge=j,
        second_judge=j2,
        name=name or model.name,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        limit=limit,
        progress=progress,
    )
    _print_metrics(metrics)
    typer.echo(f"outputs: {out}/metrics.json, {out}/report.html, {out}/report.md")


@score_app.command("world")
def score_world_cmd(
    answers: Path = typer.Option(..., "--answers", help="answers.jsonl ({id, answer} per line)."),
    world: Path = typer.Option(..., "--world", help="Generated shapes world folder."),
    out: Path = typer.Option(..., "--out", help="Output folder."),
    name: str = typer.Option("model", "--name", help="Run name in the report."),
    seed: int = typer.Option(0, "--seed", help="Seed of the RefoMB reference answers."),
    judge: str = typer.Option("rule", "--judge", help=JUDGE_HELP),
    second_judge: str = typer.Option(None, "--second-judge", help="Second judge (agreement)."),
    judge_url: str = typer.Option(None, "--judge-url", help="API judge base URL."),
    judge_model: str = typer.Option(None, "--judge-model", help="API judge model name."),
    judge_path: Path = typer.Option(None, "--judge-path", help="Local judge model folder."),
    judge_cache: Path = typer.Option(None, "--judge-cache", help="API judge cache file."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="API key variable."),
) -> None:
    """Score a world answers file with the whole world suite (no generation)."""
    from mmrlhf.evaluation.suite import score_world, write_outputs
    from mmrlhf.world.generate import load_world

    w = load_world(world)
    kw = dict(
        world_config=w.config,
        url=judge_url,
        model=judge_model,
        path=judge_path,
        api_key_env=api_key_env,
        cache=judge_cache or out / "judge_cache.sqlite",
    )
    j = make_judge(judge, **kw)
    j2 = make_judge(second_judge, **kw) if second_judge else None
    metrics = score_world(
        w, _read_answers(answers), j, second_judge=j2, seed=seed, out_dir=out, name=name
    )
    write_outputs(out, metrics, name, j)
    _print_metrics(metrics)
    typer.echo(f"outputs: {out}/metrics.json, {out}/report.html")


@app.command("compare")
def compare(
    runs: list[Path] = typer.Argument(..., help="Eval output folders (each with metrics.json)."),
    out: Path = typer.Option(
        Path("mmrlhf_out/compare"), "--out", help="Where to write the report."
    ),
    names: str = typer.Option(
        None, "--names", help="Comma-separated run names (default: folder names)."
    ),
    title: str = typer.Option("mmrlhf: runs compared", "--title", help="Report title."),
) -> None:
    """Put several evaluation runs side by side: compare.html (plots, table, examples) + compare.md."""
    from mmrlhf.evaluation.report import load_run, write_report

    labels = (
        names.split(",") if names else [p.name if p.name != "eval" else p.parent.name for p in runs]
    )
    if len(labels) != len(runs):
        raise typer.BadParameter(f"--names gives {len(labels)} names for {len(runs)} runs")
    if len(set(labels)) != len(labels):
        labels = [f"{i}:{lab}" for i, lab in enumerate(labels)]
    metrics, merged = {}, {}
    for label, path in zip(labels, runs, strict=True):
        m, examples = load_run(path)
        metrics[label] = m
        for ex in examples:
            slot = merged.setdefault(ex["id"], {**ex, "answers": {}})
            for a in ex["answers"].values():
                slot["answers"][label] = a
    html_path, md_path = write_report(
        out, metrics, title=title, examples=list(merged.values()), stem="compare"
    )
    typer.echo(Path(md_path).read_text())
    typer.echo(f"report: {html_path}")


def _write(
    out: Path | None, metrics: dict[str, Any], rows: list[dict[str, Any]] | None = None
) -> None:
    if out is None:
        return
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, sort_keys=True))
    if rows is not None:
        with open(out / "judgements.jsonl", "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    typer.echo(f"metrics: {out / 'metrics.json'}")


def _echo_all(metrics: dict[str, Any]) -> None:
    _print_metrics(metrics, tuple(metrics))


@score_app.command("pope")
def score_pope_cmd(
    data: Path = typer.Option(
        ..., "--data", help="POPE file (coco_pope_{random,popular,adversarial}.jsonl)."
    ),
    answers: Path = typer.Option(
        ..., "--answers", help="JSONL {id: question_id, answer} per line."
    ),
    missing: str = typer.Option(
        "raise", "--missing", help="'raise' on unanswered questions or count them 'wrong'."
    ),
    out: Path = typer.Option(None, "--out", help="Folder for metrics.json."),
) -> None:
    """POPE accuracy, precision, recall, F1 and yes-ratio (reference answer parsing)."""
    from mmrlhf.evaluation.benchfiles import score_pope

    with _clear_errors():
        m = score_pope(data, _read_answers(answers), missing=missing)
    _echo_all(m)
    _write(out, m)


@score_app.command("mmhal")
def score_mmhal_cmd(
    data: Path = typer.Option(..., "--data", help="mmhal_bench.json."),
    answers: Path = typer.Option(
        None,
        "--answers",
        help="JSONL {id: question index 0-95, answer}; default: the file's model_answer.",
    ),
    judge: str = typer.Option("api", "--judge", help="'api' or 'local' (a text judge)."),
    judge_url: str = typer.Option(None, "--judge-url", help="API judge base URL."),
    judge_model: str = typer.Option(None, "--judge-model", help="API judge model name."),
    judge_path: Path = typer.Option(None, "--judge-path", help="Local judge model folder."),
    judge_cache: Path = typer.Option(None, "--judge-cache", help="API judge cache file."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="API key variable."),
    out: Path = typer.Option(None, "--out", help="Folder for metrics.json and judgements.jsonl."),
) -> None:
    """MMHal-Bench 0-6 score and hallucination rate per question type, rated by a judge."""
    from mmrlhf.evaluation.benchfiles import score_mmhal

    j = make_judge(
        judge,
        url=judge_url,
        model=judge_model,
        path=judge_path,
        api_key_env=api_key_env,
        cache=judge_cache,
    )
    with _clear_errors():
        m, rows = score_mmhal(data, j, _read_answers(answers) if answers else None)
    _echo_all(m)
    _write(out, m, rows)


@score_app.command("refomb")
def score_refomb_cmd(
    data: Path = typer.Option(..., "--data", help="refomb_dev.jsonl (questions + descriptions)."),
    reference: Path = typer.Option(
        ..., "--reference", help="Reference answers (refomb_dev_gpt4v_reference.jsonl)."
    ),
    answers: Path = typer.Option(..., "--answers", help="JSONL {id, answer} per line."),
    judge: str = typer.Option("api", "--judge", help="'api' or 'local' (a text judge)."),
    judge_url: str = typer.Option(None, "--judge-url", help="API judge base URL."),
    judge_model: str = typer.Option(None, "--judge-model", help="API judge model name."),
    judge_path: Path = typer.Option(None, "--judge-path", help="Local judge model folder."),
    judge_cache: Path = typer.Option(None, "--judge-cache", help="API judge cache file."),
    api_key_env: str = typer.Option("OPENAI_API_KEY", "--api-key-env", help="API key variable."),
    out: Path = typer.Option(None, "--out", help="Folder for metrics.json and judgements.jsonl."),
) -> None:
    """RefoMB-style pairwise score against reference answers (both orders asked)."""
    from mmrlhf.evaluation.benchfiles import score_refomb

    j = make_judge(
        judge,
        url=judge_url,
        model=judge_model,
        path=judge_path,
        api_key_env=api_key_env,
        cache=judge_cache,
    )
    with _clear_errors():
        m, rows = score_refomb(data, reference, _read_answers(answers), j)
    _echo_all(m)
    _write(out, m, rows)


@score_app.command("chair")
def score_chair_cmd(
    answers: Path = typer.Option(..., "--answers", help="JSONL {id, answer}: free descriptions."),
    objects: Path = typer.Option(
        ..., "--objects", help="JSONL {id, objects: [COCO class, ...]} per answer."
    ),
    synonyms: Path = typer.Option(
        ..., "--synonyms", help="Synonym list (coco_chair_synonyms.json)."
    ),
    out: Path = typer.Option(None, "--out", help="Folder for metrics.json."),
) -> None:
    """CHAIR_i and CHAIR_s of descriptions against per-image object lists."""
    from mmrlhf.evaluation.benchfiles import score_chair

    with _clear_errors():
        m = score_chair(_read_answers(answers), objects, synonyms)
    _echo_all(m)
    _write(out, m)


@score_app.command("rewardbench")
def score_rewardbench_cmd(
    data: Path = typer.Option(
        ..., "--data", help="Reward bench pair file (e.g. mm_rlhf_reward_bench.jsonl)."
    ),
    scores: Path = typer.Option(
        ..., "--scores", help="Records with rewards, or JSONL {id, text|response, reward} rows."
    ),
    out: Path = typer.Option(None, "--out", help="Folder for metrics.json."),
) -> None:
    """Acc and Acc+ per category for rewards of any scorer."""
    from mmrlhf.evaluation.benchfiles import score_rewardbench

    with _clear_errors():
        m = score_rewardbench(data, scores)
    _echo_all(m)
    _write(out, m)


def _default_rewardbench() -> Path:
    """``$MMRLHF_BENCHMARKS/mm_rlhf_reward_bench.jsonl``, else the shared benchmark folder next to
    a source checkout (``<checkout>/../shared/data/benchmarks``)."""
    import os

    root = os.environ.get("MMRLHF_BENCHMARKS")
    folder = Path(root) if root else Path(__file__).resolve().parents[4] / "shared/data/benchmarks"
    path = folder / "mm_rlhf_reward_bench.jsonl"
    if not path.exists():
        _fail(f"{path}: not found; pass --data (or set MMRLHF_BENCHMARKS)")
    return path


@app.command("rewardbench")
def rewardbench_cmd(
    rm: Path = typer.Option(..., "--rm", help="Reward model folder (mmrlhf train rm's final/)."),
    data: Path = typer.Option(
        None,
        "--data",
        help="Reward bench pair file or preference records (default: the shared "
        "mm_rlhf_reward_bench.jsonl).",
    ),
    media_root: Path = typer.Option(
        None, "--media-root", help="Folder image paths are relative to (default: DATA's folder)."
    ),
    mode: str = typer.Option(
        None, "--mode", help="Critique RM: generate (default), sample, given or none."
    ),
    samples: int = typer.Option(4, "--samples", min=1, help="Critiques per response (sample)."),
    temperature: float = typer.Option(
        1.0, "--temperature", min=0.0, help="Sampling temperature (sample)."
    ),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Responses per forward."),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens", min=1, help="Longest critique."),
    beams: int = typer.Option(
        1, "--beams", min=1, help="Critique RM, mode generate: beam search over this many beams."
    ),
    length_penalty: float = typer.Option(
        1.0, "--length-penalty", help="Beam search: score = sum log p / length**this."
    ),
    reference: str = typer.Option("generate", "--reference", help=REFERENCE_HELP),
    reference_model: Path = typer.Option(None, "--reference-model", help=REFERENCE_MODEL_HELP),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda[:N]."),
    out: Path = typer.Option(None, "--out", help="Folder for metrics.json and scored.jsonl."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Score a reward bench with a reward model: Acc and Acc+ overall and per category."""
    from mmrlhf.data.io import load_records
    from mmrlhf.evaluation.metrics.rewardbench import rewardbench_metrics, rows_from_records
    from mmrlhf.models.reward import RewardModel
    from mmrlhf.reward.score import score_records

    if data is None:
        data = _default_rewardbench()
    logging.basicConfig(level=logging.WARNING)
    with _clear_errors():
        # Strict: a missing image is an error naming the file (the shared bench ships no images;
        # give --media-root where they are).
        records, _ = load_records(data, media_root=media_root, mode="strict")
        model = RewardModel.from_pretrained(rm, device=device)
        writer = reference_writer(reference_model, device)
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
        scored = score_records(
            model,
            model.processor,
            records,
            mode=mode,
            n_samples=samples,
            temperature=temperature,
            batch_size=batch_size,
            max_new_tokens=max_new_tokens,
            num_beams=beams,
            length_penalty=length_penalty,
            reference=reference,
            reference_model=writer,
            media_root=media_root or data.parent,
            out_path=out / "scored.jsonl" if out is not None else None,
            progress=progress,
        )
        m = rewardbench_metrics(rows_from_records(scored))
    typer.echo(f"  {'category':28s} {'acc':>7s} {'acc+':>7s} {'pairs':>6s}")
    cats = ["all"] + sorted(k.split("/", 1)[1] for k in m if k.startswith("acc/"))
    for c in cats:
        sfx = "" if c == "all" else f"/{c}"
        typer.echo(
            f"  {c:28s} {m['acc' + sfx]:7.4f} {m['acc_plus' + sfx]:7.4f} {m['n_pairs' + sfx]:6d}"
        )
    _write(out, m)
