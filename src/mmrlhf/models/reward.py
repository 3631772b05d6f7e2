"""Reward models on a vision-language backbone: scalar, factually augmented and critique-based.

A :class:`RewardModel` is a loaded VLM (``*ForConditionalGeneration``) plus a :class:`RewardHead`
that maps the last layer's hidden state at the last non-padding token to one number
(METHODS.md section 4). The three types differ only in what the sequence holds:

- ``scalar``: ``[user: question (+image)] [assistant: response]``;
- ``fact`` (LLaVA-RLHF): the same, but the user turn also carries the record's facts (captions,
  short answer, objects, rationale) under a sentence saying the response must be fully supported
  by them;
- ``critique`` (MM-RLHF): ``[user: question (+image)] [assistant: response] [user: critique
  request] [assistant: critique]``; the critique tokens are the labelled response (LM loss), and
  the score is read at the end of the critique.

All three are built as ordinary :class:`~mmrlhf.data.record.Record` s with multi-turn
conversations and go through :func:`mmrlhf.models.inputs.encode`, so image-token checks, chat
templates and label masking stay in one place.

Cost: the backbone is run as ``vlm.model(...)`` (the base model without ``lm_head``), so the
``[B, T, V]`` vocabulary logits the full ``forward`` would compute are never built; only the
critique type applies ``lm_head``, and only to the hidden states of labelled (critique) tokens.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmrlhf.config import opt, sub
from mmrlhf.data.record import Record, RecordError, Turn
from mmrlhf.models.inputs import IGNORE_INDEX, Example, encode, load_media
from mmrlhf.models.textdiff import reference_diff

log = logging.getLogger(__name__)

RM_TYPES = ("scalar", "fact", "critique")
HEAD_KINDS = ("mm_rlhf", "linear")
HEAD_FILE = "reward_head.safetensors"
CONFIG_FILE = "reward_config.json"


# ---------------------------------------------------------------------------------------------
# settings


@dataclass
class RewardTemplates:
    """Texts that turn a record into a reward-model prompt (saved with the model)."""

    facts_intro: str = opt(
        "The response must be fully supported by these facts about the image; anything they do "
        "not support is a hallucination.",
        "fact RM: sentence introducing the facts in the user turn (LLaVA-RLHF).",
    )
    captions_label: str = opt("Image captions:", "fact RM: label before the captions.")
    short_answer_label: str = opt("Short answer:", "fact RM: label before the short answer.")
    objects_label: str = opt("Objects in the image:", "fact RM: label before the object list.")
    rationale_label: str = opt("Rationale:", "fact RM: label before the rationale.")
    critique_request: str = opt(
        "Critique the response above: is it correct, complete and faithful to the image? "
        "Point out any errors.",
        "critique RM: the user turn asking for a critique of the response.",
    )
    response_label: str = opt(
        "Response:", "response_first layout: label before the response in the question turn."
    )
    reference_intro: str = opt(
        "Here is a response to the same question.",
        "reference-guided critique RM: the user turn after the model's own answer (the "
        "reference) that introduces the response to judge.",
    )
    diff_label: str = opt(
        "Differences from your answer:",
        "reference-guided critique RM with reference_diff: label before the response's "
        "differences from the reference, after the response.",
    )


@dataclass
class RewardSpec:
    """What a reward model is (written to ``reward_config.json`` next to its weights)."""

    type: str = opt("scalar", "Reward model type: scalar, fact or critique.")
    head: str = opt(
        "mm_rlhf", "Head: mm_rlhf (dropout, Linear(H,H), tanh, dropout, Linear) or linear."
    )
    head_dropout: float = opt(0.1, "Dropout of the mm_rlhf head (train mode only).")
    facts: bool = opt(
        False,
        "critique type: put the record's facts in the question turn too (LLaVA-RLHF's factual "
        "augmentation for the critique RM: the critique can check the response against them). "
        "The fact type always has them; scalar never.",
    )
    response_first: bool = opt(
        False,
        "Put the response in the question turn, before the image, instead of in an assistant "
        "turn after it: with a template that puts the image after the turn's text (the tiny "
        "question-first model) every image token can then attend to the response's claims.",
    )
    reference: bool = opt(
        False,
        "critique type: reference-guided critique. The model first answers the question itself "
        "from the image and question alone (the reference: an assistant turn right after the "
        "question, where it answers as it was fine-tuned to), then judges the response with "
        "that answer in context (MT-Bench's reference-guided judge). Training uses the record's "
        "best-ranked response as the reference and trains the model to write it.",
    )
    reference_diff: bool = opt(
        False,
        "reference type: state the response's claim-level differences from the reference "
        "next to it (mmrlhf.models.textdiff), so the critic judges a difference instead of "
        "finding it - a comparison the world's tiny LM does not learn across its context.",
    )
    writes_reference: bool = opt(
        True,
        "reference type: the model was trained to write its reference (rm.reference_weight > "
        "0). False: scoring needs another model to write it (e.g. the SFT policy).",
    )
    templates: RewardTemplates = sub(RewardTemplates, "Prompt texts.")

    @property
    def uses_facts(self) -> bool:
        return self.type == "fact" or (self.type == "critique" and self.facts)

    def validate(self) -> list[str]:
        out = []
        if self.type not in RM_TYPES:
            out.append(f"type must be one of {', '.join(RM_TYPES)}, got {self.type!r}")
        if self.head not in HEAD_KINDS:
            out.append(f"head must be one of {', '.join(HEAD_KINDS)}, got {self.head!r}")
        if self.facts and self.type != "critique":
            out.append("facts=true is for the critique type (the fact type always has facts)")
        if self.reference and self.type != "critique":
            out.append("reference=true (reference-guided critique) is for the critique type")
        if self.reference_diff and not self.reference:
            out.append("reference_diff=true needs reference=true (a reference to compare with)")
        return out

    @classmethod
    def from_dict(cls, d: dict) -> RewardSpec:
        d = dict(d)
        templates = RewardTemplates(**d.pop("templates", {}))
        keys = (
            "type",
            "head",
            "head_dropout",
            "facts",
            "response_first",
            "reference",
            "reference_diff",
            "writes_reference",
        )
        known = {k: d[k] for k in keys if k in d}
        return cls(**known, templates=templates)


# ---------------------------------------------------------------------------------------------
# the head


class RewardHead(nn.Module):
    """Hidden state ``[B, H]`` -> reward ``[B]``.

    ``mm_rlhf``: dropout, Linear(H, H), tanh, dropout, Linear(H, 1) (MM-RLHF's head);
    ``linear``: Linear(H, 1) with zero bias (LLaVA-RLHF's). The last layer's bias starts at zero in
    both, so a fresh head scores every response near 0 (the centring term's fixed point).
    """

    def __init__(self, hidden_size: int, kind: str = "mm_rlhf", dropout: float = 0.1) -> None:
        super().__init__()
        if kind not in HEAD_KINDS:
            raise ValueError(f"head must be one of {', '.join(HEAD_KINDS)}, got {kind!r}")
        self.kind, self.hidden_size = kind, hidden_size
        if kind == "mm_rlhf":
            self.net = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(hidden_size, hidden_size),
                nn.Tanh(),
                nn.Dropout(dropout),
                nn.Linear(hidden_size, 1),
            )
        else:
            self.net = nn.Sequential(nn.Linear(hidden_size, 1))
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.net(hidden).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# prompts: the three types as records


def facts_block(record: Record, templates: RewardTemplates) -> str | None:
    """The record's facts as text (None when it has none the fact RM can use)."""
    f = record.facts
    if f is None:
        return None
    parts = []
    if f.captions:
        parts.append(templates.captions_label + "\n" + "\n".join(f"- {c}" for c in f.captions))
    if f.short_answer:
        parts.append(f"{templates.short_answer_label} {f.short_answer}")
    if f.objects:
        parts.append(f"{templates.objects_label} {', '.join(f.objects)}")
    if f.rationale:
        parts.append(f"{templates.rationale_label} {f.rationale}")
    if not parts:
        return None
    return templates.facts_intro + "\n" + "\n".join(parts)


class MissingFactsError(RecordError):
    """The fact RM was asked to score a record without facts."""


def question_turns(record: Record, spec: RewardSpec) -> list[Turn]:
    """The record's conversation as the RM reads it: the facts (fact RM, critique RM with facts)
    appended to the last user turn."""
    conv = list(record.conversation)
    if spec.uses_facts:
        block = facts_block(record, spec.templates)
        if block is None:
            raise MissingFactsError(
                "facts",
                f"the {spec.type} reward model{' with facts' if spec.type == 'critique' else ''} "
                "needs facts (captions, short_answer, objects or rationale) and this record has "
                "none",
                source=record.id,
            )
        conv[-1] = Turn("user", f"{conv[-1].text}\n\n{block}")
    return conv


def reference_record(record: Record, spec: RewardSpec) -> Record:
    """The prompt a reference-guided critique RM answers to write its reference: the question
    (with facts where the RM uses them) and the image, nothing of the response to judge - so
    the answer is not pulled towards the response (MT-Bench's reason for answering first)."""
    return Record(
        id=record.id,
        conversation=question_turns(record, spec),
        responses=[],
        images=record.images,
        video=record.video,
    )


def best_response(record: Record) -> int | None:
    """Index of the record's best response: the first of the ranking's top group, else the
    first response that some pair prefers and none rejects; None when there is no such one."""
    if record.ranking is not None:
        return record.ranking.groups[0][0] if record.ranking.groups else None
    pairs = [p for p in record.preferences if not p.is_tie]
    rejected = {p.rejected for p in pairs}
    for p in pairs:
        if p.chosen not in rejected:
            return p.chosen
    return None


def scoring_record(
    record: Record,
    response: str,
    spec: RewardSpec,
    critique: str | None = None,
    reference: str | None = None,
) -> tuple[Record, str]:
    """``(prompt record, completion)``: what the RM reads for ``response`` to ``record``.

    The completion is the labelled part: the response (scalar, fact) or the critique (critique;
    ``critique=None`` gives the critique *generation* prompt: completion ``""`` and the caller
    encodes with ``response=None``). The reward is read at the completion's last token.
    ``reference`` (required with ``spec.reference``): the RM's own answer, an assistant turn
    after the question, then a user turn that introduces the response to judge; with
    ``spec.reference_diff`` the response's differences from it (:func:`reference_diff`) follow
    the response.
    """
    t = spec.templates
    conv = question_turns(record, spec)
    if spec.reference:
        if reference is None:
            raise ValueError(
                f"record {record.id}: a reference-guided critique RM needs its reference answer "
                "(mmrlhf.reward.score generates it)"
            )
        conv += [Turn("assistant", reference), Turn("user", t.reference_intro)]
    diff = (
        f"{t.diff_label} {reference_diff(reference, response)}."
        if spec.reference_diff and reference is not None
        else ""
    )
    critique_text = critique if critique is not None else ""
    if spec.response_first:
        # The judge layout: question, response (and critique request) in one user turn, the
        # labelled part after it - the critique, or for scalar/fact an empty assistant turn
        # whose end-of-turn token is where the reward is read.
        ask = f"{conv[-1].text}\n\n{t.response_label} {response}"
        if diff:
            ask += f"\n\n{diff}"
        if spec.type == "critique":
            ask += f"\n\n{t.critique_request}"
        conv[-1] = Turn("user", ask)
        completion = critique_text if spec.type == "critique" else ""
    elif spec.type == "critique":
        # The response is an assistant turn here, so its differences open the critique request.
        request = f"{diff}\n\n{t.critique_request}" if diff else t.critique_request
        conv += [Turn("assistant", response), Turn("user", request)]
        completion = critique_text
    else:
        completion = response
    prompt = Record(
        id=record.id, conversation=conv, responses=[], images=record.images, video=record.video
    )
    return prompt, completion


def encode_for_reward(
    record: Record,
    responses: list[str],
    processor: Any,
    spec: RewardSpec,
    *,
    critiques: list[str | None] | None = None,
    reference: str | None = None,
    media_root: str | Path | None = None,
    max_length: int | None = None,
    truncate_response: bool = False,
    media: tuple[list[Any], list[Any]] | None = None,
    focus: tuple[re.Pattern[str], float] | None = None,
) -> list[Example]:
    """Encode each of ``responses`` of ``record`` for scoring; the record's media is loaded once.

    ``critiques[i]`` is the critique appended after ``responses[i]`` (critique type only; ``""``
    scores with an empty critique). ``None`` for the critique type means "generation prompt":
    the example ends where the critique would start and has no labelled tokens. ``reference``:
    the record's reference answer (reference-guided critique RM), the same for every response.
    ``focus = (pattern, w)``: the critique tokens inside :func:`focus_spans` get weight ``w``
    in ``Example.label_weights`` (the critique RM's ``rm.critique_focus``).
    """
    if spec.type == "critique" and critiques is None:
        raise ValueError("the critique reward model needs critiques (None: generation prompt)")
    media = media if media is not None else load_media(record, media_root)
    out = []
    for i, text in enumerate(responses):
        crit = critiques[i] if critiques is not None else None
        prompt, completion = scoring_record(record, text, spec, crit, reference)
        gen_prompt = spec.type == "critique" and crit is None
        spans = None
        if focus is not None and crit:
            spans = (focus_spans(focus[0], crit), focus[1])
        out.append(
            encode(
                prompt,
                None if gen_prompt else completion,
                processor,
                images=media,
                max_length=max_length,
                truncate_response=truncate_response,
                weight_spans=spans,
            )
        )
    return out


def focus_spans(pattern: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of ``pattern`` in ``text``: for every match, the spans of
    its groups that took part, or the whole match for a pattern without groups.

    >>> p = re.compile(r"answers ([0-9]), which is (right|wrong)")
    >>> focus_spans(p, "It answers 2, which is right.")
    [(11, 12), (23, 28)]
    """
    out = []
    for m in pattern.finditer(text):
        if pattern.groups:
            out += [m.span(g) for g in range(1, pattern.groups + 1) if m.start(g) >= 0]
        elif m.end() > m.start():
            out.append(m.span())
    return out


def encode_reference(
    record: Record,
    processor: Any,
    spec: RewardSpec,
    reference: str | None,
    *,
    media: tuple[list[Any], list[Any]] | None = None,
    media_root: str | Path | None = None,
    max_length: int | None = None,
    truncate_response: bool = False,
) -> Example:
    """The reference answer as an SFT example of :func:`reference_record` (its tokens
    labelled); ``reference=None`` gives the generation prompt."""
    media = media if media is not None else load_media(record, media_root)
    return encode(
        reference_record(record, spec),
        reference,
        processor,
        images=media,
        max_length=max_length,
        truncate_response=truncate_response,
    )


# ---------------------------------------------------------------------------------------------
# the model


def last_token_index(attention_mask: Tensor) -> Tensor:
    """``[B, T]`` mask -> ``[B]`` index of each row's last non-padding token (any padding side)."""
    t = attention_mask.shape[1]
    return (t - 1) - attention_mask.flip(1).long().argmax(1)


def _base_vlm(vlm: nn.Module) -> nn.Module:
    """The ``*ForConditionalGeneration`` under a peft wrapper (LoRA layers stay injected)."""
    return vlm.get_base_model() if hasattr(vlm, "get_base_model") else vlm


@dataclass
class RewardOutput:
    """``rewards [B]``; for ``lm=True`` also the summed LM loss over labelled tokens and their
    count (summed, so a training loop can normalise over its whole accumulated step)."""

    rewards: Tensor
    lm_loss_sum: Tensor | None = None
    lm_tokens: int = 0
    lm_correct: int = 0


class RewardModel(nn.Module):
    """A VLM backbone + :class:`RewardHead`; ``forward(batch) -> RewardOutput``.

    ``batch`` is what :func:`mmrlhf.models.inputs.collate` returns (right padding for training;
    the reading index is computed from ``attention_mask``, so left padding reads correctly too).
    """

    def __init__(
        self,
        vlm: nn.Module,
        spec: RewardSpec,
        head: RewardHead | None = None,
        processor: Any = None,
    ) -> None:
        super().__init__()
        problems = spec.validate()
        if problems:
            raise ValueError("; ".join(problems))
        self.vlm = vlm
        self.spec = spec
        hidden = self.hidden_size(vlm)
        self.head = head if head is not None else RewardHead(hidden, spec.head, spec.head_dropout)
        # Keep the head in fp32 whatever the backbone dtype: it is tiny and the rewards feed a
        # sigmoid whose gradient vanishes in bf16 rounding for confident pairs.
        self.head.float().to(next(vlm.parameters()).device)
        self.processor = processor

    @staticmethod
    def hidden_size(vlm: nn.Module) -> int:
        cfg = _base_vlm(vlm).config
        text = getattr(cfg, "text_config", None) or cfg
        return int(text.hidden_size)

    def hidden_states(self, batch: dict[str, Any]) -> Tensor:
        """Last-layer hidden states ``[B, T, H]`` (after the final norm), without ``lm_head``."""
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        base = _base_vlm(self.vlm)
        inner = getattr(base, "model", None)
        if inner is not None:
            return inner(**inputs, use_cache=False).last_hidden_state
        # Unknown layout: the full forward, paying for one position's logits only.
        out = self.vlm(**inputs, use_cache=False, output_hidden_states=True, logits_to_keep=1)
        return out.hidden_states[-1]

    def forward(
        self,
        batch: dict[str, Any],
        *,
        lm: bool = False,
        score_grad: float = 1.0,
        lm_weight: Tensor | None = None,
    ) -> RewardOutput:
        """Rewards ``[B]`` read at each sequence's last token (+ the LM loss sum on labelled
        tokens with ``lm=True``). ``score_grad`` scales the gradient that flows from the rewards
        into the backbone (the head always gets all of it): the forward values are unchanged,
        ``h_read = s * h + (1 - s) * stop_grad(h)``; 0 trains the backbone by the LM loss alone.
        ``lm_weight [B]``: each row's weight on its tokens' LM loss (default 1); ``[B, T]``: each
        labelled token's weight, aligned with ``batch["labels"]``."""
        hidden = self.hidden_states(batch)  # [B, T, H]
        idx = last_token_index(batch["attention_mask"])  # [B]
        last = hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]  # [B, H]
        if score_grad == 0.0:
            # no graph at all: a backbone with no other loss then has grad None, which AdamW
            # skips (a zero gradient would still be weight-decayed)
            last = last.detach()
        elif score_grad != 1.0:
            last = last.detach() + score_grad * (last - last.detach())
        rewards = self.head(last.to(self.head.net[-1].weight.dtype))  # [B]
        if not lm:
            return RewardOutput(rewards)
        # LM loss on labelled (critique) tokens: position t predicts label t+1. Only those hidden
        # states go through lm_head, so the logits are [M, V] for M critique tokens, not [B, T, V].
        labels = batch["labels"]
        mask = labels[:, 1:] != IGNORE_INDEX  # [B, T-1]
        target = labels[:, 1:][mask]  # [M]
        h = hidden[:, :-1][mask]  # [M, H]
        logits = _base_vlm(self.vlm).lm_head(h).float()  # [M, V]
        if not len(target):
            loss_sum = hidden.sum() * 0.0
        else:
            ce = F.cross_entropy(logits, target, reduction="none")  # [M]
            if lm_weight is not None:
                w = lm_weight.to(ce.dtype)
                # [B]: one weight per row; [B, T]: per token, aligned with labels (the weight of
                # predicting label t sits at t, as the label does)
                w = w[:, None].expand_as(mask) if w.dim() == 1 else w[:, 1:]
                ce = ce * w[mask]
            loss_sum = ce.sum()
        correct = int((logits.argmax(-1) == target).sum()) if len(target) else 0
        return RewardOutput(rewards, loss_sum, int(mask.sum()), correct)

    # -- save / load ------------------------------------------------------------------------

    def save_pretrained(self, path: str | Path, processor: Any = None) -> Path:
        """Write the VLM (LoRA merged; note: merging replaces ``self.vlm`` by the merged model),
        the processor, ``reward_head.safetensors`` and ``reward_config.json``; atomic (a
        temporary folder renamed when complete)."""
        from safetensors.torch import save_file

        path = Path(path)
        tmp = path.with_name(f".tmp-{path.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        vlm = self.vlm
        if hasattr(vlm, "merge_and_unload"):
            vlm.save_pretrained(tmp / "adapter")
            vlm = self.vlm = vlm.merge_and_unload()
        vlm.save_pretrained(tmp)
        processor = processor if processor is not None else self.processor
        if processor is not None:
            processor.save_pretrained(tmp)
        save_file(
            {k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()},
            str(tmp / HEAD_FILE),
        )
        cfg = {**asdict(self.spec), "hidden_size": self.head.hidden_size, "format_version": 1}
        (tmp / CONFIG_FILE).write_text(json.dumps(cfg, indent=1))
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        return path

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        init_head: bool = False,
        spec: RewardSpec | None = None,
        model_config: Any = None,
        for_training: bool = False,
        device: str = "auto",
    ) -> RewardModel:
        """Load a reward model saved by :meth:`save_pretrained` (processor at ``.processor``).

        ``path`` may also be a plain VLM folder (e.g. an SFT model) with ``init_head=True``: a
        fresh head is created for ``spec`` (required then). With a saved head, ``spec`` (if
        given) must agree on type and head kind. ``model_config`` (a
        :class:`~mmrlhf.models.load.ModelConfig`) sets dtype/LoRA/freezing for training.
        """
        from safetensors.torch import load_file

        from mmrlhf.models.load import ModelConfig, load_vlm

        path = Path(path)
        saved = None
        if (path / CONFIG_FILE).exists():
            saved = RewardSpec.from_dict(json.loads((path / CONFIG_FILE).read_text()))
        if saved is None and not init_head:
            raise FileNotFoundError(
                f"{path}: not a reward model (no {CONFIG_FILE}); pass init_head=True to start a "
                "fresh head on this VLM"
            )
        use_head = saved is not None and not init_head
        if use_head and spec is not None and (spec.type, spec.head) != (saved.type, saved.head):
            raise ValueError(
                f"{path}: saved reward model is type={saved.type} head={saved.head}, asked for "
                f"type={spec.type} head={spec.head} (use init_head=True to start a new head)"
            )
        spec = spec if spec is not None else saved
        if spec is None:
            raise ValueError("init_head=True on a plain VLM needs a RewardSpec")
        mcfg = (
            model_config if model_config is not None else ModelConfig(path=str(path), device=device)
        )
        vlm, processor = load_vlm(mcfg, for_training=for_training)
        rm = cls(vlm, spec, processor=processor)
        if use_head:
            rm.head.load_state_dict(load_file(str(path / HEAD_FILE)))
        if not for_training:
            rm.eval()
            rm.requires_grad_(False)
        return rm


__all__ = [
    "HEAD_KINDS",
    "RM_TYPES",
    "MissingFactsError",
    "RewardHead",
    "RewardModel",
    "RewardOutput",
    "RewardSpec",
    "RewardTemplates",
    "best_response",
    "encode_for_reward",
    "encode_reference",
    "facts_block",
    "last_token_index",
    "reference_record",
    "scoring_record",
]
