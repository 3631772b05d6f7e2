"""``mmrlhf demo``: the whole MM-RLHF pipeline on the embedded default, nothing downloaded.

Stages (each cached: a re-run skips what is done; a killed run resumes where it was). The
folder remembers the settings that made it (``demo_settings.json``); a re-run with other
settings stops with the changed ones named instead of mixing old stages into new results:

1. world      - the shapes world (images, scenes, SFT corpus, held-out questions, POPE, safety);
2. model      - a tiny LLaVA (CLIP tower + Llama) with a tokenizer trained on the world, its
                tower pretrained to read the world's grid cells (``world.vision``);
3. sft        - supervised fine-tuning;
4. eval-sft   - the world evaluation suite on the SFT model;
5. candidates - K candidate answers per training query: the truth and checked corruptions,
                and for the DPO queries 3 samples from the SFT model (``--sample-weight``);
6. annotate   - the simulated MM-RLHF annotators: fine-grained scores, rankings with ties,
                critiques (noisy, several annotators), plus a noise-free held-out reward bench;
7. rm         - the critique-based reward model, initialised from the SFT model;
8. rm-bench   - its Acc/Acc+ on the held-out reward bench (unseen scenes);
9. margins    - the reward model scores the DPO queries with their annotators' critiques (the
                bench uses generated ones): r per response, delta per pair;
10. dpo       - MM-DPO (dynamic reward scaling) from the SFT model;
11. eval-dpo  - the world suite on the aligned model;
12. report    - report.html (SFT vs aligned, reward bench, DPO curves) and metrics.json.

Stages 4 and 8 run in a worker process beside the stages after them (every stage computes on one
thread). Budgets are in :class:`DemoSettings`; every stage prints progress. Measured on 2 CPU
cores: 526-610 s in all on a quiet machine, 592-637 s beside another job (docs/results.md).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from mmrlhf.config import load_config, to_yaml

console = Console()
REPO_CONFIGS = Path(__file__).resolve().parents[2] / "configs"

#: Metrics the demo's metrics.json carries for each model (the issue's list, then extras).
DEMO_KEYS = (
    "chair_i",
    "chair_s",
    "pope_f1",
    "mmhal_score",
    "mmhal_hallucination_rate",
    "short_answer_acc",
    "refusal_rate",
    "over_refusal_rate",
)

#: SFT peak learning rate when the tiny LM comes pretrained (``language_steps > 0``): the
#: shipped 2e-3 is sized for a random LM and overwrites what pretraining taught. Measured on the
#: seed-0 world: core short answers 0.627 at 2e-3, 0.688 at 5e-4 (docs/results.md).
PRETRAINED_LM_SFT_LR = 5e-4


@dataclass
class DemoSettings:
    """Sizes and budgets of the demo; the defaults take about 8-9 minutes on 2 CPU cores."""

    out: Path
    #: World scenes, train and test. 10,000 rather than the CLI's 2000: with ~2 examples per
    #: scene over the whole SFT, the model learns to read scenes instead of memorising them
    #: (docs/results.md, "A smaller, faster language model").
    n_scenes: int = 10000
    #: Of those, held out for evaluation (fixed, so that evaluation costs the same at any size).
    test_scenes: int = 200
    #: The world's ``companion_rate``: how often a training description adds its environment's
    #: typical object when the scene lacks it (the learned hallucination habit MM-DPO removes;
    #: docs/world.md). 0 gives the i.i.d.-noise corpus of the demos before the thirteenth session.
    companion_rate: float = 0.8
    seed: int = 0
    sft_config: Path | None = None
    overrides: tuple[str, ...] = ()
    #: Training queries annotated for the reward model.
    rm_queries: int = 1200
    #: Training queries (disjoint from the RM's) scored by the RM and used for MM-DPO.
    dpo_queries: int = 600
    #: Share of the DPO queries that ask for a description. Object hallucination (CHAIR) lives in
    #: descriptions, which are 13% of the SFT questions; MM-RLHF likewise re-samples its queries
    #: evenly across categories instead of keeping the source mix.
    dpo_description_share: float = 0.5
    #: Held-out reward-bench queries (unseen scenes).
    bench_queries: int = 200
    #: Candidates per query (the truth, corruptions, and optionally one SFT sample, below).
    k: int = 4
    #: Temperature of the SFT model's candidate sample.
    sample_temperature: float = 0.7
    #: Annotation draw weight of the on-policy samples among the DPO queries' candidates (the
    #: corruptions weigh 0.5-2, see ``world.annotate.DEFAULT_WEIGHTS``); 0 leaves them out and
    #: skips sampling. RLAIF-V's recipe: the SFT model's own answers, ranked by the feedback,
    #: so the pairs show the policy its own hallucinations. Measured (docs/results.md, "A
    #: learned hallucination habit"): with the learned companion habit, 3 samples at weight 4
    #: take the three-seed CHAIR_i from 0.66x to 0.63x of SFT's, MMHal 3.330 -> 3.396, short
    #: answers 0.643 -> 0.657, for ~15 s of sampling. (Before the habit existed, when every
    #: hallucination was a misread, they were neutral to harmful: "On-policy samples".)
    sample_weight: float = 4.0
    #: On-policy samples per DPO query when ``sample_weight > 0`` (RLAIF-V samples several and
    #: ranks them; identical samples count once). Each is drawn with its own seed.
    samples_per_query: int = 3
    #: Candidate draw weights changed from ``world.annotate.DEFAULT_WEIGHTS``, as ``SOURCE=W``
    #: (``mmrlhf world annotate --weight``), e.g. ``("false_denial=0",)``.
    candidate_weights: tuple[str, ...] = ()
    #: Critique layout of the simulated annotation (``reason_first`` or ``verdict_first``; see
    #: ``world.annotate.AnnotateConfig.critique_order``).
    critique_order: str = "reason_first"
    #: Whether the annotators' critiques restate the question (``AnnotateConfig.
    #: critique_quotes_question``). Off: the tiny critique RM cannot copy a question and its
    #: generated critique derails where the copy fails (docs/reward.md, thirteenth session).
    critique_quotes_question: bool = False
    #: Share of the reward model's training queries that are safety queries (the SFT corpus has
    #: ~3%, the reward bench ~1/3); ``None`` keeps the corpus's mix. Together with unquoted
    #: critiques it lifted a critique RM from 0.578 to 0.639 bench Acc (safety 0.511 -> 0.678).
    #: The DPO queries are drawn as before, disjoint from these.
    rm_safety_share: float | None = 1 / 3
    #: Steps pretraining the tiny model's vision tower on the world's cells before SFT (the
    #: stand-in for a pretrained CLIP; ``world.vision``); 0 keeps the random tower.
    vision_steps: int = 1000
    #: Steps pretraining the tiny model's language model on symbolic scenes, then aligning the
    #: projector (the stand-in for a pretrained LLM; ``world.language``); 0 keeps the LM random.
    #: With a pretrained LM the SFT learning rate drops to :data:`PRETRAINED_LM_SFT_LR` unless
    #: ``overrides`` set ``train.lr``. Off by default: measured in docs/results.md ("A
    #: pretrained language model").
    language_steps: int = 0
    #: The tiny model's chat template puts the question before the image
    #: (``TinyVLMConfig.question_first``): image tokens then see the question under causal
    #: attention and can mark themselves as the asked-about object.
    question_first: bool = False
    #: With ``language_steps``: the relation curriculum's steps before them
    #: (``LanguagePretrainConfig.relation_steps``; use with ``question_first``).
    relation_steps: int = 0
    #: The world's relation answers place both objects before comparing them
    #: (``WorldConfig.relation_rationale``).
    relation_rationale: bool = False
    #: The tiny tokenizer also trains on the annotator's critiques and reasons
    #: (``models.tiny.tokenizer_corpus``), so the critique RM writes whole words, not letters.
    #: Part of ``--pretrained-lm`` (core short 0.940 -> 0.973 there, one seed); off otherwise,
    #: where it moved the measured default demo (seed 0 POPE F1 gain 0.17 -> 0, docs/results.md).
    annotation_vocabulary: bool = False
    rm_config: Path | None = None
    #: Reward-model steps in the demo (the standalone config trains longer, 5 minutes).
    rm_steps: int = 150
    rm_overrides: tuple[str, ...] = ()
    dpo_config: Path | None = None
    dpo_overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # checked here, before any stage runs: the annotation stage would only reject it after SFT
        from mmrlhf.world.annotate import check_critique_order, parse_weights

        check_critique_order(self.critique_order)
        parse_weights(self.candidate_weights)
        if not 0 < self.test_scenes < self.n_scenes:
            raise ValueError(
                f"test_scenes must be between 1 and n_scenes - 1 ({self.n_scenes - 1}), "
                f"got {self.test_scenes}"
            )
        if self.rm_safety_share is not None and not 0 <= self.rm_safety_share <= 1:
            raise ValueError(f"rm_safety_share must be in [0, 1], got {self.rm_safety_share}")
        if not 0 <= self.companion_rate <= 1:
            raise ValueError(f"companion_rate must be in [0, 1], got {self.companion_rate}")
        if self.vision_steps < 0:
            raise ValueError(f"vision_steps must be >= 0, got {self.vision_steps}")
        if self.language_steps < 0:
            raise ValueError(f"language_steps must be >= 0, got {self.language_steps}")
        if self.relation_steps < 0 or (self.relation_steps > 0 and self.language_steps == 0):
            raise ValueError(
                f"relation_steps must be >= 0 and needs language_steps > 0, got "
                f"{self.relation_steps} with language_steps {self.language_steps}"
            )
        if self.language_steps > 0 and self.vision_steps == 0:
            raise ValueError(
                "language_steps needs the vision tower pretrained (vision_steps > 0): the "
                "projector is aligned to what the pretrained tower reads"
            )
        if self.samples_per_query < 1:
            raise ValueError(f"samples_per_query must be >= 1, got {self.samples_per_query}")
        if self.sample_temperature <= 0:
            raise ValueError(f"sample_temperature must be > 0, got {self.sample_temperature}")


def _test_fraction(s: DemoSettings) -> float:
    return s.test_scenes / s.n_scenes


def _stage(name: str, done: bool) -> None:
    console.rule(f"[bold]{name}[/bold]" + (" [dim](cached)[/dim]" if done else ""))


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    tmp.rename(path)


def _relocate(records: list[Any], world_root: Path, folder: Path) -> None:
    """Rewrite image paths (relative to the world) relative to ``folder``, where the records
    are written: loaders resolve paths against the data file's folder."""
    import os

    for r in records:
        for im in r.images:
            im.path = os.path.relpath(world_root / im.path, folder)


def _split_queries(pool: list[Any], s: DemoSettings, world: Any = None) -> list[Any]:
    """``rm_queries`` for the reward model, then ``dpo_queries`` (disjoint, a share of them
    descriptions) for MM-DPO; a seeded draw from the SFT questions. With ``s.rm_safety_share``
    (needs ``world``) that share of the RM queries are safety queries: the drawn ones, then
    the pool's other safety records that are not DPO queries, then new ones on training scenes;
    the DPO queries are the same either way.

    Among the DPO queries, questions answered "yes" and "no" are kept level (at most one
    apart), as POPE balances its probes: a plain draw of seed 1 held 46 "no" and 32 "yes"
    existence questions, and MM-DPO on it taught the model to deny (POPE F1 0.704 -> 0.288;
    0.599 on the same data with 14 "no" queries left out; docs/results.md).
    """
    import random

    rng = random.Random(f"{s.seed}:demo:queries")
    order = list(pool)
    rng.shuffle(order)
    rm, rest = order[: s.rm_queries], order[s.rm_queries :]
    n_desc = round(s.dpo_queries * s.dpo_description_share)
    desc = [r for r in rest if r.meta.get("family") == "holistic"][:n_desc]
    other: list[Any] = []
    yes_no = {"yes": 0, "no": 0}
    for r in rest:
        if len(other) == s.dpo_queries - len(desc):
            break
        if r.meta.get("family") == "holistic":
            continue
        answer = r.facts.short_answer if r.facts is not None else None
        if answer in yes_no:
            if yes_no[answer] > yes_no["no" if answer == "yes" else "yes"]:
                continue
            yes_no[answer] += 1
        other.append(r)
    if s.rm_safety_share is not None:
        n_safety = round(s.rm_queries * s.rm_safety_share)
        is_safety = [r.meta.get("family") == "safety" for r in rm]
        plain = [r for r, safe in zip(rm, is_safety, strict=True) if not safe]
        taken = {r.id for r in desc + other}
        drawn = [r for r, safe in zip(rm, is_safety, strict=True) if safe]
        spare = [r for r in rest if r.meta.get("family") == "safety" and r.id not in taken]
        have = (drawn + spare)[:n_safety]
        rm = plain[: s.rm_queries - n_safety] + have
        if len(have) < n_safety:
            from mmrlhf.world.annotate import train_safety_queries

            if world is None:
                raise ValueError(
                    f"rm_safety_share {s.rm_safety_share}: the pool has {len(have)} safety "
                    f"queries for {n_safety}; new ones need the world (pass it)"
                )
            rm += train_safety_queries(world, [], n_safety - len(have), s.seed)
    return rm + desc + other


def _eval_job(
    model_path: str,
    world_dir: str,
    out_dir: str,
    name: str,
    seed: int,
    threads: int = 1,
    progress: bool = False,
) -> dict:
    """The world suite on one model (the worker's job, or the main process's for stage 11)."""
    import torch

    from mmrlhf.evaluation.suite import run_world_suite
    from mmrlhf.models.load import ModelConfig, load_vlm
    from mmrlhf.world.generate import load_world

    torch.set_num_threads(threads)
    t = time.time()
    m, proc = load_vlm(ModelConfig(path=model_path, device="cpu"), for_training=False)
    res = run_world_suite(
        m, proc, load_world(world_dir), out_dir, name=name, seed=seed, progress=progress
    )
    return {"metrics": res, "seconds": round(time.time() - t, 2)}


def _bench_job(rm_path: str, bench_file: str, media_root: str, scored: str, metrics: str) -> dict:
    """The reward bench: the RM scores held-out queries with critiques it generates."""
    import torch

    from mmrlhf.data.io import load_records
    from mmrlhf.evaluation.metrics.rewardbench import rewardbench_metrics, rows_from_records
    from mmrlhf.models.reward import RewardModel
    from mmrlhf.reward.score import score_records

    torch.set_num_threads(1)
    t = time.time()
    rm = RewardModel.from_pretrained(rm_path, device="cpu")
    bench, _ = load_records(bench_file)
    out = score_records(
        rm,
        rm.processor,
        bench,
        media_root=media_root,
        out_path=scored,
        batch_size=48,
        max_new_tokens=64,
        progress=False,
    )
    bm = rewardbench_metrics(rows_from_records(out))
    Path(metrics).write_text(json.dumps(bm, indent=1))
    return {"metrics": bm, "seconds": round(time.time() - t, 2)}


class _Background:
    """One worker process beside the main loop. Every demo stage computes on one thread (the
    tiny model is fastest that way), so on two cores an evaluation or the reward bench can run
    while the next stage trains: SFT eval beside candidates/annotation/RM, the reward bench
    beside MM-DPO. Jobs are started in a fresh interpreter ("spawn"), never forked from a
    process that holds torch threads."""

    def __init__(self) -> None:
        self.pool: Any = None
        self.jobs: dict[str, Any] = {}

    def start(self, key: str, done_file: Path, fn: Callable[..., dict], *args: Any) -> None:
        """Run ``fn(*args)`` in the worker unless ``done_file`` (its metrics) already exists."""
        if done_file.exists():
            return
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        if self.pool is None:
            self.pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn")
            )
        self.jobs[key] = self.pool.submit(fn, *args)
        console.print(f"[dim]{key}: started in the background[/dim]")

    def get(self, key: str, done_file: Path, timings: dict[str, float]) -> dict[str, Any]:
        """The job's metrics (waiting for it; its own duration goes to ``timings[key]``, the wait
        to ``wait_<key>``), or those of an earlier run read back from ``done_file``."""
        if key not in self.jobs:
            return json.loads(done_file.read_text())
        t = time.time()
        res = self.jobs.pop(key).result()
        timings[key] = res["seconds"]
        timings[f"wait_{key}"] = round(time.time() - t, 2)
        return res["metrics"]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


def sft_overrides(s: DemoSettings, model_dir: Path, world_dir: Path, sft_dir: Path) -> list[str]:
    """The SFT config overrides of the demo's SFT stage; the user's ``s.overrides`` come last,
    so they win (also over the lower learning rate a pretrained LM gets)."""
    return [
        f"model.path={model_dir}",
        f"data.train={world_dir / 'sft_train.jsonl'}",
        f"train.output_dir={sft_dir}",
        f"train.seed={s.seed}",
        *([f"train.lr={PRETRAINED_LM_SFT_LR}"] if s.language_steps > 0 else []),
        *s.overrides,
    ]


def rm_overrides(s: DemoSettings, sft_final: Path, train_file: Path, rm_dir: Path) -> list[str]:
    """The reward-model config overrides of the demo's RM stage; the user's ``s.rm_overrides``
    come last, so they win.

    The demo's measured RM stage is ``s.rm_steps`` steps of 8 queries on one thread (the
    background evaluation worker has the other core) in MM-RLHF's layout; the standalone
    ``rm_critique.yaml`` trains 5 minutes alone on two threads, 4 queries a step, response first.
    """
    return [
        f"model.path={sft_final}",
        f"data.train={train_file}",
        f"train.output_dir={rm_dir}",
        f"train.seed={s.seed}",
        "data.eval=",
        f"train.max_steps={s.rm_steps}",
        "train.batch_size=8",
        "train.num_threads=1",
        "rm.response_first=false",
        *s.rm_overrides,
    ]


#: Settings added after some folders were made, with the value those folders ran with (the
#: current default would claim otherwise): worlds without companions, RM data in the corpus's
#: mix with critiques that restate the question.
_BEFORE_THE_SETTING: dict[str, Any] = {
    "companion_rate": 0.0,
    "critique_quotes_question": True,
    "rm_safety_share": None,
}


def _world_companion_rate(config: dict[str, Any]) -> float:
    """The companion rate a generated world's ``world.json`` config ran with (0 without any)."""
    return float(config.get("companion_rate", 0.0)) if config.get("env_companions") else 0.0


class DemoSettingsChanged(ValueError):
    """An output folder made with other settings: its cached stages would not match them."""


def _check_settings(s: DemoSettings) -> None:
    """Stages are cached by the files they leave, so a re-run with other settings in the same
    folder would silently mix the old results into the new ones. ``out/demo_settings.json``
    records the settings of the run that made the folder; a re-run must use the same ones."""
    stamp = s.out / "demo_settings.json"
    now = dataclasses.asdict(s)
    del now["out"]
    now = json.loads(json.dumps(now, default=str))  # the form it is stored in: lists, strings
    if stamp.exists():
        try:
            before = json.loads(stamp.read_text())
        except json.JSONDecodeError as e:
            raise DemoSettingsChanged(
                f"{stamp}: unreadable ({e}); delete the folder {s.out} to start over"
            ) from None
        # A setting added after the folder was made reads as its default there, or as the value
        # such folders actually ran with where the default has changed since.
        defaults = json.loads(json.dumps(dataclasses.asdict(DemoSettings(s.out)), default=str))
        defaults |= _BEFORE_THE_SETTING
        before = {k: before.get(k, defaults.get(k)) for k in set(before) | set(defaults)}
        before.pop("out", None)
        changed = sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))
        if changed:
            diff = "; ".join(f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in changed)
            raise DemoSettingsChanged(
                f"{s.out} was made by a demo with other settings ({diff}); its cached stages "
                "would not match. Use a new --out, or delete the folder to start over."
            )
        return
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps(now, indent=1, sort_keys=True))
    tmp.replace(stamp)


def _run_stage(
    timings: dict[str, float], key: str, title: str, done: bool, fn: Callable[[], Any]
) -> Any:
    _stage(title, done)
    t = time.time()
    result = fn()
    timings[key] = round(time.time() - t, 2)
    return result


def run_demo(s: DemoSettings) -> dict[str, Any]:
    """Run (or resume) every stage; returns the metrics written to ``out/metrics.json``."""
    from mmrlhf.data.io import load_records
    from mmrlhf.evaluation.generate import generate_answers
    from mmrlhf.models.load import ModelConfig, load_vlm
    from mmrlhf.models.tiny import TinyVLMConfig, build_tiny_vlm, tokenizer_corpus
    from mmrlhf.training.dpo import DPOConfig, run_dpo
    from mmrlhf.training.reward import RewardConfig, run_reward
    from mmrlhf.training.sft import SFTConfig, run_sft
    from mmrlhf.world.annotate import (
        AnnotateConfig,
        annotate_records,
        annotation_queries,
        count_empty_answers,
        parse_weights,
        reward_bench,
    )
    from mmrlhf.world.config import WorldConfig
    from mmrlhf.world.generate import generate, load_world
    from mmrlhf.world.language import LanguagePretrainConfig, pretrain_language_model
    from mmrlhf.world.vision import VisionPretrainConfig, pretrain_vision_tower

    t0 = time.time()
    out = s.out
    out.mkdir(parents=True, exist_ok=True)
    _check_settings(s)
    timings: dict[str, float] = {}
    logging.basicConfig(level=logging.WARNING)
    import os

    import torch

    # Every stage computes on one thread per process (measured fastest for the tiny model on
    # 2 cores) and a worker process takes the evaluations, so two cores are both busy.
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    bg = _Background()

    # 1. world (a world from before the POPE/safety sets existed is regenerated)
    world_dir = out / "world"
    info = world_dir / "world.json"
    made = json.loads(info.read_text()) if info.exists() else {}
    cached = (
        made.get("seed") == s.seed
        and made.get("n") == s.n_scenes
        and made.get("config", {}).get("test_fraction") == _test_fraction(s)
        and _world_companion_rate(made.get("config", {})) == s.companion_rate
        and (world_dir / "pope_test.jsonl").exists()
    )
    _run_stage(
        timings,
        "world",
        f"1/12 world: {s.n_scenes} scenes, seed {s.seed}",
        cached,
        lambda: (
            None
            if cached
            else generate(
                world_dir,
                n=s.n_scenes,
                seed=s.seed,
                config=WorldConfig(
                    test_fraction=_test_fraction(s),
                    companion_rate=s.companion_rate,
                    relation_rationale=s.relation_rationale,
                ),
            )
        ),
    )
    world = load_world(world_dir)
    console.print(f"{len(world.sft)} SFT records, {len(world.eval)} held-out questions")

    # 2. tiny model, its vision tower pretrained on the world's cells; built in a scratch
    # folder and renamed, so the folder exists only once both parts are done
    model_dir = out / "tiny-llava"
    cached = (model_dir / "config.json").exists()

    def build_model() -> None:
        if cached:
            return
        scratch = out / ".tiny-llava.tmp"
        shutil.rmtree(scratch, ignore_errors=True)
        build_tiny_vlm(
            scratch,
            tokenizer_corpus(world=world_dir, annotations=s.annotation_vocabulary),
            TinyVLMConfig(seed=s.seed, question_first=s.question_first),
        )
        if s.vision_steps > 0:
            report = pretrain_vision_tower(
                scratch, world.config, VisionPretrainConfig(steps=s.vision_steps, seed=s.seed)
            )
            probe = report["heldout_probe"]
            console.print(
                f"vision tower: held-out cell contents read at {probe['content']:.3f} "
                f"(empty-cell majority {probe['content_majority']:.3f}), {report['seconds']} s"
            )
        if s.language_steps > 0:
            report = pretrain_language_model(
                scratch,
                world.config,
                LanguagePretrainConfig(
                    steps=s.language_steps, relation_steps=s.relation_steps, seed=s.seed
                ),
            )
            console.print(
                f"language model: loss {report['lm_first_loss']} -> {report['lm_final_loss']} "
                f"in {report['lm_seconds']} s; projector aligned (held-out cosine "
                f"{report['align_heldout_cosine']}) in {report['align_seconds']} s"
            )
        scratch.rename(model_dir)

    _run_stage(
        timings,
        "model",
        "2/12 model: tiny LLaVA (CLIP + Llama) with a world tokenizer"
        + (f", tower pretrained {s.vision_steps} steps" if s.vision_steps > 0 else "")
        + (f", LM pretrained {s.language_steps} steps" if s.language_steps > 0 else "")
        + (f" after {2 * s.relation_steps} relation steps" if s.relation_steps > 0 else ""),
        cached,
        build_model,
    )

    # 3. SFT
    sft_cfg_path = s.sft_config or REPO_CONFIGS / "world" / "sft.yaml"
    sft_dir = out / "sft"
    cfg = load_config(SFTConfig, sft_cfg_path, sft_overrides(s, model_dir, world_dir, sft_dir))
    sft_final = sft_dir / "final"
    cached = (sft_final / "config.json").exists()

    def do_sft() -> None:
        if cached:
            return
        sft_dir.mkdir(parents=True, exist_ok=True)
        (sft_dir / "config.yaml").write_text(to_yaml(cfg))
        summary = run_sft(cfg, resume="auto")
        (sft_dir / "summary.json").write_text(json.dumps(summary, indent=1))

    _run_stage(
        timings,
        "sft",
        f"3/12 sft: {cfg.train.max_steps} steps x {cfg.train.batch_size * cfg.train.grad_accum} examples",
        cached,
        do_sft,
    )

    # 4. evaluation of the SFT model: in the background, beside stages 5-7
    sft_eval_file = out / "eval" / "sft" / "metrics.json"
    _stage("4/12 eval: world suite on the SFT model (unseen scenes)", sft_eval_file.exists())
    bg.start(
        "eval_sft",
        sft_eval_file,
        _eval_job,
        str(sft_final),
        str(world_dir),
        str(sft_eval_file.parent),
        "sft",
        s.seed,
    )

    # 5-6. candidates (truth, corruptions, the SFT model's own samples) and simulated annotation
    prefs = out / "prefs"
    prefs.mkdir(exist_ok=True)
    ann_cfg = AnnotateConfig(
        k=s.k,
        noise=0.1,
        seed=s.seed,
        critique_order=s.critique_order,
        critique_quotes_question=s.critique_quotes_question,
        weights=parse_weights(s.candidate_weights),
    )
    train_file, dpo_file, bench_file = (
        prefs / "rm_train.jsonl",
        prefs / "dpo_train.jsonl",
        prefs / "rewardbench.jsonl",
    )
    cached = train_file.exists() and dpo_file.exists() and bench_file.exists()

    def candidates_and_annotation() -> None:
        if cached:
            return
        queries = _split_queries(annotation_queries(world, "train"), s, world)
        # On-policy samples for the DPO queries (s.sample_weight, s.samples_per_query): where
        # the policy repeats a learned hallucination the annotator ranks its sample below the
        # truth, so the pair targets exactly what the policy does. The RM queries keep truth +
        # corruptions (the RM is trained before, and independently of, the policy's samples).
        tag = f"sft@{s.sample_temperature}"
        model_answers: dict[str, list[tuple[str, str]]] = {}
        if s.sample_weight > 0:
            m, proc = load_vlm(ModelConfig(path=str(sft_final), device="cpu"), for_training=False)
            for j in range(s.samples_per_query):
                # the first sample keeps its old file name and seed, so earlier folders resume
                suffix = f"_{j}" if j else ""
                samples = generate_answers(
                    m,
                    proc,
                    queries[s.rm_queries :],
                    media_root=world.root,
                    temperature=s.sample_temperature,
                    seed=s.seed + j,
                    max_new_tokens=96,
                    out_path=prefs / f"sft_samples{suffix}.jsonl",
                )
                for qid, a in samples.items():
                    model_answers.setdefault(qid, []).append((tag, a))
            if empty := count_empty_answers(model_answers):
                n = sum(map(len, model_answers.values()))
                console.print(f"{empty} of {n} SFT samples empty: not candidates")
        cfg = dataclasses.replace(ann_cfg, weights={**ann_cfg.weights, tag: s.sample_weight})
        annotated = annotate_records(queries, world, cfg, model_answers)
        _relocate(annotated, world.root, prefs)
        _write_jsonl(train_file, [r.to_dict() for r in annotated[: s.rm_queries]])
        _write_jsonl(dpo_file, [r.to_dict() for r in annotated[s.rm_queries :]])
        bench = reward_bench(world, ann_cfg, n=s.bench_queries)
        _relocate(bench, world.root, prefs)
        _write_jsonl(bench_file, [r.to_dict() for r in bench])

    _run_stage(
        timings,
        "annotate",
        f"5-6/12 candidates (K={s.k}"
        + (
            f", {s.samples_per_query} SFT sample(s) at T={s.sample_temperature}"
            if s.sample_weight > 0
            else ""
        )
        + ") and simulated annotation",
        cached,
        candidates_and_annotation,
    )

    # 7. critique reward model
    rm_dir = out / "rm"
    rm_cfg = load_config(
        RewardConfig,
        s.rm_config or REPO_CONFIGS / "world" / "rm_critique.yaml",
        rm_overrides(s, sft_final, train_file, rm_dir),
    )
    rm_final = rm_dir / "final"
    cached = (rm_final / "reward_config.json").exists()

    def do_rm() -> None:
        if cached:
            return
        rm_dir.mkdir(parents=True, exist_ok=True)
        (rm_dir / "config.yaml").write_text(to_yaml(rm_cfg))
        summary = run_reward(rm_cfg, resume="auto")
        (rm_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=str))

    _run_stage(
        timings,
        "rm",
        f"7/12 reward model: {rm_cfg.rm.type}, {rm_cfg.train.max_steps} steps",
        cached,
        do_rm,
    )

    # 8. reward bench (held-out scenes, generated critiques): in the background, beside 9-10
    bench_scored, dpo_scored = prefs / "rewardbench_scored.jsonl", prefs / "dpo_scored.jsonl"
    bench_metrics_file = prefs / "rewardbench_metrics.json"
    _stage("8/12 reward bench (unseen scenes, generated critiques)", bench_metrics_file.exists())
    bg.start(
        "rewardbench",
        bench_metrics_file,
        _bench_job,
        str(rm_final),
        str(bench_file),
        str(prefs),
        str(bench_scored),
        str(bench_metrics_file),
    )

    # 9. DPO margins
    cached = dpo_scored.exists() and (prefs / ".dpo_scored.done").exists()

    def do_margins() -> None:
        if cached:
            return
        from mmrlhf.models.reward import RewardModel
        from mmrlhf.reward.score import score_records

        rm = RewardModel.from_pretrained(rm_final, device="cpu")
        recs, _ = load_records(dpo_file)
        # The DPO queries are annotated data: their annotators' critiques exist, and the RM
        # scores with them ("given", one of MM-RLHF's scoring variants) - more faithful margins,
        # and no critique generation for 4 x dpo_queries responses (about 4x the bench's cost).
        score_records(
            rm,
            rm.processor,
            recs,
            mode="given",
            media_root=prefs,
            out_path=dpo_scored,
            batch_size=48,
        )
        (prefs / ".dpo_scored.done").write_text("ok")

    _run_stage(
        timings,
        "margins",
        "9/12 DPO margins (RM scores with the annotators' critiques)",
        cached,
        do_margins,
    )

    # 10. MM-DPO
    dpo_dir = out / "dpo"
    dpo_cfg = load_config(
        DPOConfig,
        s.dpo_config or REPO_CONFIGS / "world" / "dpo.yaml",
        [
            f"model.path={sft_final}",
            f"data.train={dpo_scored}",
            f"train.output_dir={dpo_dir}",
            f"train.seed={s.seed}",
            *s.dpo_overrides,
        ],
    )
    dpo_final = dpo_dir / "final"
    cached = (dpo_final / "config.json").exists()

    def do_dpo() -> dict[str, Any]:
        if cached:
            return json.loads((dpo_dir / "summary.json").read_text())
        dpo_dir.mkdir(parents=True, exist_ok=True)
        (dpo_dir / "config.yaml").write_text(to_yaml(dpo_cfg))
        summary = run_dpo(dpo_cfg, resume="auto")
        (dpo_dir / "summary.json").write_text(json.dumps(summary, indent=1))
        return summary

    dpo_summary = _run_stage(
        timings,
        "dpo",
        f"10/12 MM-DPO: w={dpo_cfg.loss.w}, {dpo_cfg.train.max_steps} steps",
        cached,
        do_dpo,
    )

    # 11. evaluation of the aligned model (the background jobs finish first: both cores free)
    sft_metrics = bg.get("eval_sft", sft_eval_file, timings)
    bench_metrics = bg.get("rewardbench", bench_metrics_file, timings)
    bg.close()
    console.print(
        f"reward bench: Acc {bench_metrics['acc']:.3f}, Acc+ {bench_metrics['acc_plus']:.3f} "
        f"over {bench_metrics['n_pairs']} pairs"
    )
    aligned_file = out / "eval" / "aligned" / "metrics.json"
    aligned_metrics = _run_stage(
        timings,
        "eval_dpo",
        "11/12 eval: world suite on the aligned model",
        aligned_file.exists(),
        lambda: (
            json.loads(aligned_file.read_text())
            if aligned_file.exists()
            else _eval_job(
                str(dpo_final),
                str(world_dir),
                str(aligned_file.parent),
                "aligned",
                s.seed,
                torch.get_num_threads(),
                progress=True,
            )["metrics"]
        ),
    )

    # 12. report + metrics.json
    _stage("12/12 report", False)
    result = {
        "sft": sft_metrics,
        "aligned": aligned_metrics,
        "reward_bench": bench_metrics,
        "dpo": {
            k: dpo_summary.get(k)
            for k in ("steps", "train_seconds", "ref_computed", "shared_prefix", "data", "epochs")
        },
        "wall_seconds": round(time.time() - t0, 1),
        "stage_seconds": timings,
    }
    from mmrlhf.demo_report import write_demo_report

    write_demo_report(out, result, dpo_summary.get("history", []))
    (out / "metrics.json").write_text(json.dumps(result, indent=1, sort_keys=True))
    _print_summary(out, sft_metrics, aligned_metrics, bench_metrics, result["wall_seconds"])
    return result


def _print_summary(
    out: Path, sft: dict[str, Any], aligned: dict[str, Any], bench: dict[str, Any], wall: float
) -> None:
    from rich.table import Table

    table = Table(title="SFT vs aligned (MM-DPO) on unseen scenes")
    table.add_column("metric")
    table.add_column("SFT", justify="right")
    table.add_column("aligned", justify="right")
    for k in (*DEMO_KEYS, "chair_coverage", "core_short_answer_acc", "refomb_score"):
        if k in sft and k in aligned:
            table.add_row(k, f"{sft[k]:.3f}", f"{aligned[k]:.3f}")
    # what the hallucinations are: habits alignment can remove vs misreads it cannot
    for k in sorted(k for k in sft if k.startswith("chair_hallucinated/") and k in aligned):
        table.add_row(k, str(sft[k]), str(aligned[k]))
    console.print(table)
    if bench:
        console.print(
            f"critique reward model on the held-out reward bench: Acc {bench['acc']:.3f}, Acc+ {bench['acc_plus']:.3f}"
        )
    console.print(f"wall time {wall:.0f} s")
    console.print(
        f"outputs: {out}/metrics.json, {out}/report.html, models in {out}/sft/final and {out}/dpo/final"
    )
