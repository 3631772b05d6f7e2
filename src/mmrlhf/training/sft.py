"""Supervised fine-tuning of a vision-language model: one explicit loop on accelerate.

Each record contributes one example per response (SFT data has one response per record; a
preference record can be used for SFT on its best response with ``data.response=best``). Only
response tokens are trained (``models.inputs``).

Loss normalisation: the loss of an optimizer step is the sum of token losses over *all* its
micro-batches (and processes) divided by the number of response tokens in all of them. So
``batch_size=8, grad_accum=1`` and ``batch_size=4, grad_accum=2`` give the same gradients, which
per-micro-batch means would not (micro-batches hold different token counts).
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mmrlhf.config import opt, sub
from mmrlhf.data.record import Record
from mmrlhf.models.inputs import IGNORE_INDEX, Example, collate, encode
from mmrlhf.models.load import ModelConfig, count_parameters, load_vlm
from mmrlhf.training.common import (
    MetricsLog,
    TrainConfig,
    load_checkpoint,
    make_optimizer,
    make_scheduler,
    resolve_resume,
    save_checkpoint,
)

log = logging.getLogger(__name__)


@dataclass
class SFTDataConfig:
    """Where the SFT examples come from and how they are encoded."""

    train: str = opt("", "Training records (JSONL/Parquet or any supported format).")
    eval: str = opt("", "Optional held-out records for an eval loss at the end of training.")
    format: str = opt("auto", "Input format (auto-detected from the file by default).")
    media_root: str = opt(
        "", "Folder image paths are relative to (default: the data file's folder)."
    )
    response: str = opt("all", "Which responses train: all, or best (rank 1 of a ranking).")
    max_length: int = opt(512, "Maximum tokens per example, image tokens included.")
    truncate_response: bool = opt(False, "Cut over-long responses instead of raising an error.")
    on_bad_record: str = opt("error", "error: stop at the first bad record; skip: skip and report.")
    limit: int = opt(0, "Use only the first N records (0: all).")
    cache_encodings: bool = opt(
        True,
        "Keep each example's encoding after its first use (image tensors shared between "
        "records of one image file). The processor is ~25% of a tiny-model SFT step; costs about "
        "one preprocessed image per distinct image file of memory (62 KB for a 72 px image).",
    )

    def validate(self) -> list[str]:
        out = []
        if self.response not in ("all", "best"):
            out.append(f"response must be all or best, got {self.response!r}")
        if self.on_bad_record not in ("error", "skip"):
            out.append(f"on_bad_record must be error or skip, got {self.on_bad_record!r}")
        return out


@dataclass
class SFTConfig:
    """``mmrlhf train sft`` configuration."""

    model: ModelConfig = sub(ModelConfig, "The model to fine-tune.")
    data: SFTDataConfig = sub(SFTDataConfig, "Training data.")
    train: TrainConfig = sub(TrainConfig, "Optimisation.")
    loss_norm: str = opt(
        "token",
        "token: the step's loss is the mean over all its response tokens (long responses weigh "
        "more); sequence: each example's token mean, then the mean over the step's examples.",
    )

    def validate(self) -> list[str]:
        out = []
        if self.loss_norm not in ("token", "sequence"):
            out.append(f"loss_norm must be token or sequence, got {self.loss_norm!r}")
        if not self.model.path:
            out.append("model.path is required")
        if not self.data.train:
            out.append("data.train is required")
        return out


def load_training_records(
    path: str, cfg: SFTDataConfig, report_dir: str | Path | None = None
) -> tuple[list[Record], str]:
    """Records from ``path`` plus the media root their image paths are relative to.

    In skip mode bad records are skipped, counted, and the full report is written to
    ``report_dir/load_report.json``: nothing is dropped silently.
    """
    from mmrlhf.data.io import load_records

    media_root = cfg.media_root or str(Path(path).parent)
    mode = "strict" if cfg.on_bad_record == "error" else "skip"
    records, report = load_records(path, format=cfg.format, media_root=media_root, mode=mode)
    if report.records_bad:
        where = ""
        if report_dir is not None:
            Path(report_dir).mkdir(parents=True, exist_ok=True)
            where = str(Path(report_dir) / "load_report.json")
            Path(where).write_text(json.dumps(report.to_dict(), indent=1))
        log.warning("%s: %s; skipped them (report: %s)", path, report.summary(), where or "-")
    if cfg.limit:
        records = records[: cfg.limit]
    return records, media_root


class SFTDataset(Dataset):
    """(record, response index) items, encoded on access (so DataLoader workers can do it)."""

    def __init__(self, records: list[Record], processor: Any, media_root: str, cfg: SFTDataConfig):
        self.records, self.processor, self.media_root, self.cfg = (
            records,
            processor,
            media_root,
            cfg,
        )
        self.items: list[tuple[int, int]] = []
        self._encoded: dict[int, Example] = {}
        self._vision: dict[tuple[str, ...], dict[str, torch.Tensor]] = {}
        for ri, r in enumerate(records):
            if cfg.response == "best" and r.ranking is not None:
                self.items.append((ri, r.ranking.groups[0][0]))
            else:
                self.items += [(ri, k) for k in range(r.k)]

    def __len__(self) -> int:
        return len(self.items)

    def approx_lengths(self) -> list[int]:
        """Cheap length proxies (characters of text) for length-grouped batching."""
        return [
            len(self.records[ri].query) + len(self.records[ri].responses[k].text)
            for ri, k in self.items
        ]

    def __getitem__(self, i: int) -> Example:
        hit = self._encoded.get(i)
        if hit is not None:
            return hit
        ri, k = self.items[i]
        rec = self.records[ri]
        ex = encode(
            rec,
            k,
            self.processor,
            media_root=self.media_root,
            max_length=self.cfg.max_length,
            truncate_response=self.cfg.truncate_response,
        )
        if self.cfg.cache_encodings:
            # The same image file preprocesses to the same tensors: keep one copy per file.
            paths = tuple(im.path or "" for im in rec.images)
            if rec.images and all(paths) and rec.video is None:
                ex.vision = self._vision.setdefault(paths, ex.vision)
            self._encoded[i] = ex
        return ex


def token_loss_sum(
    model: torch.nn.Module, batch: dict[str, Any], per_sequence: bool = False
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(sum of response-token cross-entropies, number of response tokens, number correct).

    Computed here rather than by the model's own ``loss`` (a per-batch mean) so that the loop
    can normalise over the whole accumulated step. Vocabulary logits are only computed from the
    batch's first response position on (``logits_to_keep``): image and prompt positions never
    train, and in a VLM they are most of the sequence. With ``per_sequence`` each example's
    token losses are divided by its own token count first: the sum is then a sum of per-example
    means (the loop divides it by the step's number of examples).
    """
    labels = batch["labels"]
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    mask_full = labels != IGNORE_INDEX
    first = int(mask_full.float().argmax(1).min()) if mask_full.any() else 1
    start = max(0, first - 1)
    logits = model(**inputs, logits_to_keep=labels.shape[1] - start).logits[:, :-1].float()
    target = labels[:, start + 1 :]
    mask = target != IGNORE_INDEX
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)),
        target.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    ).view_as(target)
    if per_sequence:
        losses = losses / mask.sum(1, keepdim=True).clamp(min=1)
    loss = losses.sum()
    correct = ((logits.argmax(-1) == target) & mask).sum()
    return loss, mask.sum(), correct


def epoch_order(
    lengths: list[int],
    batch_size: int,
    seed: int,
    group_by_length: bool,
    sort_within_step: bool = False,
) -> list[int]:
    """The example order of one epoch, a pure function of the seed (so resume replays it).
    ``batch_size`` is the optimizer step's size (batch_size * grad_accum).

    With ``group_by_length``, a shuffled order is cut into windows of 64 batches, each window is
    sorted by length and cut into batches, and the batches are shuffled: batches hold similar
    lengths (little padding; in the world, descriptions are 4x longer than short answers) while
    the order stays random. With ``sort_within_step`` instead, each step's slice of the shuffled
    order is sorted by length: the same examples per step, shorter padding per micro-batch.
    """
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=g).tolist()
    if not group_by_length:
        if sort_within_step:
            order = [
                i
                for b in range(0, len(order), batch_size)
                for i in sorted(order[b : b + batch_size], key=lambda i: lengths[i])
            ]
        return order
    window = 64 * batch_size
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: lengths[i])
        batches += [chunk[b : b + batch_size] for b in range(0, len(chunk), batch_size)]
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [i for b in perm for i in batches[b]]


def run_sft(cfg: SFTConfig, resume: str | None = None, stop_after: int | None = None) -> dict:
    """Train; returns a summary dict (final path, losses per step, timings).

    ``resume``: a checkpoint folder, or ``auto`` for the newest in ``train.output_dir``.
    ``stop_after``: stop (as if killed) after that many optimizer steps, for resume tests.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    tc = cfg.train
    per_seq = cfg.loss_norm == "sequence"
    out_dir = Path(tc.output_dir)
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, cpu=not torch.cuda.is_available())
    set_seed(tc.seed)
    if tc.num_threads > 0:
        # Tiny models on few CPU cores: splitting small matmuls across threads can cost more
        # than it gains (measured on 2 cores: 1 thread 3.3 steps/s, 2 threads 2.5).
        torch.set_num_threads(tc.num_threads)

    # 1. Model and processor (the model's own chat template and image processing).
    model, processor = load_vlm(cfg.model, for_training=True)
    trainable, total = count_parameters(model)
    log.info("model %s: %d / %d parameters trainable", cfg.model.path, trainable, total)

    # 2. Data: records -> (record, response) items encoded on access; a seeded shuffle per epoch
    #    so that a resumed run sees the same order.
    records, media_root = load_training_records(cfg.data.train, cfg.data, out_dir)
    dataset = SFTDataset(records, processor, media_root, cfg.data)
    if len(dataset) == 0:
        raise ValueError(f"{cfg.data.train}: no training examples")
    pad_id = processor.tokenizer.pad_token_id
    per_step = tc.batch_size * tc.grad_accum * accelerator.num_processes
    steps_per_epoch = max(1, len(dataset) // per_step)
    total_steps = tc.max_steps if tc.max_steps > 0 else steps_per_epoch * tc.epochs

    lengths = dataset.approx_lengths()

    def loader_for(epoch: int, skip_batches: int = 0) -> DataLoader:
        # Grouping works on whole optimizer steps (batch_size * grad_accum), so a step holds the
        # same examples whatever the accumulation split: accumulation stays exact.
        step_size = tc.batch_size * tc.grad_accum
        order = epoch_order(
            lengths, step_size, tc.seed * 1000 + epoch, tc.group_by_length, tc.sort_within_step
        )
        # Every process computes the same seeded order and takes its own stride of it (the
        # DataLoader is not handed to accelerate, whose sharding would re-shuffle); a resumed run
        # starts past the consumed batches without encoding them again.
        order = order[accelerator.process_index :: accelerator.num_processes]
        return DataLoader(
            dataset,
            batch_size=tc.batch_size,
            sampler=order[skip_batches * tc.batch_size :],
            collate_fn=lambda exs: collate(exs, pad_id),
            num_workers=tc.num_workers,
            persistent_workers=False,
            drop_last=True,
        )

    # 3. Optimiser, schedule, accelerate wrapping.
    optimizer = make_optimizer(model, tc)
    scheduler = make_scheduler(optimizer, tc, total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)

    # 4. Resume: restores weights, optimizer, scheduler and RNG; the loop counters say where in
    #    which epoch we were, and the same seeded order is replayed past the consumed batches.
    state = {"step": 0, "epoch": 0, "micro_in_epoch": 0, "losses": []}
    ckpt = resolve_resume(resume, out_dir)
    if ckpt is not None:
        state = load_checkpoint(accelerator, ckpt)
        accelerator.print(f"resumed from {ckpt} at step {state['step']}")

    metrics = MetricsLog(out_dir, tc.tensorboard, enabled=accelerator.is_main_process)
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=state["step"],
        desc="sft",
        disable=not (tc.progress and accelerator.is_local_main_process),
        dynamic_ncols=True,
    )
    model.train()
    t0, tokens_seen = time.time(), 0
    epoch = state["epoch"]
    while state["step"] < total_steps:
        it = iter(loader_for(epoch, skip_batches=state["micro_in_epoch"]))
        while state["step"] < total_steps:
            # 5. Take the step's micro-batches; count response tokens over all of them (and all
            #    processes) first, so each micro-batch's loss is normalised by the step's total.
            micro = []
            for _ in range(tc.grad_accum):
                b = next(it, None)
                if b is None:
                    break
                micro.append(b)
            if len(micro) < tc.grad_accum:
                break  # epoch exhausted; the partial step is dropped, like drop_last
            n_tok = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro)
            # The normaliser: response tokens, or examples with a response token.
            n_norm = (
                n_tok
                if not per_seq
                else sum(int((b["labels"][:, 1:] != IGNORE_INDEX).any(1).sum()) for b in micro)
            )
            n_norm_all = accelerator.reduce(
                torch.tensor(n_norm, device=accelerator.device), "sum"
            ).item()
            # 6. Forward/backward each micro-batch; gradients sync only on the last one.
            loss_sum, correct = 0.0, 0
            for j, b in enumerate(micro):
                b = {
                    k: v.to(accelerator.device) if isinstance(v, torch.Tensor) else v
                    for k, v in b.items()
                }
                sync = j == len(micro) - 1
                ctx = accelerator.no_sync(model) if not sync else contextlib.nullcontext()
                with ctx, accelerator.autocast():
                    ls, _, c = token_loss_sum(model, b, per_seq)
                    # DDP averages gradients over processes: scale back up to a global mean.
                    accelerator.backward(ls * accelerator.num_processes / max(1, n_norm_all))
                loss_sum += ls.item()
                correct += int(c)
                tokens_seen += int(b["attention_mask"].sum())
            # 7. Clip, step, schedule.
            grad_norm = None
            if tc.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["micro_in_epoch"] += len(micro)
            step_loss = loss_sum / max(1, n_norm)
            state["losses"].append(step_loss)
            # 8. Log, checkpoint.
            elapsed = time.time() - t0
            bar.update(1)
            bar.set_postfix(
                loss=f"{step_loss:.4f}", tok_s=f"{tokens_seen / max(elapsed, 1e-9):.0f}"
            )
            if state["step"] % tc.log_every == 0 or state["step"] == total_steps:
                m = {
                    "train/loss": step_loss,
                    "train/token_acc": correct / max(1, n_tok),
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/tokens_per_s": tokens_seen / max(elapsed, 1e-9),
                    "train/epoch": epoch
                    + state["micro_in_epoch"] / max(1, len(dataset) // tc.batch_size),
                }
                if grad_norm is not None:
                    m["train/grad_norm"] = float(grad_norm)
                metrics.log(state["step"], m)
            if tc.save_every and state["step"] % tc.save_every == 0 and state["step"] < total_steps:
                save_checkpoint(
                    accelerator,
                    out_dir,
                    state["step"],
                    {**state, "epoch": epoch},
                    tc.keep_checkpoints,
                )
            if stop_after is not None and state["step"] >= stop_after:
                bar.close()
                metrics.close()
                return {"stopped_at": state["step"], "losses": state["losses"]}
        epoch += 1
        state["epoch"], state["micro_in_epoch"] = epoch, 0
    bar.close()

    # 9. Optional eval loss, then the final model, saved so that it loads by path.
    summary: dict[str, Any] = {
        "steps": state["step"],
        "losses": state["losses"],
        "train_seconds": time.time() - t0,
    }
    if cfg.data.eval:
        summary["eval_loss"] = evaluate_loss(
            accelerator.unwrap_model(model), processor, cfg.data.eval, cfg
        )
        metrics.log(state["step"], {"eval/loss": summary["eval_loss"]})
    metrics.close()
    final = out_dir / "final"
    save_final(accelerator, model, processor, final)
    summary["final"] = str(final)
    return summary


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, processor: Any, path: str, cfg: SFTConfig) -> float:
    """Mean response-token loss on held-out records."""
    records, media_root = load_training_records(path, cfg.data)
    ds = SFTDataset(records, processor, media_root, cfg.data)
    pad_id = processor.tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    device = next(model.parameters()).device
    for b in DataLoader(
        ds, batch_size=cfg.train.batch_size, collate_fn=lambda e: collate(e, pad_id)
    ):
        b = {k: v.to(device) for k, v in b.items()}
        ls, nt, _ = token_loss_sum(model, b)
        total, n = total + ls.item(), n + int(nt)
    model.train(was_training)
    return total / max(1, n)


def save_final(accelerator: Any, model: torch.nn.Module, processor: Any, path: Path) -> None:
    """Save the trained model so that ``load_vlm`` loads it by path.

    LoRA runs also keep the adapter (``path/adapter``) and save the merged weights as the model,
    so downstream tools need not know it was trained with LoRA.
    """
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(model)
    tmp = path.with_name(f".tmp-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    if hasattr(unwrapped, "merge_and_unload"):
        unwrapped.save_pretrained(tmp / "adapter")
        unwrapped = unwrapped.merge_and_unload()
    unwrapped.save_pretrained(tmp)
    processor.save_pretrained(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)
