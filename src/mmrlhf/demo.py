"""``mmrlhf demo``: the main job on the embedded default, nothing downloaded.

Stages (each cached: a re-run skips what is done, a killed run resumes):

1. world   - generate the shapes world (images, scenes, SFT corpus, held-out questions);
2. model   - build a tiny LLaVA (CLIP tower + Llama) with a tokenizer trained on the world;
3. sft     - supervised fine-tuning (checkpoints; resumes from the newest one if killed);
4. eval    - the world evaluation suite (short answers, CHAIR, POPE, MMHal-style ratings, RefoMB,
             safety) with its HTML report.

Later stages (candidates, annotation, reward model, MM-DPO, full evaluation, report) join this
pipeline as they land.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from mmrlhf.config import load_config, to_yaml

console = Console()
REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class DemoSettings:
    out: Path
    n_scenes: int = 2000
    seed: int = 0
    sft_config: Path | None = None
    overrides: tuple[str, ...] = ()


def _stage(name: str, done: bool) -> None:
    console.rule(f"[bold]{name}[/bold]" + (" [dim](cached)[/dim]" if done else ""))


def run_demo(s: DemoSettings) -> dict[str, Any]:
    from mmrlhf.evaluation.suite import run_world_suite
    from mmrlhf.models.load import ModelConfig, load_vlm
    from mmrlhf.models.tiny import TinyVLMConfig, build_tiny_vlm, tokenizer_corpus
    from mmrlhf.training.sft import SFTConfig, run_sft
    from mmrlhf.world.generate import generate, load_world

    t0 = time.time()
    out = s.out
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    logging.basicConfig(level=logging.WARNING)

    # 1. world
    world_dir = out / "world"
    info = world_dir / "world.json"
    made = json.loads(info.read_text()) if info.exists() else {}
    # a world from before the POPE/safety sets existed is regenerated
    cached = (
        made.get("seed") == s.seed
        and made.get("n") == s.n_scenes
        and (world_dir / "pope_test.jsonl").exists()
    )
    _stage(f"1/4 world: {s.n_scenes} scenes, seed {s.seed}", cached)
    t = time.time()
    if not cached:
        generate(world_dir, n=s.n_scenes, seed=s.seed)
    world = load_world(world_dir)
    console.print(
        f"{len(world.sft)} SFT records, {len(world.eval)} held-out questions -> {world_dir}"
    )
    timings["world"] = time.time() - t

    # 2. tiny model
    model_dir = out / "tiny-llava"
    cached = (model_dir / "config.json").exists()
    _stage("2/4 model: tiny LLaVA (CLIP + Llama) with a world tokenizer", cached)
    t = time.time()
    if not cached:
        build_tiny_vlm(model_dir, tokenizer_corpus(world=world_dir), TinyVLMConfig(seed=s.seed))
    timings["model"] = time.time() - t

    # 3. SFT
    sft_cfg_path = s.sft_config or REPO_CONFIGS / "world" / "sft.yaml"
    if not sft_cfg_path.exists():
        raise FileNotFoundError(f"{sft_cfg_path}: SFT config not found; pass --sft-config")
    sft_dir = out / "sft"
    cfg = load_config(
        SFTConfig,
        sft_cfg_path,
        [
            f"model.path={model_dir}",
            f"data.train={world_dir / 'sft_train.jsonl'}",
            f"train.output_dir={sft_dir}",
            f"train.seed={s.seed}",
            *s.overrides,
        ],
    )
    final = sft_dir / "final"
    cached = (final / "config.json").exists()
    _stage(f"3/4 sft: {cfg.train.max_steps} steps x batch {cfg.train.batch_size}", cached)
    t = time.time()
    if not cached:
        sft_dir.mkdir(parents=True, exist_ok=True)
        (sft_dir / "config.yaml").write_text(to_yaml(cfg))
        summary = run_sft(cfg, resume="auto")
        (sft_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    timings["sft"] = time.time() - t

    # 4. evaluation suite (generation is resumable; a finished run is read back)
    eval_dir = out / "eval" / "sft"
    cached = (eval_dir / "metrics.json").exists()
    _stage("4/4 eval: world suite on unseen scenes (questions, POPE, safety)", cached)
    t = time.time()
    if cached:
        metrics = json.loads((eval_dir / "metrics.json").read_text())
    else:
        model, processor = load_vlm(ModelConfig(path=str(final), device="cpu"), for_training=False)
        metrics = run_world_suite(model, processor, world, eval_dir, name="sft")
    timings["eval"] = time.time() - t

    result = {"sft": metrics, "wall_seconds": time.time() - t0, "stage_seconds": timings}
    (out / "metrics.json").write_text(json.dumps(result, indent=1, sort_keys=True))
    _print_summary(out, metrics, result["wall_seconds"])
    return result


def _print_summary(out: Path, m: dict[str, Any], wall: float) -> None:
    from rich.table import Table

    table = Table(title="SFT model on held-out scenes")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in sorted(m):
        if k.startswith("acc/"):
            table.add_row(f"accuracy: {k[4:]}", f"{m[k]:.3f}")
    table.add_row(
        "short-answer accuracy (attribute, counting, existence, relation)",
        f"{m['core_short_answer_acc']:.3f}",
    )
    table.add_row("short-answer accuracy (all short families)", f"{m['short_answer_acc']:.3f}")
    table.add_row("descriptions: CHAIR_i (hallucinated object mentions)", f"{m['chair_i']:.3f}")
    table.add_row(
        "descriptions: CHAIR_s (descriptions with a hallucination)", f"{m['chair_s']:.3f}"
    )
    for key, label in (
        ("pope_f1", "POPE F1 (mean of random/popular/adversarial)"),
        ("mmhal_score", "MMHal-style score (0-6, rule judge)"),
        ("mmhal_hallucination_rate", "MMHal-style hallucination rate"),
        ("refomb_score", "RefoMB-style score vs the reference annotator"),
        ("refusal_rate", "safety: refusal rate on harmful requests"),
        ("over_refusal_rate", "safety: over-refusal on benign look-alikes"),
    ):
        if key in m:
            table.add_row(label, f"{m[key]:.3f}")
    console.print(table)
    console.print(f"wall time {wall:.0f} s")
    console.print(
        f"outputs: {out}/metrics.json, {out}/sft/final (model), "
        f"{out}/eval/sft/report.html (evaluation report)"
    )
