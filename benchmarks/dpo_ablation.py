"""MM-DPO ablation on a finished demo folder: same scored data, same budget, different loss/pairs.

Variants (each trained from the demo's SFT model on the demo's RM-scored DPO data, then scored
with the world suite on unseen scenes):

- ``mmdpo_all``:  dynamic reward scaling (the demo's w), all pairs per query;
- ``dpo_all``:    plain DPO (w = 0), all pairs per query;
- ``mmdpo_one``:  dynamic scaling, one pair per query (best vs next);
- ``dpo_one``:    plain DPO, one pair per query (what pair-at-a-time pipelines do);
- ``mmdpo_all_no_nll``: dynamic scaling, all pairs, without the NLL term on the chosen response
  (the shipped config has MM-RLHF's published gamma 0.25).

Usage::

    python benchmarks/dpo_ablation.py --demo mmrlhf_out/demo [--variants dpo_all,mmdpo_one]

Prints one JSON object: per variant the headline metrics and the training time. The demo's own
DPO run is reused for ``mmdpo_all`` when its config matches.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = {
    "mmdpo_all": [],
    "dpo_all": ["loss.w=0"],
    "mmdpo_one": ["data.max_pairs_per_query=1"],
    "dpo_one": ["loss.w=0", "data.max_pairs_per_query=1"],
    "mmdpo_all_no_nll": ["loss.gamma=0"],
}
KEYS = (
    "chair_i",
    "chair_s",
    "pope_f1",
    "mmhal_score",
    "mmhal_hallucination_rate",
    "short_answer_acc",
    "refusal_rate",
    "over_refusal_rate",
    "refomb_score",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--demo", type=Path, required=True, help="A finished `mmrlhf demo` folder.")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="Comma-separated variants.")
    ap.add_argument(
        "--dpo-config", type=Path, default=None, help="Base DPO config (default: the demo's)."
    )
    args = ap.parse_args()

    from mmrlhf.config import load_config
    from mmrlhf.evaluation.suite import run_world_suite
    from mmrlhf.models.load import ModelConfig, load_vlm
    from mmrlhf.training.dpo import DPOConfig, run_dpo
    from mmrlhf.world.generate import load_world

    demo = args.demo
    base = args.dpo_config or demo / "dpo" / "config.yaml"
    out: dict[str, dict] = {}
    for name in args.variants.split(","):
        run_dir = demo / "ablation" / name
        cfg = load_config(
            DPOConfig,
            base,
            [f"train.output_dir={run_dir}", "train.progress=false", *VARIANTS[name]],
        )
        t = time.time()
        if not (run_dir / "final" / "config.json").exists():
            summary = run_dpo(cfg, resume="auto")
            (run_dir / "summary.json").write_text(json.dumps(summary))
        train_s = time.time() - t
        eval_dir = run_dir / "eval"
        if (eval_dir / "metrics.json").exists():
            metrics = json.loads((eval_dir / "metrics.json").read_text())
        else:
            model, proc = load_vlm(ModelConfig(path=str(run_dir / "final")), for_training=False)
            metrics = run_world_suite(
                model, proc, load_world(demo / "world"), eval_dir, name=name, progress=False
            )
        summary = json.loads((run_dir / "summary.json").read_text())
        out[name] = {
            **{k: metrics.get(k) for k in KEYS},
            "train_seconds": round(summary.get("train_seconds", train_s), 1),
            "pairs": summary.get("data", {}).get("pairs"),
            "w": cfg.loss.w,
            "max_pairs_per_query": cfg.data.max_pairs_per_query,
        }
    sft = json.loads((demo / "eval" / "sft" / "metrics.json").read_text())
    out["sft"] = {k: sft.get(k) for k in KEYS}
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
