"""Reward-model training (scalar, factually augmented, critique-based): one explicit loop.

A batch holds *records* (queries), not pairs. Per step every distinct response of each query is
encoded and scored once, however many pairs it belongs to; pairs are index tensors into the
step's reward vector (``mmrlhf.losses.reward.reward_loss``). A query with K ranked responses has
up to K(K-1)/2 pairs, so this is K-1 times fewer forwards than encoding pair sides, and (with a
dropout head) a response gets one reward per step rather than a different one in each pair.

Loss of an optimizer step (METHODS.md section 4)::

    mean_pairs BT(r_c - r_r - margin) + centring * mean_pairs (r_c + r_r)^2
    + tie_weight * mean_ties (r_a - r_b)^2 + lambda_critique * token-mean LM loss on critiques

(a reference-guided critique RM, ``rm.reference``, adds its reference answers' tokens to that LM
token mean: one extra sequence per query, the best response after the question).

Each mean is over the *whole* step (all micro-batches and processes): a micro-batch's pair terms
are weighted by its share of the step's pairs and its LM sum divided by the step's critique
tokens, so gradient accumulation is exact.

Deviation from MM-RLHF (critique RM): their loss adds ``LM_chosen + LM_rejected`` per pair, so a
response in three pairs has its critique trained three times. Here the LM term is one token mean
over the step's distinct responses: each critique counts once, consistent with encode-once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from mmrlhf.config import opt, sub
from mmrlhf.data.pairs import STRATEGIES, TIES, derive_pairs
from mmrlhf.data.record import Record, RecordError
from mmrlhf.losses.reward import reward_loss
from mmrlhf.models.inputs import IGNORE_INDEX, Example, collate, load_media
from mmrlhf.models.load import ModelConfig, count_parameters
from mmrlhf.models.reward import (
    RewardModel,
    RewardSpec,
    RewardTemplates,
    best_response,
    encode_for_reward,
    encode_reference,
    facts_block,
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
from mmrlhf.training.sft import epoch_order

log = logging.getLogger(__name__)


@dataclass
class RewardDataConfig:
    """Preference records and how they become pairs."""

    train: str = opt("", "Training preference records (any supported format).")
    eval: str = opt("", "Held-out preference records: pair accuracy every eval_every steps.")
    format: str = opt("auto", "Input format (auto-detected from the file by default).")
    media_root: str = opt("", "Folder image paths are relative to (default: the data file's).")
    max_length: int = opt(512, "Maximum tokens per scored sequence, image tokens included.")
    truncate_response: bool = opt(False, "Cut over-long responses/critiques instead of raising.")
    pairs: str = opt("all", "Pairs from a ranking: all, best_vs_rest or adjacent.")
    ties: str = opt("skip", "Tied responses: skip (no pair) or keep (tie term, rm.tie_weight).")
    margin: str = opt("none", "BT margin per pair: none, scores (score gap) or rank (rank gap).")
    margin_scale: float = opt(1.0, "Multiplier on the margin (margin = scale * gap).")
    on_bad_record: str = opt("error", "Loader: error at the first invalid record, or skip them.")
    strict: bool = opt(
        False,
        "Raise (naming the record) on a record without usable pairs, an identical-text pair, or "
        "missing facts/critiques, instead of skipping it with a counted warning.",
    )
    eval_every: int = opt(0, "Evaluate pair accuracy on data.eval every N steps (0: at the end).")
    eval_critique: str = opt(
        "given", "Critique RM eval: given (the data's critiques) or none (empty critique)."
    )
    limit: int = opt(0, "Use only the first N training records (0: all).")

    def validate(self) -> list[str]:
        out = []
        for name, allowed in (
            ("pairs", STRATEGIES),
            ("ties", TIES),
            ("margin", ("none", "scores", "rank")),
            ("on_bad_record", ("error", "skip")),
            ("eval_critique", ("given", "none")),
        ):
            if getattr(self, name) not in allowed:
                out.append(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        return out


@dataclass
class RMConfig:
    """The reward model and its loss weights."""

    type: str = opt(
        "scalar", "scalar, fact (facts in the prompt) or critique (critique, then score)."
    )
    head: str = opt("mm_rlhf", "mm_rlhf (dropout, Linear(H,H), tanh, dropout, Linear) or linear.")
    head_dropout: float = opt(0.1, "Dropout of the mm_rlhf head.")
    facts: bool = opt(
        False, "critique type: the record's facts in the prompt too (critique + factual RM)."
    )
    response_first: bool = opt(
        False,
        "The response in the question turn before the image (with a question-first template, "
        "image tokens then see it), read at an empty assistant turn; critique after it.",
    )
    reference: bool = opt(
        False,
        "critique type: reference-guided critique - answer the question first (the record's "
        "best-ranked response is the reference it learns to write, LM loss), then critique the "
        "response with that answer in context (see RewardSpec.reference).",
    )
    reference_diff: bool = opt(
        False,
        "reference-guided critique RM: the response's claim-level differences from the "
        "reference stated after it in the prompt (see RewardSpec.reference_diff).",
    )
    reference_weight: float = opt(
        1.0,
        "reference-guided critique RM: weight of a reference-answer token in the LM term "
        "relative to a critique token (the reference is short and its tokens few). 0: no "
        "reference row; the RM does not learn to write references and scoring takes them from "
        "another model (mmrlhf reward score --reference-model, e.g. the SFT model).",
    )
    centring: float = opt(0.01, "Weight c of c * mean((r_chosen + r_rejected)^2) (MM-RLHF: 0.01).")
    tie_weight: float = opt(1.0, "Weight of mean((r_a - r_b)^2) over tie pairs (data.ties=keep).")
    lambda_critique: float = opt(1.0, "critique RM: weight of the token-mean LM loss on critiques.")
    critique_focus: str = opt(
        "",
        "critique RM: a regular expression searched in each training critique; the critique "
        "tokens inside its matches (inside its groups where it has groups) weigh "
        "critique_focus_weight in the LM term, e.g. the verdict word, which is one token of a "
        "critique's thirty and otherwise gets a thirtieth of the gradient. Empty: every token 1.",
    )
    critique_focus_weight: float = opt(
        1.0, "critique RM: the LM-loss weight of a token inside critique_focus (others 1)."
    )
    critique_dropout: float = opt(
        0.0,
        "critique RM: probability that a response is scored with an empty critique in a training "
        "step (no LM loss on it then), so the head also learns to judge the response itself "
        "and not only to read the verdict of a (human-written, always right) critique.",
    )
    score_grad: float = opt(
        1.0,
        "Share of the pair loss's gradient that reaches the backbone through the reward (the "
        "head always gets all of it). 0 with the critique type: the backbone learns only to "
        "write critiques (LM loss) and the head learns to read them.",
    )
    templates: RewardTemplates = sub(RewardTemplates, "Prompt texts (facts, critique request).")

    def validate(self) -> list[str]:
        out = self.spec().validate()
        if not 0 <= self.score_grad <= 1:
            out.append(f"score_grad must be in [0, 1], got {self.score_grad}")
        if self.reference_weight < 0:
            out.append(f"reference_weight must be >= 0, got {self.reference_weight}")
        if not 0 <= self.critique_dropout < 1:
            out.append(f"critique_dropout must be in [0, 1), got {self.critique_dropout}")
        if self.critique_focus_weight < 0:
            out.append(f"critique_focus_weight must be >= 0, got {self.critique_focus_weight}")
        if self.critique_focus:
            if self.type != "critique":
                out.append("critique_focus needs rm.type=critique")
            try:
                re.compile(self.critique_focus)
            except re.error as e:
                out.append(f"critique_focus is not a regular expression: {e}")
        return out

    def spec(self) -> RewardSpec:
        return RewardSpec(
            type=self.type,
            head=self.head,
            head_dropout=self.head_dropout,
            facts=self.facts,
            response_first=self.response_first,
            reference=self.reference,
            reference_diff=self.reference_diff,
            writes_reference=self.reference_weight > 0 and self.lambda_critique > 0,
            templates=self.templates,
        )


@dataclass
class RewardConfig:
    """``mmrlhf train rm`` configuration."""

    model: ModelConfig = sub(
        ModelConfig, "The backbone: an SFT model, or a reward model to continue."
    )
    data: RewardDataConfig = sub(RewardDataConfig, "Preference data.")
    rm: RMConfig = sub(RMConfig, "Reward model type and loss.")
    train: TrainConfig = dataclasses.field(
        default_factory=lambda: TrainConfig(output_dir="runs/rm"),
        metadata={"help": "Optimisation (train.batch_size counts records, i.e. queries)."},
    )

    def validate(self) -> list[str]:
        out = []
        if not self.model.path:
            out.append("model.path is required")
        if not self.data.train:
            out.append("data.train is required")
        return out


# ---------------------------------------------------------------------------------------------
# data: records -> items (distinct responses + index pairs)


@dataclass
class RMItem:
    """One query ready for the loop: its distinct responses and pairs as local indices."""

    record: Record
    texts: list[str]  # distinct response texts, first-appearance order
    critiques: list[str | None]  # per text (critique RM), else Nones
    chosen: list[int]
    rejected: list[int]
    margin: list[float]
    tie_a: list[int]
    tie_b: list[int]
    reference: str | None = None  # reference-guided critique RM: the best response's text


class PairDataError(RecordError):
    """A record the reward loop cannot use (raised in strict mode)."""


def prepare_items(
    records: list[Record], data: RewardDataConfig, spec: RewardSpec, *, strict: bool | None = None
) -> tuple[list[RMItem], Counter]:
    """Records -> :class:`RMItem` s, with counts of what was skipped and why.

    Skipped (strict: raised naming the record): fewer than 2 distinct responses; pairs whose two
    responses have identical text; records whose responses are all tied (no pairs); records
    without facts (fact RM) or with a response without critique (critique RM); records without
    a best response (reference-guided critique RM: every pair's chosen is rejected elsewhere).
    """
    strict = data.strict if strict is None else strict
    counts: Counter = Counter()
    margin_kind = data.margin if data.margin != "none" else "none"
    out = []

    def skip(rec: Record, what: str, field: str, msg: str) -> None:
        if strict:
            raise PairDataError(field, msg, source=rec.id)
        counts[what] += 1

    for rec in records:
        texts = list(dict.fromkeys(r.text for r in rec.responses))
        if len(texts) < 2:
            skip(
                rec,
                "fewer_than_2_distinct_responses",
                "responses",
                f"{len(texts)} distinct response text(s); a pair needs 2",
            )
            continue
        if spec.uses_facts and facts_block(rec, spec.templates) is None:
            skip(
                rec,
                "missing_facts",
                "facts",
                f"the {spec.type} reward model needs facts; none here",
            )
            continue
        slot = {t: i for i, t in enumerate(texts)}
        crits: list[str | None] = [None] * len(texts)
        if spec.type == "critique":
            for r in rec.responses:
                if crits[slot[r.text]] is None:
                    crits[slot[r.text]] = r.critique
            if any(c is None for c in crits):
                skip(
                    rec,
                    "missing_critique",
                    "responses[].critique",
                    "the critique reward model trains on critiques; a response has none",
                )
                continue
        reference = None
        if spec.reference:
            best = best_response(rec)
            if best is None:
                skip(
                    rec,
                    "no_best_response",
                    "ranking",
                    "the reference-guided critique RM learns to write the best response; this "
                    "record's preferences have none that no pair rejects",
                )
                continue
            reference = rec.responses[best].text
        item = RMItem(rec, texts, crits, [], [], [], [], [], reference)
        for p in derive_pairs(rec, data.pairs, data.ties, margin_kind):
            a, b = slot[rec.responses[p.chosen].text], slot[rec.responses[p.rejected].text]
            if a == b:
                if strict:
                    raise PairDataError(
                        "responses",
                        f"pair ({p.chosen}, {p.rejected}) compares two identical texts",
                        source=rec.id,
                    )
                counts["identical_text_pairs"] += 1
                continue
            if p.is_tie:
                item.tie_a.append(a)
                item.tie_b.append(b)
                continue
            if data.margin != "none" and p.margin is None:
                counts["pairs_without_margin"] += 1
            item.chosen.append(a)
            item.rejected.append(b)
            item.margin.append(data.margin_scale * (p.margin or 0.0))
        if not item.chosen and not item.tie_a:
            skip(rec, "no_pairs", "ranking", "no usable pair (all responses tied?)")
            continue
        out.append(item)
    return out, counts


def report_skips(counts: Counter, where: str) -> None:
    if counts:
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()))
        log.warning("%s: skipped/ignored %s (data.strict=true raises instead)", where, detail)


class RMDataset(Dataset):
    """Items encoded on access: every distinct response once, media loaded once per record.

    ``train_reference`` (reference-guided critique RM, LM training): one more row per record
    after its responses, the reference answer as an SFT example (question and image, the best
    response labelled). It is in no pair; its tokens join the LM term's token mean. Without it
    the critique LM loss alone overwrites the answering skill the reference is written with
    (measured on the world: none of 300 references right after 3200 steps; docs/reward.md).
    Its tokens weigh ``reference_weight`` (``Example.label_weights``), as ``focus`` weighs
    the critique tokens it picks (:func:`mmrlhf.models.reward.focus_spans`).
    """

    def __init__(
        self,
        items: list[RMItem],
        processor: Any,
        media_root: str,
        spec: RewardSpec,
        data: RewardDataConfig,
        critique_mode: str = "given",
        critique_dropout: float = 0.0,
        seed: int = 0,
        train_reference: bool = False,
        focus: tuple[re.Pattern[str], float] | None = None,
        reference_weight: float = 1.0,
    ) -> None:
        self.items, self.processor, self.media_root = items, processor, media_root
        self.focus, self.reference_weight = focus, reference_weight
        self.train_reference = train_reference
        self.spec, self.data, self.critique_mode = spec, data, critique_mode
        self.critique_dropout, self.seed = critique_dropout, seed
        # Set by the loop before each epoch's loader: the dropped critiques change per epoch
        # and are a pure function of (seed, epoch, item, slot), so a resumed run replays them.
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.items)

    def approx_lengths(self) -> list[int]:
        return [sum(len(t) for t in it.texts) + len(it.record.query) for it in self.items]

    def __getitem__(self, i: int) -> tuple[list[Example], RMItem]:
        it = self.items[i]
        crits = None
        dropped: list[bool] = [False] * len(it.texts)
        if self.spec.type == "critique":
            crits = it.critiques if self.critique_mode == "given" else [""] * len(it.texts)
            if self.critique_dropout > 0 and self.critique_mode == "given":
                rng = random.Random(f"{self.seed}:{self.epoch}:{i}")
                dropped = [rng.random() < self.critique_dropout for _ in it.texts]
                crits = ["" if d else c for c, d in zip(crits, dropped, strict=True)]
        media = load_media(it.record, self.media_root)
        exs = encode_for_reward(
            it.record,
            it.texts,
            self.processor,
            self.spec,
            critiques=crits,
            reference=it.reference,
            media=media,
            max_length=self.data.max_length,
            truncate_response=self.data.truncate_response,
            focus=self.focus,
        )
        for ex, d in zip(exs, dropped, strict=True):
            if d:  # scored with an empty critique: nothing to learn to write
                ex.labels = torch.full_like(ex.labels, IGNORE_INDEX)
        if self.train_reference:
            ref = encode_reference(
                it.record,
                self.processor,
                self.spec,
                it.reference,
                media=media,
                max_length=self.data.max_length,
                truncate_response=self.data.truncate_response,
            )
            if self.reference_weight != 1.0:
                ref.label_weights = torch.full(ref.labels.shape, self.reference_weight)
            exs.append(ref)
        return exs, it


def collate_items(batch: list[tuple[list[Example], RMItem]], pad_id: int) -> dict[str, Any]:
    """Records -> one padded batch of all their distinct responses + global index pairs.

    Returns the model inputs plus ``pairs``: ``chosen``/``rejected``/``margin``/``item`` ``[P]``
    and ``tie_a``/``tie_b`` ``[T]`` indexing the batch's rows (``item``: the pair's record), and
    ``token_weight [B, T]`` where some row has ``label_weights`` (the LM term's weights:
    rm.critique_focus, rm.reference_weight).
    """
    exs: list[Example] = []
    ch, rj, mg, ta, tb, owner = [], [], [], [], [], []
    for k, (e, it) in enumerate(batch):
        off = len(exs)
        exs += e
        ch += [off + c for c in it.chosen]
        rj += [off + r for r in it.rejected]
        mg += it.margin
        owner += [k] * len(it.chosen)
        ta += [off + a for a in it.tie_a]
        tb += [off + b for b in it.tie_b]
    out = collate(exs, pad_id)
    token_weight = None
    if any(e.label_weights is not None for e in exs):
        # [B, T] aligned with out["labels"] (right padding, as collate pads)
        token_weight = torch.ones(out["labels"].shape)
        for i, e in enumerate(exs):
            if e.label_weights is not None:
                token_weight[i, : len(e.label_weights)] = e.label_weights
    out["pairs"] = {
        "chosen": torch.tensor(ch, dtype=torch.long),
        "rejected": torch.tensor(rj, dtype=torch.long),
        "margin": torch.tensor(mg, dtype=torch.float32),
        "tie_a": torch.tensor(ta, dtype=torch.long),
        "tie_b": torch.tensor(tb, dtype=torch.long),
        "item": torch.tensor(owner, dtype=torch.long),  # [P] which record of the batch
    }
    if token_weight is not None:
        out["pairs"]["token_weight"] = token_weight  # [B, T]
    return out


def _focus(rm: RMConfig, items: list[RMItem], path: str) -> tuple[re.Pattern[str], float] | None:
    """``rm.critique_focus`` compiled, after counting the training critiques it matches (logged;
    a pattern that matches none is a configuration error, not a silent no-op)."""
    if not rm.critique_focus:
        return None
    pattern = re.compile(rm.critique_focus)
    crits = [c for it in items for c in it.critiques if c]
    hits = sum(1 for c in crits if pattern.search(c))
    if not hits:
        raise ValueError(
            f"{path}: rm.critique_focus {rm.critique_focus!r} matches none of the "
            f"{len(crits)} training critiques"
        )
    log.info(
        "rm.critique_focus matches %d of %d training critiques (weight %g)",
        hits,
        len(crits),
        rm.critique_focus_weight,
    )
    return None if rm.critique_focus_weight == 1.0 else (pattern, rm.critique_focus_weight)


def _load(path: str, data: RewardDataConfig, limit: int = 0) -> tuple[list[Record], str]:
    from mmrlhf.data.io import load_records

    media_root = data.media_root or str(Path(path).parent)
    mode = "strict" if data.on_bad_record == "error" else "skip"
    records, report = load_records(
        path, format=data.format, media_root=media_root, mode=mode, task="preference"
    )
    if report.records_bad:
        log.warning("%s: %s; skipped them", path, report.summary())
    return (records[:limit] if limit else records), media_root


def _to(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {
        k: (
            v.to(device)
            if isinstance(v, torch.Tensor)
            else _to(v, device)
            if isinstance(v, dict)
            else v
        )
        for k, v in batch.items()
    }


# ---------------------------------------------------------------------------------------------
# the loop


def run_reward(cfg: RewardConfig, resume: str | None = None, stop_after: int | None = None) -> dict:
    """Train a reward model; returns a summary (final path, per-step losses and accuracies).

    ``resume``: a checkpoint folder, or ``auto`` for the newest in ``train.output_dir``.
    ``stop_after``: stop (as if killed) after that many optimizer steps, for resume tests.
    """
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    tc, dc, spec = cfg.train, cfg.data, cfg.rm.spec()
    out_dir = Path(tc.output_dir)
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, cpu=not torch.cuda.is_available())
    set_seed(tc.seed)
    if tc.num_threads > 0:
        torch.set_num_threads(tc.num_threads)

    # 1. Model: the backbone (an SFT model, or a saved reward model whose head is reused) + head.
    init_head = not (Path(cfg.model.path) / "reward_head.safetensors").exists()
    rm = RewardModel.from_pretrained(
        cfg.model.path, init_head=init_head, spec=spec, model_config=cfg.model, for_training=True
    )
    processor = rm.processor
    trainable, total = count_parameters(rm)
    log.info(
        "reward model (%s) on %s: %d / %d parameters trainable",
        spec.type,
        cfg.model.path,
        trainable,
        total,
    )

    # 2. Data: records -> items (distinct responses + index pairs); unusable records are counted
    #    (or raised with data.strict). A seeded order per epoch so that a resumed run replays it.
    records, media_root = _load(dc.train, dc, dc.limit)
    items, skipped = prepare_items(records, dc, spec)
    report_skips(skipped, dc.train)
    if not items:
        raise ValueError(
            f"{dc.train}: no usable training records out of {len(records)} "
            f"({', '.join(f'{k}: {v}' for k, v in sorted(skipped.items())) or 'empty file'})"
        )
    dataset = RMDataset(
        items,
        processor,
        media_root,
        spec,
        dc,
        critique_dropout=cfg.rm.critique_dropout,
        seed=tc.seed,
        train_reference=spec.reference
        and cfg.rm.lambda_critique > 0
        and cfg.rm.reference_weight > 0,
        focus=_focus(cfg.rm, items, dc.train),
        reference_weight=cfg.rm.reference_weight,
    )
    eval_ds = None
    if dc.eval:
        ev_records, ev_root = _load(dc.eval, dc)
        ev_items, ev_skipped = prepare_items(ev_records, dc, spec, strict=False)
        report_skips(ev_skipped, dc.eval)
        eval_ds = RMDataset(ev_items, processor, ev_root, spec, dc, critique_mode=dc.eval_critique)
    pad_id = processor.tokenizer.pad_token_id
    per_step = tc.batch_size * tc.grad_accum * accelerator.num_processes
    steps_per_epoch = max(1, len(dataset) // per_step)
    total_steps = tc.max_steps if tc.max_steps > 0 else steps_per_epoch * tc.epochs
    lengths = dataset.approx_lengths()

    def loader_for(epoch: int, skip_batches: int = 0) -> DataLoader:
        dataset.epoch = epoch
        order = epoch_order(
            lengths, tc.batch_size * tc.grad_accum, tc.seed * 1000 + epoch, tc.group_by_length
        )
        order = order[accelerator.process_index :: accelerator.num_processes]
        return DataLoader(
            dataset,
            batch_size=tc.batch_size,
            sampler=order[skip_batches * tc.batch_size :],
            collate_fn=lambda b: collate_items(b, pad_id),
            num_workers=tc.num_workers,
            drop_last=True,
            # Creating an iterator draws a base seed from this generator; from the global one it
            # would shift the head's dropout RNG on resume (a new iterator where the uninterrupted
            # run had none), so resumed losses would differ.
            generator=torch.Generator().manual_seed(tc.seed * 1000 + epoch),
        )

    # 3. Optimiser, schedule, accelerate wrapping.
    optimizer = make_optimizer(rm, tc)
    scheduler = make_scheduler(optimizer, tc, total_steps)
    model, optimizer, scheduler = accelerator.prepare(rm, optimizer, scheduler)

    # 4. Resume: weights, optimizer, scheduler, RNG; the counters say where in which epoch.
    state: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "micro_in_epoch": 0,
        "losses": [],
        "accuracies": [],
        "eval": [],
    }
    ckpt = resolve_resume(resume, out_dir)
    if ckpt is not None:
        state = load_checkpoint(accelerator, ckpt)
        accelerator.print(f"resumed from {ckpt} at step {state['step']}")

    metrics = MetricsLog(out_dir, tc.tensorboard, enabled=accelerator.is_main_process)
    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=state["step"],
        desc=f"rm-{spec.type}",
        disable=not (tc.progress and accelerator.is_local_main_process),
        dynamic_ncols=True,
    )
    use_lm = spec.type == "critique" and cfg.rm.lambda_critique > 0
    model.train()
    t0, seqs_seen = time.time(), 0
    epoch = state["epoch"]

    def global_count(n: int) -> float:
        return accelerator.reduce(torch.tensor(n, device=accelerator.device), "sum").item()

    while state["step"] < total_steps:
        it = iter(loader_for(epoch, skip_batches=state["micro_in_epoch"]))
        while state["step"] < total_steps:
            # 5. Take the step's micro-batches and count its pairs, ties and critique tokens
            #    (over all processes) first: every term is a mean over the whole step.
            micro = []
            for _ in range(tc.grad_accum):
                b = next(it, None)
                if b is None:
                    break
                micro.append(b)
            if len(micro) < tc.grad_accum:
                break  # epoch exhausted; the partial step is dropped, like drop_last
            n_pairs = sum(len(b["pairs"]["chosen"]) for b in micro)
            n_ties = sum(len(b["pairs"]["tie_a"]) for b in micro)
            n_tok = sum(int((b["labels"][:, 1:] != IGNORE_INDEX).sum()) for b in micro)
            all_pairs, all_ties = global_count(n_pairs), global_count(n_ties)
            all_tok = global_count(n_tok) if use_lm else 0
            # 6. Forward (each distinct response once) / backward per micro-batch; a micro-batch's
            #    mean pair terms are weighted by its share of the step's pairs (exact accumulation).
            step_loss, correct, bt_sum, lm_sum, lm_correct = 0.0, 0.0, 0.0, 0.0, 0
            for j, b in enumerate(micro):
                b = _to(b, accelerator.device)
                pairs = b.pop("pairs")
                sync = j == len(micro) - 1
                ctx = accelerator.no_sync(model) if not sync else contextlib.nullcontext()
                lm_weight = pairs.get("token_weight")  # [B, T] or None (all 1)
                with ctx, accelerator.autocast():
                    out = model(b, lm=use_lm, score_grad=cfg.rm.score_grad, lm_weight=lm_weight)
                    r = out.rewards.float()  # [N] one per distinct response
                    empty = pairs["tie_a"][:0]
                    lp, mp = reward_loss(
                        r,
                        pairs["chosen"],
                        pairs["rejected"],
                        margin=pairs["margin"],
                        centring=cfg.rm.centring,
                    )
                    lt, _ = reward_loss(
                        r,
                        empty,
                        empty,
                        tie_a=pairs["tie_a"],
                        tie_b=pairs["tie_b"],
                        tie_weight=cfg.rm.tie_weight,
                    )
                    n_p, n_t = len(pairs["chosen"]), len(pairs["tie_a"])
                    loss = lp * (n_p / max(1, all_pairs)) + lt * (n_t / max(1, all_ties))
                    if use_lm:
                        loss = loss + cfg.rm.lambda_critique * out.lm_loss_sum / max(1, all_tok)
                    # DDP averages gradients over processes: scale back up to a global mean.
                    accelerator.backward(loss * accelerator.num_processes)
                step_loss += float(loss.detach())
                correct += mp.get("accuracy", 0.0) * n_p
                bt_sum += mp.get("bt_loss", 0.0) * n_p
                if use_lm:
                    lm_sum += float(out.lm_loss_sum.detach())
                    lm_correct += out.lm_correct
                seqs_seen += len(r)
            # 7. Clip, step, schedule.
            grad_norm = None
            if tc.max_grad_norm > 0:
                grad_norm = accelerator.clip_grad_norm_(model.parameters(), tc.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["micro_in_epoch"] += len(micro)
            acc = correct / max(1, n_pairs)
            state["losses"].append(step_loss)
            state["accuracies"].append(acc)
            # 8. Log, evaluate, checkpoint.
            elapsed = time.time() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", acc=f"{acc:.2f}")
            if state["step"] % tc.log_every == 0 or state["step"] == total_steps:
                m = {
                    "train/loss": step_loss,
                    "train/bt_loss": bt_sum / max(1, n_pairs),
                    "train/pair_acc": acc,
                    "train/pairs": n_pairs,
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/responses_per_s": seqs_seen / max(elapsed, 1e-9),
                }
                if use_lm:
                    m["train/critique_lm_loss"] = lm_sum / max(1, n_tok)
                    m["train/critique_token_acc"] = lm_correct / max(1, n_tok)
                if grad_norm is not None:
                    m["train/grad_norm"] = float(grad_norm)
                metrics.log(state["step"], m)
            if (
                eval_ds is not None
                and dc.eval_every
                and state["step"] % dc.eval_every == 0
                and state["step"] < total_steps
            ):
                ev = evaluate_pairs(accelerator.unwrap_model(model), eval_ds, tc.batch_size)
                state["eval"].append({"step": state["step"], **ev})
                metrics.log(state["step"], {f"eval/{k}": v for k, v in ev.items()})
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
                return {
                    "stopped_at": state["step"],
                    "losses": state["losses"],
                    "accuracies": state["accuracies"],
                }
        epoch += 1
        state["epoch"], state["micro_in_epoch"] = epoch, 0
    bar.close()

    # 9. Final eval, then the final model saved so that RewardModel.from_pretrained loads it.
    summary: dict[str, Any] = {
        "steps": state["step"],
        "losses": state["losses"],
        "accuracies": state["accuracies"],
        "skipped": dict(skipped),
        "train_seconds": time.time() - t0,
        "eval": state["eval"],
    }
    if eval_ds is not None:
        ev = evaluate_pairs(accelerator.unwrap_model(model), eval_ds, tc.batch_size)
        summary["eval"] = [*state["eval"], {"step": state["step"], **ev}]
        summary["eval_pair_acc"] = ev["pair_acc"]
        metrics.log(state["step"], {f"eval/{k}": v for k, v in ev.items()})
    metrics.close()
    final = out_dir / "final"
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(final, processor)
    summary["final"] = str(final)
    return summary


@torch.no_grad()
def evaluate_pairs(rm: RewardModel, ds: RMDataset, batch_size: int) -> dict[str, float]:
    """Pair accuracy (strict r_c > r_r), Acc+ (queries with all pairs right), mean margin."""
    pad_id = ds.processor.tokenizer.pad_token_id
    was_training = rm.training
    rm.eval()
    device = next(rm.parameters()).device
    right, n, q_right, q_n, margin = 0, 0, 0, 0, 0.0
    for b in DataLoader(ds, batch_size=batch_size, collate_fn=lambda x: collate_items(x, pad_id)):
        b = _to(b, device)
        pairs = b.pop("pairs")
        r = rm(b).rewards.float()
        ok = (r[pairs["chosen"]] - r[pairs["rejected"]]) > 0  # [P]
        right += int(ok.sum())
        n += len(ok)
        margin += float((r[pairs["chosen"]] - r[pairs["rejected"]]).sum())
        for k in pairs["item"].unique().tolist():
            q_n += 1
            q_right += int(bool(ok[pairs["item"] == k].all()))
    rm.train(was_training)
    return {
        "pair_acc": right / max(1, n),
        "acc_plus": q_right / max(1, q_n),
        "margin_mean": margin / max(1, n),
        "pairs": n,
    }
