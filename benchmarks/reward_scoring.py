"""Reward-model throughput on world-sized inputs: scoring (responses/s) and training (steps/s).

Usage (prints one JSON object)::

    python benchmarks/reward_scoring.py --world runs/world --model runs/tiny [--records 64]
        [--train-steps 10] [--types scalar,fact,critique]

The world has no preference file of its own here, so a proxy is built from its SFT records: each
query gets its own (correct) response plus three responses of other queries of the same family
(wrong for this image), ranked ``1>2=3=4``, with a one-line critique per response. Lengths and
image tokens are therefore those of the world. The models are fresh heads on ``--model`` (speed
does not depend on the weights, except for critique generation, which stops at the end-of-turn
token: ``--max-new-tokens`` bounds it, and an untrained model may stop early or run to the
bound).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch

from mmrlhf.data.io import load_records, save_records
from mmrlhf.data.record import Ranking, Record, Response


def world_preference_proxy(
    world: Path, out: Path, k: int = 4, limit: int = 0, seed: int = 0
) -> Path:
    """Write ``out`` (records JSONL with image paths relative to ``world``): see module doc."""
    records, _ = load_records(world / "sft_train.jsonl", check_media=False)
    by_family: dict[str, list[Record]] = {}
    for r in records:
        by_family.setdefault(str(r.meta.get("family", r.category)), []).append(r)
    rng = random.Random(seed)
    outs = []
    for r in records[:limit] if limit else records:
        pool = [x for x in by_family[str(r.meta.get("family", r.category))] if x.id != r.id]
        others = rng.sample(pool, min(k - 1, len(pool)))
        truth = (r.facts.short_answer if r.facts and r.facts.short_answer else None) or (
            r.facts.captions[0].split(". ")[0] if r.facts and r.facts.captions else "see image"
        )
        resp = [Response(r.responses[0].text, critique="The response is correct.")]
        resp += [
            Response(o.responses[0].text, critique=f"The response is wrong: {truth}.")
            for o in others
            if o.responses[0].text != r.responses[0].text
        ]
        if len(resp) < 2:
            continue
        outs.append(
            Record(
                id=r.id,
                conversation=r.conversation,
                responses=resp,
                images=r.images,
                ranking=Ranking(groups=[[0], list(range(1, len(resp)))]),
                facts=r.facts,
                category=r.category,
                meta=r.meta,
            )
        )
    save_records(outs, out)
    return out


def bench_scoring(
    model: Path,
    data: Path,
    world: Path,
    rm_type: str,
    mode: str,
    n: int,
    batch_size: int,
    max_new_tokens: int,
    reference: bool = False,
    reference_diff: bool = False,
) -> dict:
    """``reference``: a reference-guided critique RM (it writes one answer per query first);
    ``reference_diff``: its prompts also state each response's differences from that answer."""
    from mmrlhf.models.reward import RewardModel, RewardSpec
    from mmrlhf.reward.score import score_records

    records, _ = load_records(data, media_root=world)
    records = records[:n]
    rm = RewardModel.from_pretrained(
        model,
        init_head=True,
        spec=RewardSpec(
            type=rm_type,
            reference=reference,
            response_first=reference,
            reference_diff=reference_diff,
        ),
        device="cpu",
    )
    t0 = time.perf_counter()
    score_records(
        rm,
        rm.processor,
        records,
        mode=mode,
        batch_size=batch_size,
        media_root=world,
        max_new_tokens=max_new_tokens,
        progress=False,
    )
    dt = time.perf_counter() - t0
    n_resp = sum(r.k for r in records)
    out = {
        "type": rm_type,
        "mode": mode,
        **({"reference": True} if reference else {}),
        **({"reference_diff": True} if reference_diff else {}),
        "responses": n_resp,
        "seconds": round(dt, 2),
        "responses_per_s": round(n_resp / dt, 1),
    }
    if rm_type == "critique" and mode in ("generate", "sample"):
        lens = [
            len(rm.processor.tokenizer(x.critique or "")["input_ids"])
            for r in records
            for x in r.responses
        ]
        out["mean_critique_tokens"] = round(sum(lens) / len(lens), 1)
    return out


def bench_training(
    model: Path, data: Path, world: Path, rm_type: str, steps: int, batch_size: int, tmp: Path
) -> dict:
    from mmrlhf.config import load_config
    from mmrlhf.training.reward import RewardConfig, run_reward

    cfg = load_config(
        RewardConfig,
        None,
        [
            f"model.path={model}",
            "model.device=cpu",
            f"data.train={data}",
            f"data.media_root={world}",
            "data.max_length=320",
            f"rm.type={rm_type}",
            f"train.output_dir={tmp / rm_type}",
            f"train.max_steps={steps}",
            f"train.batch_size={batch_size}",
            "train.lr=1e-3",
            "train.tensorboard=false",
            "train.progress=false",
            "train.num_threads=1",
            "train.group_by_length=true",
        ],
    )
    summary = run_reward(cfg)
    sec = summary["train_seconds"]
    return {
        "type": rm_type,
        "steps": steps,
        "queries_per_step": batch_size,
        "seconds": round(sec, 2),
        "steps_per_s": round(steps / sec, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--world", type=Path, required=True)
    ap.add_argument(
        "--model",
        type=Path,
        required=True,
        help="A tiny VLM or SFT folder, or a trained critique RM's folder: an SFT model stops its "
        "critiques after a few tokens, a trained critic writes them at full length (its head is "
        "re-initialised; only the speed is measured).",
    )
    ap.add_argument("--records", type=int, default=64, help="Queries scored per measurement.")
    ap.add_argument("--batch-size", type=int, default=32, help="Responses per scoring forward.")
    ap.add_argument("--max-new-tokens", type=int, default=32, help="Longest generated critique.")
    ap.add_argument("--train-steps", type=int, default=10, help="0 skips the training timing.")
    ap.add_argument("--train-batch", type=int, default=8, help="Queries per training step.")
    ap.add_argument("--types", default="scalar,fact,critique")
    args = ap.parse_args()
    torch.set_num_threads(1)
    types = args.types.split(",")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        data = world_preference_proxy(args.world, tmp / "prefs.jsonl", limit=max(args.records, 400))
        result: dict = {"threads": torch.get_num_threads(), "scoring": [], "training": []}
        for t in types:
            modes = [("none", False, False)]
            if t == "critique":
                modes = [
                    ("generate", False, False),
                    ("generate", True, False),
                    ("generate", True, True),
                    ("given", False, False),
                    ("none", False, False),
                ]
            for m, ref, diff in modes:
                result["scoring"].append(
                    bench_scoring(
                        args.model,
                        data,
                        args.world,
                        t,
                        m,
                        args.records,
                        args.batch_size,
                        args.max_new_tokens,
                        reference=ref,
                        reference_diff=diff,
                    )
                )
        for t in types if args.train_steps else []:
            result["training"].append(
                bench_training(
                    args.model, data, args.world, t, args.train_steps, args.train_batch, tmp
                )
            )
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
