"""Pieces every training recipe shares: the optimisation config, the optimiser and schedule,
atomic checkpoints with resume, and logging. Each recipe keeps its own explicit loop."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmrlhf.config import opt

CHECKPOINT_PREFIX = "step-"


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings shared by the training recipes."""

    output_dir: str = opt("runs/sft", "Where checkpoints, logs and the final model go.")
    seed: int = opt(0, "Seed for data order and initialisation.")
    epochs: int = opt(1, "Passes over the training data (ignored when max_steps > 0).")
    max_steps: int = opt(-1, "Optimizer steps to run; -1 means derive from epochs.")
    batch_size: int = opt(8, "Sequences per micro-batch per process.")
    grad_accum: int = opt(1, "Micro-batches accumulated per optimizer step.")
    lr: float = opt(2e-5, "Peak learning rate (AdamW).")
    weight_decay: float = opt(0.0, "AdamW weight decay (not applied to biases and norms).")
    betas: list[float] = opt([0.9, 0.999], "AdamW betas.")
    lr_multipliers: dict[str, float] = opt(
        {},
        "Per-module learning rates: parameter-name substring -> multiplier of lr (the first "
        "matching key wins), e.g. {multi_modal_projector: 5.0} as LLaVA recipes give the "
        "projector its own lr. Unmatched parameters use lr.",
    )
    warmup_ratio: float = opt(0.03, "Share of steps with linear warmup.")
    min_lr_ratio: float = opt(0.0, "Cosine decays to lr * min_lr_ratio.")
    max_grad_norm: float = opt(1.0, "Gradient clipping norm (0 disables).")
    mixed_precision: str = opt("no", "no (fp32), bf16 or fp16 autocast via accelerate.")
    log_every: int = opt(10, "Log metrics every N optimizer steps.")
    save_every: int = opt(0, "Write a checkpoint every N optimizer steps (0: only at the end).")
    keep_checkpoints: int = opt(2, "How many step checkpoints to keep (oldest removed).")
    num_workers: int = opt(0, "DataLoader worker processes encoding examples.")
    num_threads: int = opt(0, "torch intra-op threads for compute (0: torch's default).")
    group_by_length: bool = opt(True, "Batch examples of similar length together (less padding).")
    sort_within_step: bool = opt(
        False,
        "Without group_by_length: sort each optimizer step's examples by length before cutting "
        "them into its grad_accum micro-batches. The step's examples (and, by exact "
        "accumulation, its gradient) are unchanged; the micro-batches pad less.",
    )
    tensorboard: bool = opt(True, "Write TensorBoard event files under output_dir/tb.")
    progress: bool = opt(True, "Show a progress bar.")

    def validate(self) -> list[str]:
        out = []
        if self.batch_size < 1 or self.grad_accum < 1:
            out.append("batch_size and grad_accum must be >= 1")
        if self.lr <= 0:
            out.append(f"lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            out.append(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            out.append(f"mixed_precision must be no, bf16 or fp16, got {self.mixed_precision!r}")
        if self.max_steps == 0 or (self.max_steps < 0 and self.epochs < 1):
            out.append("set max_steps > 0 or epochs >= 1")
        if len(self.betas) != 2:
            out.append("betas must have two values")
        for key, mult in self.lr_multipliers.items():
            if not key or mult <= 0:
                out.append(f"lr_multipliers: {key!r}: needs a non-empty key and a positive value")
        return out


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW over trainable parameters; no weight decay on biases and norm weights (1-D); one
    group per (lr multiplier, decay) so ``cfg.lr_multipliers`` sets per-module rates (the
    schedule scales every group's own lr)."""
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        mult = next((m for k, m in cfg.lr_multipliers.items() if k in name), 1.0)
        groups.setdefault((mult, p.dim() >= 2), []).append(p)
    return torch.optim.AdamW(
        [
            {
                "params": ps,
                "lr": cfg.lr * mult,
                "weight_decay": cfg.weight_decay if decay else 0.0,
            }
            # lr 1 groups first: the loops log get_last_lr()[0] as the base rate.
            for (mult, decay), ps in sorted(
                groups.items(), key=lambda kv: (kv[0][0] != 1.0, kv[0][0], not kv[0][1])
            )
        ],
        lr=cfg.lr,
        betas=tuple(cfg.betas),
    )


def lr_lambda(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warmup to 1 over ``warmup`` steps, then cosine to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(opt_: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int) -> Any:
    warmup = int(cfg.warmup_ratio * total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        opt_, lambda s: lr_lambda(s, total_steps, warmup, cfg.min_lr_ratio)
    )


# ---------------------------------------------------------------------------------------------
# checkpoints


def save_checkpoint(
    accelerator: Any, output_dir: str | Path, step: int, state: dict, keep: int
) -> Path:
    """Write a resumable checkpoint atomically: into a temporary folder, then one rename.

    A run killed mid-write leaves only the temporary folder, which is ignored and cleaned up; the
    last complete ``step-N`` folder is always usable. ``state`` holds the loop's own counters
    (written as trainer_state.json); accelerate writes model, optimizer, scheduler and RNG states.
    """
    ckpt_root = Path(output_dir) / "checkpoints"
    final = ckpt_root / f"{CHECKPOINT_PREFIX}{step:08d}"
    tmp = ckpt_root / f".tmp-{CHECKPOINT_PREFIX}{step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp), safe_serialization=True)
    if accelerator.is_main_process:
        (tmp / "trainer_state.json").write_text(json.dumps(state, indent=1))
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(ckpt_root)
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _fsync_dir(path: Path) -> None:
    for f in path.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first (temporary folders of killed writes are skipped)."""
    root = Path(output_dir) / "checkpoints"
    if not root.exists():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(CHECKPOINT_PREFIX))


def load_checkpoint(accelerator: Any, path: str | Path) -> dict:
    """Restore model/optimizer/scheduler/RNG from ``path``; returns the loop's saved counters."""
    path = Path(path)
    if not (path / "trainer_state.json").exists():
        raise FileNotFoundError(f"{path}: not a complete checkpoint (no trainer_state.json)")
    accelerator.load_state(str(path))
    return json.loads((path / "trainer_state.json").read_text())


def resolve_resume(resume: str | None, output_dir: str | Path) -> Path | None:
    """``--resume`` value -> checkpoint folder: ``auto``/``latest`` picks the newest complete one
    (None when there is none yet), anything else is a path."""
    if not resume:
        return None
    if resume in ("auto", "latest"):
        ckpts = list_checkpoints(output_dir)
        return ckpts[-1] if ckpts else None
    p = Path(resume)
    if not p.exists():
        raise FileNotFoundError(f"--resume {resume}: no such checkpoint")
    return p


class MetricsLog:
    """JSONL metrics file (always) + TensorBoard (optional), written on the main process."""

    def __init__(self, output_dir: str | Path, tensorboard: bool, enabled: bool = True) -> None:
        self.enabled = enabled
        self.writer = None
        if not enabled:
            return
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.file = open(out / "metrics.jsonl", "a")  # noqa: SIM115 (closed in close())
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(out / "tb"))

    def log(self, step: int, metrics: dict[str, float]) -> None:
        if not self.enabled:
            return
        self.file.write(json.dumps({"step": step, "time": time.time(), **metrics}) + "\n")
        self.file.flush()
        if self.writer is not None:
            for k, v in metrics.items():
                self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.enabled:
            self.file.close()
            if self.writer is not None:
                self.writer.close()
