"""DPO training throughput: ours (``run_dpo``) vs TRL's ``DPOTrainer`` on world-sized inputs.

Usage (prints one JSON object; writes only into a temporary folder)::

    python benchmarks/dpo_throughput.py [--steps 20] [--pairs-per-step 12] [--ks 2,4]
        [--order random|length|both] [--scenes 0] [--repeats 1] [--quick]

Measured numbers and where the time goes: docs/dpo.md, "Throughput vs TRL".

Setup, identical for both trainers:

- a shapes world (``mmrlhf.world.generate``, 72x72 images) and a tiny LLaVA
  (``TinyVLMConfig(text_hidden=128, text_layers=4)``: patch 24 so 9 image tokens, a 4 x 128 LM -
  the tiny default until the ninth session, kept so the documented table stays comparable -
  vocabulary trained on the world);
- one query per world question record (safety records left out); response 0 is the record's own
  answer (world length: a few words, descriptions ~40), responses 1..K-1 are corrupted copies
  (one or two colour / shape / size / position / number / yes-no words swapped), ranked
  ``1>2>...>K``, so K = 2 gives 1 pair per query and K = 4 gives 6;
- the same pairs per step (``--pairs-per-step``; ours: that many pairs' worth of *queries*, i.e.
  12 queries at K = 2, 2 at K = 4; TRL: that many pair rows), the same steps, fp32, AdamW, lr
  1e-5 cosine without warmup, clipping at 1.0, no gradient checkpointing, vision tower frozen on
  both sides (our default; done by hand for TRL), plain sigmoid DPO (w = 0), beta 0.1;
- the chat template is saved without the newline after ``</s>`` so TRL's completions are the same
  tokens as ours (it would otherwise train one extra ``\\n`` token per completion; see
  ``tests/training/test_trl_parity.py``, which also shows loss and gradients are equal);
- each run in its own subprocess, one after the other, 1 compute thread (``torch.set_num_threads``
  and ``OMP_NUM_THREADS``); peak memory is the child's ``VmHWM`` (whole process: imports, both
  models, training), and ``rss_before_train_mb`` the resident size just before training.

Figures: ours runs 2 epochs over the same queries with a fresh reference-cache folder; epoch 1
includes the reference forwards (and loading the frozen reference copy), epoch 2 reads every
reference log-prob from the cache. TRL runs ``--steps`` steps; its steady-state pairs/s excludes
the first step (time from the end of step 1 to the end of the last step, batch collation with
on-the-fly image processing included as it is for ours). Each figure is given per wall-clock
second and per CPU second of the process (``time.process_time``; with one compute thread that is
the work done, and other processes competing for the cores disturb it much less than wall time
(not entirely: caches and shared cores): ``cpu_share`` = CPU s / wall s of a run shows how contended it was; our epoch boundaries for
it are marked by wrapping ``run_dpo``'s ``epoch_order`` / ``save_final``). ``--repeats N`` runs
every measurement N times and keeps the best of each figure; peak memory is the smallest peak.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAFETY = "safety"
# word classes a corruption may swap within (world vocabulary)
SWAPS = [
    ["red", "green", "blue", "yellow", "purple", "white"],
    ["circle", "square", "triangle", "diamond", "cross"],
    ["circles", "squares", "triangles", "diamonds", "crosses"],
    ["large", "small"],
    ["left", "right", "top", "bottom", "center"],
    ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
    ["no", "one", "two", "three", "four"],
    ["Yes", "No"],
    ["meadow", "ocean", "snowfield", "desert", "night"],
]
WORD_CLASS = {w: cls for cls in SWAPS for w in cls}


def corrupt(text: str, rng: random.Random) -> str:
    """``text`` with one or two swappable words replaced by another of their class."""
    parts = re.split(r"(\W+)", text)
    idx = [i for i, p in enumerate(parts) if p in WORD_CLASS]
    if not idx:
        return text
    for i in rng.sample(idx, min(len(idx), rng.choice((1, 2)))):
        parts[i] = rng.choice([w for w in WORD_CLASS[parts[i]] if w != parts[i]])
    return "".join(parts)


def write_preferences(world: Path, out: Path, k: int, n: int, seed: int = 0) -> int:
    """Write ``n`` queries with ``k`` responses each (see module doc); returns how many."""
    from mmrlhf.data.io import load_records, save_records
    from mmrlhf.data.record import Ranking, Response

    records, _ = load_records(world / "sft_train.jsonl", check_media=False)
    records = [r for r in records if r.meta.get("family") != SAFETY]
    outs = []
    for r in records:
        if len(outs) == n:
            break
        rng = random.Random(f"{seed}:{r.id}")
        texts = [r.responses[0].text]
        for _ in range(50):
            if len(texts) == k:
                break
            t = corrupt(texts[0], rng)
            if t not in texts:
                texts.append(t)
        if len(texts) < k:
            continue
        r.responses = [Response(text=t) for t in texts]
        r.ranking = Ranking(groups=[[i] for i in range(k)])
        outs.append(r)
    if len(outs) < n:
        raise SystemExit(
            f"the world has only {len(outs)} usable queries, {n} needed: more --scenes"
        )
    save_records(outs, out)
    return len(outs)


def _mem() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmHWM", "VmRSS")):
            key, val = line.split(":")
            out[key] = int(val.split()[0]) / 1024
    return out


# ----------------------------------------------------------------------------------------------
# children (one per measurement)


def child_ours(spec: dict) -> dict:
    import torch

    import mmrlhf.training.dpo as dpo
    from mmrlhf.config import load_config
    from mmrlhf.training.dpo import DPOConfig, run_dpo

    # CPU-time marks at epoch boundaries: run_dpo calls epoch_order at the start of each epoch
    # and save_final after the last (the wall-clock epoch times come from its summary)
    marks: list[tuple[float, float]] = []
    order, save = dpo.epoch_order, dpo.save_final

    def marked(fn):
        def wrapper(*a, **k):
            marks.append((time.perf_counter(), time.process_time()))
            return fn(*a, **k)

        return wrapper

    dpo.epoch_order, dpo.save_final = marked(order), marked(save)
    torch.set_num_threads(1)
    tmp = Path(spec["tmp"])
    bs = spec["pairs_per_step"] // spec["pairs_per_query"]
    cfg = load_config(
        DPOConfig,
        None,
        [
            f"model.path={spec['model']}",
            "model.device=cpu",
            f"data.train={spec['data']}",
            "data.margin=none",
            "data.pairs=all",
            f"ref.cache_dir={tmp / 'refcache'}",  # fresh: epoch 1 computes the reference
            f"train.output_dir={tmp / 'out'}",
            "train.epochs=2",
            f"train.batch_size={bs}",
            "train.lr=1e-5",
            "train.warmup_ratio=0",
            "train.weight_decay=0",
            "train.max_grad_norm=1.0",
            "train.num_threads=1",
            f"train.group_by_length={str(spec['group_by_length']).lower()}",
            "train.tensorboard=false",
            "train.progress=false",
            "train.log_every=1000000",
            "loss.beta=0.1",
            "loss.w=0",
        ],
    )
    before = _mem()["VmRSS"]
    s = run_dpo(cfg)
    mem = _mem()
    e1, e2 = s["epochs"][0], s["epochs"][1]
    cpu1, cpu2 = marks[1][1] - marks[0][1], marks[2][1] - marks[1][1]
    return {
        "trainer": "ours",
        "steps_per_epoch": s["steps"] // 2,
        "pairs_per_epoch": e1["pairs"],
        "queries_per_step": bs,
        "epoch1_seconds": round(e1["seconds"], 3),
        "epoch1_pairs_per_s": round(e1["pairs_per_s"], 2),
        "epoch2_seconds": round(e2["seconds"], 3),
        "epoch2_pairs_per_s": round(e2["pairs_per_s"], 2),
        "epoch1_cpu_seconds": round(cpu1, 3),
        "epoch1_pairs_per_cpu_s": round(e1["pairs"] / cpu1, 2),
        "epoch2_cpu_seconds": round(cpu2, 3),
        "epoch2_pairs_per_cpu_s": round(e2["pairs"] / cpu2, 2),
        "cpu_share": round((cpu1 + cpu2) / (marks[2][0] - marks[0][0]), 2),
        "ref_computed": s["ref_computed"],
        "shared_prefix": s["shared_prefix"],
        "rss_before_train_mb": round(before, 1),
        "peak_rss_mb": round(mem["VmHWM"], 1),
    }


def child_trl(spec: dict) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    from mmrlhf.data.io import load_records
    from mmrlhf.data.pairs import derive_pairs
    from mmrlhf.models.inputs import load_media, to_messages
    from mmrlhf.models.load import load_processor, vision_tower

    torch.set_num_threads(1)
    tmp = Path(spec["tmp"])
    world = Path(spec["data"]).parent
    records, _ = load_records(spec["data"], media_root=world)

    def turn(text: str) -> list[dict]:
        return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]

    rows = []
    for r in records:
        images = load_media(r, world)[0]
        for p in derive_pairs(r, "all", "skip", "none"):
            rows.append(
                {
                    "images": images,
                    "prompt": to_messages(r),
                    "chosen": turn(r.responses[p.chosen].text),
                    "rejected": turn(r.responses[p.rejected].text),
                }
            )
    if spec["group_by_length"]:
        # like ours (characters of prompt + responses), for transformers' LengthGroupedSampler
        for row in rows:
            row["length"] = sum(len(m["content"][-1]["text"]) for m in row["prompt"]) + sum(
                len(row[k][0]["content"][0]["text"]) for k in ("chosen", "rejected")
            )
    dataset = Dataset.from_list(rows)
    processor = load_processor(spec["model"])
    model = AutoModelForImageTextToText.from_pretrained(
        spec["model"], dtype=torch.float32, attn_implementation="sdpa"
    )
    vision_tower(model).requires_grad_(False)  # as ours (model.freeze_vision_tower default)

    steps = spec["steps"]
    args = DPOConfig(
        output_dir=str(tmp / "trl"),
        max_length=None,
        per_device_train_batch_size=spec["pairs_per_step"],
        max_steps=steps,
        learning_rate=1e-5,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        beta=0.1,
        loss_type=["sigmoid"],
        activation_checkpointing=False,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1000000,
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=0,
        **(
            # the sampler reads the "length" column, which column pruning would remove first
            {"train_sampling_strategy": "group_by_length", "remove_unused_columns": False}
            if spec["group_by_length"]
            else {}
        ),
    )

    ends: list[float] = []
    cpu: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *a, **k):
            ends.append(time.perf_counter())
            cpu.append(time.process_time())

        def on_step_end(self, *a, **k):
            ends.append(time.perf_counter())
            cpu.append(time.process_time())

    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=[Clock()],
    )
    before = _mem()["VmRSS"]
    trainer.train()
    mem = _mem()
    pps = spec["pairs_per_step"]
    done = len(ends) - 1
    steady = (done - 1) * pps / (ends[-1] - ends[1])
    return {
        "trainer": "trl",
        "steps": done,
        "pairs_per_step": pps,
        "first_step_seconds": round(ends[1] - ends[0], 3),
        "steady_pairs_per_s": round(steady, 2),
        "all_steps_pairs_per_s": round(done * pps / (ends[-1] - ends[0]), 2),
        "steady_pairs_per_cpu_s": round((done - 1) * pps / (cpu[-1] - cpu[1]), 2),
        "cpu_share": round((cpu[-1] - cpu[0]) / (ends[-1] - ends[0]), 2),
        "rss_before_train_mb": round(before, 1),
        "peak_rss_mb": round(mem["VmHWM"], 1),
    }


def run_child(kind: str, spec: dict) -> dict:
    """One measurement in a fresh process (sequential; its own peak memory)."""
    out = Path(spec["tmp"]) / f"{kind}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, json.dumps({**spec, "out": str(out)})],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{kind} child failed:\n{proc.stderr[-4000:]}")
    res = json.loads(out.read_text())
    res["process_seconds"] = round(time.perf_counter() - t0, 1)
    res["load_avg_1m_before"] = round(load, 2)
    return res


def best(runs: list[dict], key: str) -> dict:
    return max(runs, key=lambda r: r[key])


def compare(
    tmp: Path, model: Path, data: Path, k: int, args: argparse.Namespace, grouped: bool
) -> dict:
    """Ours then TRL (``--repeats`` times each), one process per run; the best of each."""
    ppq = k * (k - 1) // 2
    ours_runs, trl_runs = [], []
    for rep in range(args.repeats):
        for kind, runs in (("ours", ours_runs), ("trl", trl_runs)):
            run_tmp = tmp / f"k{k}-{'len' if grouped else 'rand'}-{kind}-{rep}"
            run_tmp.mkdir()
            spec = {
                "tmp": str(run_tmp),
                "model": str(model),
                "data": str(data),
                "steps": args.steps,
                "pairs_per_step": args.pairs_per_step,
                "pairs_per_query": ppq,
                "group_by_length": grouped,
            }
            runs.append(run_child(kind, spec))
    peak_ours = min(r["peak_rss_mb"] for r in ours_runs)
    peak_trl = min(r["peak_rss_mb"] for r in trl_runs)

    def figures(e1: str, e2: str, t: str) -> dict:
        o1 = best(ours_runs, e1)[e1]
        o2 = best(ours_runs, e2)[e2]
        tp = best(trl_runs, t)[t]
        return {
            "ours_epoch1": o1,
            "ours_epoch2": o2,
            "trl_steady": tp,
            "ratio_epoch1_vs_trl": round(o1 / tp, 2),
            "ratio_epoch2_vs_trl": round(o2 / tp, 2),
        }

    return {
        "queries": args.steps * args.pairs_per_step // ppq,
        "pairs_per_query": ppq,
        "ours": ours_runs,
        "trl": trl_runs,
        "summary": {
            "pairs_per_s": figures(
                "epoch1_pairs_per_s", "epoch2_pairs_per_s", "steady_pairs_per_s"
            ),
            "pairs_per_cpu_s": figures(
                "epoch1_pairs_per_cpu_s", "epoch2_pairs_per_cpu_s", "steady_pairs_per_cpu_s"
            ),
            "ours_peak_rss_mb": peak_ours,
            "trl_peak_rss_mb": peak_trl,
            "ratio_peak_rss_ours_over_trl": round(peak_ours / peak_trl, 3),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="Steps per epoch (ours) and TRL steps.")
    ap.add_argument("--pairs-per-step", type=int, default=12)
    ap.add_argument("--ks", default="2,4", help="Responses per query to measure.")
    ap.add_argument(
        "--order",
        choices=("random", "length", "both"),
        default="random",
        help="Batch order: random on both sides (like for like), length-grouped on both "
        "(ours: train.group_by_length, its default; TRL: LengthGroupedSampler), or both.",
    )
    ap.add_argument("--scenes", type=int, default=0, help="World size (0: just enough).")
    ap.add_argument("--repeats", type=int, default=1, help="Keep the best of N runs each.")
    ap.add_argument("--quick", action="store_true", help="Smoke run: 3 steps, K = 2 and 4.")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        kind, spec = args.child[0], json.loads(args.child[1])
        res = {"ours": child_ours, "trl": child_trl}[kind](spec)
        Path(spec["out"]).write_text(json.dumps(res))
        return

    if args.quick:
        args.steps = min(args.steps, 3)
    ks = [int(k) for k in args.ks.split(",")]
    for k in ks:
        if k < 2 or args.pairs_per_step % (k * (k - 1) // 2):
            raise SystemExit(f"--pairs-per-step must be a multiple of {k * (k - 1) // 2} at K={k}")
    max_queries = max(args.steps * args.pairs_per_step // (k * (k - 1) // 2) for k in ks)
    orders = {"random": [False], "length": [True], "both": [False, True]}[args.order]

    from mmrlhf.models.load import load_processor
    from mmrlhf.models.tiny import TinyVLMConfig, build_tiny_vlm, tokenizer_corpus
    from mmrlhf.world.generate import generate

    bench_model = TinyVLMConfig(text_hidden=128, text_layers=4)

    with tempfile.TemporaryDirectory(prefix="dpo_bench_") as d:
        tmp = Path(d)
        t0 = time.perf_counter()
        scenes = args.scenes or max(20, int(max_queries / 3.2) + 10)
        generate(tmp / "world", scenes, seed=0)
        model = build_tiny_vlm(tmp / "model", tokenizer_corpus(tmp / "world"), bench_model)
        # the assistant turn ends at </s>: TRL and ours then train the same tokens (module doc)
        processor = load_processor(model)
        if "</s>{{ '\\n' }}" not in processor.chat_template:
            raise SystemExit("unexpected tiny chat template: cannot align TRL's completions")
        processor.chat_template = processor.chat_template.replace("</s>{{ '\\n' }}", "</s>")
        processor.save_pretrained(model)
        setup_s = time.perf_counter() - t0

        result: dict = {
            "machine": {"cpus": os.cpu_count(), "load_avg_1m_start": os.getloadavg()[0]},
            "setup": {
                "scenes": scenes,
                "steps": args.steps,
                "pairs_per_step": args.pairs_per_step,
                "threads": 1,
                "repeats": args.repeats,
                "model": "TinyVLMConfig(text_hidden=128, text_layers=4) llava, 72 px, 9 image tokens",
                "setup_seconds": round(setup_s, 1),
            },
            "results": {},
        }
        for grouped in orders:
            section = result["results"].setdefault("length_grouped" if grouped else "random", {})
            for k in ks:
                n = args.steps * args.pairs_per_step // (k * (k - 1) // 2)
                data = tmp / "world" / f"prefs_k{k}.jsonl"
                if not data.exists():
                    write_preferences(tmp / "world", data, k, n)
                section[f"K={k}"] = compare(tmp, model, data, k, args, grouped)
        result["machine"]["load_avg_1m_end"] = os.getloadavg()[0]
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
