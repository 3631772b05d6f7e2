"""MM-DPO (and plain DPO) for vision-language models: one explicit loop on accelerate.

A training item is a *query* (record) with all its preference pairs, not a pair. Per step:

- each query's image(s) and prompt are encoded once, whatever its number of responses, and each
  response's log-prob is computed once, whatever its number of pairs
  (:func:`mmrlhf.models.logprobs.response_logps`, shared-prefix KV cache; architectures that
  cannot share fall back to full forwards, said in the log);
- reference log-probs come from an on-disk cache (:mod:`mmrlhf.training.ref_cache`) keyed by
  the data and reference-model fingerprints; missing ones are computed on first use (LoRA: the
  policy with its adapter disabled, no second model in memory; full fine-tuning: a frozen copy,
  loaded only while something is missing) and saved, so later epochs and later runs skip the
  reference forward entirely;
- the loss is :func:`mmrlhf.losses.dpo.mmdpo_loss` over all pairs of the step, with each pair's
  beta scaled by its reward margin delta = r(chosen) - r(rejected) (``mmrlhf reward score``
  writes the rewards); ``loss.w = 0`` is plain DPO.

Accumulation is exact: a micro-batch's mean pair loss is weighted by its share of the step's
pairs, so ``batch_size=8, grad_accum=1`` equals ``4 x 2``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mmrlhf.config import opt, sub
from mmrlhf.data.pairs import derive_pairs
from mmrlhf.data.record import Record
from mmrlhf.losses.dpo import mmdpo_loss
from mmrlhf.models.load import ModelConfig, count_parameters, load_vlm
from mmrlhf.models.logprobs import (
    ResponseLogps,
    build_groups,
    groups_logps,
    supports_shared_prefix,
)
from mmrlhf.training.common import (
    MetricsLog,
    TrainConfig,
    load_checkpoint,
    make_optimizer,
    make_scheduler,
    resolve_resume,
    save_checkpoint,
)
from mmrlhf.training.ref_cache import RefLogpCache, cache_key, file_sha256, model_fingerprint
from mmrlhf.training.sft import epoch_order, save_final

log = logging.getLogger(__name__)


@dataclass
class DPODataConfig:
    """Preference records and how pairs are derived from them."""

    train: str = opt("", "Preference records (rankings or pair files, any supported format).")
    format: str = opt("auto", "Input format (auto-detected by default).")
    media_root: str = opt("", "Folder image paths are relative to (default: the data file's).")
    pairs: str = opt("all", "Pairs per query: all (every two ranks), best_vs_rest or adjacent.")
    max_pairs_per_query: int = opt(0, "Keep at most N pairs per query, in derive order (0: all).")
    margin: str = opt(
        "reward",
        "delta per pair: reward (r_chosen - r_rejected from Response.reward), given, none.",
    )
    max_length: int = opt(512, "Maximum tokens per (prompt + response), image tokens included.")
    on_bad_record: str = opt("error", "error: stop at the first bad record; skip: skip and report.")
    limit: int = opt(0, "Use only the first N records (0: all).")

    def validate(self) -> list[str]:
        out = []
        if self.pairs not in ("all", "best_vs_rest", "adjacent"):
            out.append(f"pairs must be all, best_vs_rest or adjacent, got {self.pairs!r}")
        if self.margin not in ("reward", "given", "none"):
            out.append(f"margin must be reward, given or none, got {self.margin!r}")
        return out


@dataclass
class DPOLossConfig:
    """MM-DPO loss (METHODS.md section 5)."""

    beta: float = opt(0.1, "Base DPO temperature.")
    w: float = opt(0.1, "Dynamic scaling strength (0: plain DPO).")
    k: float = opt(1.0, "Dynamic scaling rate k in 1 - exp(-k * delta) (not published).")
    beta_floor: float = opt(0.01, "Smallest per-pair beta (a negative delta shrinks beta).")
    gamma: float = opt(0.0, "Weight of the mean-token NLL on chosen responses.")


@dataclass
class DPORefConfig:
    """The reference model and its log-prob cache."""

    path: str = opt("", "Reference model folder (default: model.path; LoRA: adapter disabled).")
    cache_dir: str = opt("", "Reference log-prob cache folder (default: next to the data file).")
    batch_queries: int = opt(
        96,
        "Queries per reference forward while the cache fills: a step that misses the cache also "
        "computes the next queries of the epoch order, up to this many (larger no-grad batches; "
        "measured ~20% less reference time on CPU than one step's 12 queries).",
    )


@dataclass
class DPOConfig:
    """``mmrlhf train dpo`` configuration."""

    model: ModelConfig = sub(ModelConfig, "The policy (initialised from the SFT model).")
    ref: DPORefConfig = sub(DPORefConfig, "Reference model and log-prob cache.")
    data: DPODataConfig = sub(DPODataConfig, "Preference data.")
    loss: DPOLossConfig = sub(DPOLossConfig, "Loss.")
    train: TrainConfig = sub(TrainConfig, "Optimisation.")
    shared_prefix: bool = opt(True, "Encode each query's prompt + image once per step (exact).")
    cache_encodings: bool = opt(
        True, "Keep each query's processor output in memory across passes and epochs."
    )

    def validate(self) -> list[str]:
        out = []
        if not self.model.path:
            out.append("model.path is required")
        if not self.data.train:
            out.append("data.train is required")
        if self.data.margin == "none" and self.loss.w:
            out.append("loss.w > 0 needs a margin source (data.margin=reward or given)")
        if self.ref.batch_queries < 1:
            out.append(f"ref.batch_queries must be >= 1, got {self.ref.batch_queries}")
        return out


@dataclass
class QueryPairs:
    """One query's pairs as indices into its own ``responses`` list (the unique responses used)."""

    record: Record
    responses: list[int]
    chosen: list[int]
    rejected: list[int]
    delta: list[float]


def build_queries(records: list[Record], cfg: DPOConfig) -> tuple[list[QueryPairs], dict[str, int]]:
    """Derive each record's pairs; returns the queries with at least one pair and counts of what
    was left out (ties, records without pairs, identical responses)."""
    counts = {"records": len(records), "no_pairs": 0, "identical_pairs": 0, "pairs": 0}
    margin = {"reward": "reward", "given": "given", "none": "none"}[cfg.data.margin]
    out = []
    for rec in records:
        pairs = [p for p in derive_pairs(rec, cfg.data.pairs, "skip", margin) if not p.is_tie]
        same = [p for p in pairs if rec.responses[p.chosen].text == rec.responses[p.rejected].text]
        counts["identical_pairs"] += len(same)
        pairs = [p for p in pairs if p not in same]
        if cfg.data.max_pairs_per_query:
            pairs = pairs[: cfg.data.max_pairs_per_query]
        if not pairs:
            counts["no_pairs"] += 1
            continue
        if cfg.loss.w and any(p.margin is None for p in pairs):
            raise ValueError(
                f"record {rec.id}: loss.w > 0 needs a reward margin for every pair; score the data "
                "with `mmrlhf reward score` first or set data.margin=none and loss.w=0"
            )
        used = sorted({i for p in pairs for i in (p.chosen, p.rejected)})
        pos = {r: j for j, r in enumerate(used)}
        out.append(
            QueryPairs(
                rec,
                used,
                [pos[p.chosen] for p in pairs],
                [pos[p.rejected] for p in pairs],
                [p.margin or 0.0 for p in pairs],
            )
        )
        counts["pairs"] += len(pairs)
    return out, counts


def _flatten(queries: list[QueryPairs]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Chosen/rejected indices into the step's flattened response vector, and deltas."""
    chosen, rejected, delta, base = [], [], [], 0
    for q in queries:
        chosen += [base + c for c in q.chosen]
        rejected += [base + r for r in q.rejected]
        delta += q.delta
        base += len(q.responses)
    return torch.tensor(chosen), torch.tensor(rejected), torch.tensor(delta)


class QueryEncodings:
    """Each query's encodings (prompt + image once, each response's tokens), built on first use
    and kept for the reference pass, the policy pass and later epochs.

    The processor (image preprocessing, chat template, tokenizer) is as costly as a tiny model's
    forward: measured on the world, re-encoding every step was 27% of a step. ``enabled=False``
    keeps nothing (for datasets too large to hold their encodings in memory).
    """

    def __init__(self, processor: Any, media_root: str, max_length: int, enabled: bool = True):
        self.processor, self.media_root, self.max_length, self.enabled = (
            processor,
            media_root,
            max_length,
            enabled,
        )
        self.cache: dict[str, tuple[Any, list[Any]]] = {}

    def __call__(self, queries: list[QueryPairs]) -> tuple[list[Any], list[Any]]:
        groups, fulls = [], []
        for q in queries:
            hit = self.cache.get(q.record.id)
            if hit is None:
                g, f = build_groups(
                    [q.record],
                    [q.responses],
                    self.processor,
                    media_root=self.media_root,
                    max_length=self.max_length,
                )
                hit = (g[0], f)
                if self.enabled:
                    self.cache[q.record.id] = hit
            groups.append(hit[0])
            fulls += hit[1]
        return groups, fulls


def query_logps(
    model: torch.nn.Module, encodings: QueryEncodings, queries: list[QueryPairs], shared: bool
) -> ResponseLogps:
    """Summed log-probs of every query's used responses (flattened in query order)."""
    groups, fulls = encodings(queries)
    return groups_logps(model, groups, fulls, encodings.processor.tokenizer.pad_token_id, shared)[0]


class ReferenceLogps:
    """Reference log-probs for queries: from the cache, else computed and cached."""

    def __init__(
        self, cfg: DPOConfig, policy: torch.nn.Module, encodings: QueryEncodings, shared: bool
    ):
        self.cfg, self.policy, self.encodings, self.shared = cfg, policy, encodings, shared
        ref_path = cfg.ref.path or cfg.model.path
        settings = {"max_length": cfg.data.max_length, "lora_ref": cfg.model.lora.enabled}
        key = cache_key(file_sha256(cfg.data.train), model_fingerprint(ref_path), settings)
        cache_dir = cfg.ref.cache_dir or str(Path(cfg.data.train).parent / ".mmrlhf_ref_cache")
        self.cache = RefLogpCache(cache_dir, key)
        self.ref_path = ref_path
        self.model: torch.nn.Module | None = None
        self.computed = 0

    def _ref_model(self) -> tuple[torch.nn.Module, Any]:
        if self.cfg.model.lora.enabled:
            return self.policy, self.policy.disable_adapter()
        if self.model is None:
            # A frozen copy, loaded only when the cache misses something.
            ref_cfg = ModelConfig(**{**self.cfg.model.__dict__, "path": self.ref_path})
            ref_cfg.lora = type(self.cfg.model.lora)(enabled=False)
            self.model, _ = load_vlm(ref_cfg, for_training=False)
            self.model.requires_grad_(False)
        import contextlib

        return self.model, contextlib.nullcontext()

    def missing(self, q: QueryPairs) -> bool:
        return self.cache.missing((q.record.id, i) for i in q.responses)

    def start_from(self, policy: torch.nn.Module) -> None:
        """Use a frozen copy of the *untrained* policy as the reference (full fine-tuning with
        the reference at model.path): the same weights as loading them again, without the load.
        Only valid before the first optimizer step, so a resumed run loads from disk."""
        import copy

        self.model = copy.deepcopy(policy).requires_grad_(False).eval()

    @torch.no_grad()
    def __call__(self, queries: list[QueryPairs], ahead: Iterable[QueryPairs] = ()) -> torch.Tensor:
        """Reference log-probs of ``queries``' responses (flattened). When some are missing,
        the missing ones among ``ahead`` (the next queries of the epoch) are computed in the same
        forward, up to ``ref.batch_queries`` queries."""
        need = [q for q in queries if self.missing(q)]
        if need:
            room = self.cfg.ref.batch_queries - len(need)
            seen = {q.record.id for q in need}
            for q in ahead:
                if room <= 0:
                    break
                if q.record.id not in seen and self.missing(q):
                    need.append(q)
                    seen.add(q.record.id)
                    room -= 1
            model, ctx = self._ref_model()
            was = model.training
            model.eval()
            with ctx:
                res = query_logps(model, self.encodings, need, self.shared)
            model.train(was)
            vals = iter(res.logps.tolist())
            for q in need:
                for i in q.responses:
                    self.cache.put(q.record.id, i, next(vals))
            self.computed += sum(len(q.responses) for q in need)
        return torch.tensor(
            [self.cache.get(q.record.id, i) for q in queries for i in q.responses],
            dtype=torch.float32,
        )

    def release(self) -> None:
        """Drop the frozen reference copy once every entry is cached."""
        self.model = None


def _sync_grads(accelerator: Any, model: torch.nn.Module) -> None:
    """Average gradients over processes by hand: the shared-prefix path runs the *unwrapped*
    module twice per step (prompt, then responses), which DDP's one-forward hooks do not allow."""
    if accelerator.num_processes == 1:
        return
    for p in model.parameters():
        if p.grad is not None:
            torch.distributed.all_reduce(p.grad)
            p.grad /= accelerator.num_processes


def run_dpo(cfg: DPOConfig, resume: str | None = None, stop_after: int | None = None) -> dict:
    """Train; returns a summary (final path, per-step losses and metrics, reference-cache use).

    ``resume``: a checkpoint folder or ``auto``; ``stop_after``: stop as if killed (tests).
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from mmrlhf.training.sft import SFTDataConfig, load_training_records

    tc = cfg.train
    out_dir = Path(tc.output_dir)
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, cpu=not torch.cuda.is_available())
    set_seed(tc.seed)
    if tc.num_threads > 0:
        torch.set_num_threads(tc.num_threads)

    # 1. Policy (and processor). The reference is the adapter-disabled policy under LoRA, else
    #    a frozen copy that is only loaded while reference log-probs are missing from the cache.
    model, processor = load_vlm(cfg.model, for_training=True)
    trainable, total = count_parameters(model)
    log.info("policy %s: %d / %d parameters trainable", cfg.model.path, trainable, total)
    shared = cfg.shared_prefix and supports_shared_prefix(model)
    if cfg.shared_prefix and not shared:
        log.warning(
            "%s cannot share prompt computation: using full forwards", model.config.model_type
        )

    # 2. Data: records -> queries with their pairs; a seeded order per epoch (resume replays it).
    load_cfg = SFTDataConfig(
        train=cfg.data.train,
        format=cfg.data.format,
        media_root=cfg.data.media_root,
        on_bad_record=cfg.data.on_bad_record,
        limit=cfg.data.limit,
    )
    records, media_root = load_training_records(cfg.data.train, load_cfg, out_dir)
    queries, counts = build_queries(records, cfg)
    log.info("preference data: %s", counts)
    if not queries:
        raise ValueError(f"{cfg.data.train}: no preference pairs ({counts})")
    per_step = tc.batch_size * tc.grad_accum * accelerator.num_processes
    steps_per_epoch = max(1, len(queries) // per_step)
    total_steps = tc.max_steps if tc.max_steps > 0 else steps_per_epoch * tc.epochs
    lengths = [
        len(q.record.query) + sum(len(q.record.responses[i].text) for i in q.responses)
        for q in queries
    ]
    encodings = QueryEncodings(processor, media_root, cfg.data.max_length, cfg.cache_encodings)
    ref = ReferenceLogps(cfg, model, encodings, shared)

    # 3. Optimiser, schedule, accelerate.
    optimizer = make_optimizer(model, tc)
    scheduler = make_scheduler(optimizer, tc, total_steps)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    core = accelerator.unwrap_model(model)
    ref.policy = core

    # 4. Resume.
    state: dict[str, Any] = {"step": 0, "epoch": 0, "micro_in_epoch": 0, "losses": []}
    ckpt = resolve_resume(resume, out_dir)
    if ckpt is not None:
        state = load_checkpoint(accelerator, ckpt)
        accelerator.print(f"resumed from {ckpt} at step {state['step']}")
    elif not cfg.model.lora.enabled and not cfg.ref.path and any(ref.missing(q) for q in queries):
        # The untrained policy *is* the reference: copy it rather than load model.path again.
        ref.start_from(core)

    metrics = MetricsLog(out_dir, tc.tensorboard, enabled=accelerator.is_main_process)
    bar = tqdm(
        total=total_steps,
        initial=state["step"],
        desc="dpo",
        disable=not (tc.progress and accelerator.is_local_main_process),
        dynamic_ncols=True,
    )
    core.train()
    t0, pairs_seen = time.time(), 0
    epoch_times: list[dict[str, float]] = []
    epoch = state["epoch"]
    epoch_start, epoch_pairs = time.time(), 0
    history: list[dict[str, float]] = []
    while state["step"] < total_steps:
        step_size = tc.batch_size * tc.grad_accum
        order = epoch_order(lengths, step_size, tc.seed * 1000 + epoch, tc.group_by_length)
        order = order[accelerator.process_index :: accelerator.num_processes]
        pos = state["micro_in_epoch"] * tc.batch_size
        while state["step"] < total_steps:
            # 5. The step's micro-batches of queries; count pairs over all of them first so each
            #    micro-batch's mean loss is weighted by its share of the step's pairs.
            micro = []
            for _ in range(tc.grad_accum):
                idx = order[pos : pos + tc.batch_size]
                if len(idx) < tc.batch_size:
                    break
                micro.append([queries[i] for i in idx])
                pos += tc.batch_size
            if len(micro) < tc.grad_accum:
                break
            n_pairs = sum(len(q.chosen) for mb in micro for q in mb)
            step_metrics: dict[str, float] = {}
            loss_total = 0.0
            for mb in micro:
                # 6. Reference log-probs: cache, else computed once (no grad, together with the
                #    next queries of the epoch) and cached.
                # (lazy: only read when the step misses the cache)
                ahead = (queries[i] for i in order[pos : pos + cfg.ref.batch_queries])
                ref_lp = ref(mb, ahead)
                # 7. Policy log-probs: one prompt forward per query, one per response.
                with accelerator.autocast():
                    pol = query_logps(core, encodings, mb, shared)
                dev = pol.logps.device
                chosen, rejected, delta = (t.to(dev) for t in _flatten(mb))
                loss, m = mmdpo_loss(
                    pol.logps,
                    ref_lp.to(pol.logps.device),
                    chosen,
                    rejected,
                    beta=cfg.loss.beta,
                    delta=delta if cfg.data.margin != "none" else None,
                    w=cfg.loss.w,
                    k=cfg.loss.k,
                    beta_floor=cfg.loss.beta_floor,
                    chosen_nll=pol.nll,
                    gamma=cfg.loss.gamma,
                )
                share = len(chosen) / n_pairs
                accelerator.backward(loss * share)
                loss_total += float(loss.detach()) * share
                for k_, v in m.items():
                    if k_ != "n_pairs":
                        step_metrics[k_] = step_metrics.get(k_, 0.0) + v * share
            _sync_grads(accelerator, core)
            # 8. Clip, step, schedule.
            grad_norm = None
            if tc.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["micro_in_epoch"] += len(micro)
            state["losses"].append(loss_total)
            pairs_seen += n_pairs
            epoch_pairs += n_pairs
            history.append({"step": state["step"], "loss": loss_total, **step_metrics})
            # 9. Log, checkpoint (with the reference cache, so a resumed run does not recompute).
            elapsed = time.time() - t0
            bar.update(1)
            bar.set_postfix(
                loss=f"{loss_total:.4f}",
                acc=f"{step_metrics.get('rewards/accuracies', 0):.2f}",
                pairs_s=f"{pairs_seen / max(elapsed, 1e-9):.1f}",
            )
            if state["step"] % tc.log_every == 0 or state["step"] == total_steps:
                logged = {f"train/{k_}": v for k_, v in step_metrics.items()}
                logged.update(
                    {
                        "train/loss": loss_total,
                        "train/lr": scheduler.get_last_lr()[0],
                        "train/pairs_per_s": pairs_seen / max(elapsed, 1e-9),
                        "train/ref_cache_size": float(len(ref.cache)),
                    }
                )
                if grad_norm is not None:
                    logged["train/grad_norm"] = float(grad_norm)
                metrics.log(state["step"], logged)
            if tc.save_every and state["step"] % tc.save_every == 0 and state["step"] < total_steps:
                ref.cache.save()
                save_checkpoint(
                    accelerator,
                    out_dir,
                    state["step"],
                    {**state, "epoch": epoch},
                    tc.keep_checkpoints,
                )
            if stop_after is not None and state["step"] >= stop_after:
                ref.cache.save()
                bar.close()
                metrics.close()
                return {"stopped_at": state["step"], "losses": state["losses"], "history": history}
        # end of an epoch: every reference value of the data is cached now
        ref.cache.save()
        ref.release()
        dt = time.time() - epoch_start
        epoch_times.append(
            {
                "epoch": epoch,
                "seconds": dt,
                "pairs": epoch_pairs,
                "pairs_per_s": epoch_pairs / max(dt, 1e-9),
            }
        )
        epoch += 1
        state["epoch"], state["micro_in_epoch"] = epoch, 0
        epoch_start, epoch_pairs = time.time(), 0
    bar.close()
    ref.cache.save()
    metrics.close()
    final = out_dir / "final"
    save_final(accelerator, model, processor, final)
    return {
        "final": str(final),
        "steps": state["step"],
        "losses": state["losses"],
        "history": history,
        "epochs": epoch_times,
        "train_seconds": time.time() - t0,
        "ref_computed": ref.computed,
        "ref_cache": str(ref.cache.path),
        "shared_prefix": shared,
        "data": counts,
    }
