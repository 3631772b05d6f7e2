"""Pretraining the tiny VLM's language model on the world: the stand-in for a pretrained LLM.

A real VLM starts from a language model pretrained on trillions of tokens; the tiny builder's is
random, and 5 minutes of SFT must teach it the world's language, its question families *and*
where to look in the image at once. Measured (docs/results.md, "A pretrained language model"):
a fresh 2 x 64 Llama fed *perfect* vision answers the core short questions no better than the
VLM with real images when it learns them among the SFT mix - the budget is the limit.

``pretrain_language_model`` gives the tiny LM some of the head start a downloaded LLM has, in
two stages that mirror how LLaVA is built:

1. **Language model on symbolic scenes.** The LM (embeddings, blocks, head; not the tower or the
   projector) learns to answer the world's questions where every image token holds the mean word
   embedding of its cell's contents ("large red circle", "digit 7", nothing) plus the
   background's: a perfect, word-aligned "vision" whose scenes are drawn fresh at every step
   from their own random stream (``seed`` and a purpose string), so it sees the world's
   *distribution*, never a world file, a held-out scene or the SFT corpus and its noise. The
   answers are the world's exact ones, in the SFT mix's families (descriptions included: an LM
   that has not seen a family before SFT loses what it learned while SFT teaches it), and each
   slot holds its cell's position words too.
2. **Projector alignment** (LLaVA's stage 1): the projector alone learns to map the (pretrained,
   frozen) tower's image tokens onto those slot embeddings (mean squared error, after a
   data-dependent rescale), so the VLM with real images starts where the LM left off.

With ``relation_steps`` stage 1 starts with a curriculum for relation questions (two lookups
and a comparison, which no mix teaches): relation and "Where is the ...?" questions, then
relation questions alone, then the mix; with the question-first template only (docs/results.md,
"Relation questions"). In a world whose relation answers name both places first
(``WorldConfig.relation_rationale``) the first phase is the lookups alone (``RATIONALE_PHASES``).

Only the ``llava`` tiny model with one image token per grid cell qualifies (as for the tower),
and it expects the tower pretrained first (``mmrlhf.world.vision``). Every image-token slot is
built on the fly from the current embedding table, so stage 1 trains the embeddings that the
slots are made of. Each step's sequences run in length buckets with the vocabulary projection
on answer positions only (:func:`answer_loss_backward`: the gradient of one padded forward,
1.95x the steps per second), and the loss is each answer's mean, averaged over answers
(``loss_per``). After each phase a held-out probe (:func:`slot_probe`) scores the LM on fresh
questions with perfect slots and goes into the report.

Measured (docs/results.md): the lookup of a described object's cell is learned slowly, not
missing ("Longer LM pretraining"); relation needs the question-first template, rationale
answers and the curriculum ("Relation answers that show their places"); and with the loss per
answer the recipe (:data:`RECIPE_RELATION_STEPS`, :data:`RECIPE_LANGUAGE_STEPS`; ``mmrlhf
model build-tiny --pretrained-lm``) gives SFT models that answer 0.940 / 0.932 / 0.939 of the
held-out core short questions on three seeds ("The language model's loss per answer"). Off by
default in the demo (``--pretrained-lm``): it adds 13-17 minutes on one thread.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from mmrlhf.world.config import FAMILIES, WorldConfig
from mmrlhf.world.scene import Scene, position_name, render_scene, sample_scene

#: Written into the model folder when pretraining finishes: settings and measurements.
REPORT_FILE = "language_pretrain.json"

#: The measured recipe (``--pretrained-lm`` on ``mmrlhf model build-tiny`` and ``mmrlhf demo``):
#: a question-first tiny LLaVA on a world with relation rationales, the lookup and relation
#: curriculum of this many steps each, then this many steps of the SFT mix. Measured through
#: the shipped code on three seeds (docs/results.md, "The language model's loss per answer"):
#: core short answers with perfect slots 0.953 / 0.959 / 0.951, after SFT with real images
#: 0.940 / 0.932 / 0.939; 13-17 minutes on one thread.
RECIPE_RELATION_STEPS = 3000
RECIPE_LANGUAGE_STEPS = 12000

#: How the LM pretraining averages its loss (``LanguagePretrainConfig.loss_per``).
LOSS_PER = ("answer", "token")

#: A forward's fixed cost in padded-token units when a step's sequences are bucketed by length
#: (:func:`mmrlhf.models.logprobs.length_buckets`): a step of 32 then runs as 2-4 forwards.
BUCKET_OVERHEAD = 200


def _sft_families() -> dict[str, float]:
    # The SFT mix's families, descriptions included. Measured (docs/results.md, "A pretrained
    # language model"; 12000 steps, position words, seed 0): an LM pretrained on the four core
    # families alone loses its gains in SFT (core short answers 0.822 with real images before
    # SFT, 0.666 after: SFT must teach the other families from scratch); on the whole mix it
    # keeps them (0.819 -> 0.816). 3000 core-only steps: 0.723 with perfect slots.
    return dict(WorldConfig().sft_family_weights)


@dataclass
class LanguagePretrainConfig:
    """Settings of the LM pretraining (``mmrlhf model build-tiny --language-steps``)."""

    steps: int = field(
        default=3000, metadata={"help": "LM optimizer steps on symbolic scenes (0 = skip)."}
    )
    batch_size: int = field(default=32, metadata={"help": "Questions per step (2 per scene)."})
    lr: float = field(default=2e-3, metadata={"help": "Peak AdamW learning rate of the LM."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warm-up steps."})
    families: dict[str, float] = field(
        default_factory=_sft_families,
        metadata={"help": "Question family weights (the world's family names)."},
    )
    # On by default: the words a description uses for a cell ("at the top left") are then in
    # its slot, as a real tower's position embeddings are in its tokens. Measured (12000 core
    # steps, perfect slots): core 0.852 with, 0.844 without; relation at chance either way.
    position_words: bool = field(
        default=True,
        metadata={"help": "Add each cell's position words ('top left') to its slot."},
    )
    # A curriculum for the one family no mix teaches. A relation question needs two lookups
    # and a comparison, with no partial credit; measured with perfect slots (docs/results.md,
    # "Relation questions"): in the SFT mix relation stays
    # at chance (0.27-0.36 after 12000 steps, even weighted 3x), while 3000 steps of relation
    # and "where" questions, then 3000 of relation alone, then 6000 of the mix give relation
    # 0.97 with the other families learned - in 2 of 3 runs: relation is learned suddenly or
    # not at all within the phase. Needs the question-first template: image first,
    # the lookups themselves are hardly learned ("where" 0.67 against 0.96).
    relation_steps: int = field(
        default=0,
        metadata={
            "help": "Before the main steps: this many on relation and 'Where is the ...?' "
            "questions ('Where is the ...?' alone with relation rationales), then as many on "
            "relation questions alone (0 = no curriculum)."
        },
    )
    # Measured on the seed-2 stream, where the lookups came hardest (docs/results.md, "The
    # language model's loss per answer"): the mix phase after the curriculum ends at core 0.778
    # with perfect slots per token and 0.870 per answer. Per token, descriptions (~15% of the
    # questions, ~8x the tokens of a short answer) take over half of every step's gradient.
    loss_per: str = field(
        default="answer",
        metadata={
            "help": "answer: each answer's token-mean loss, averaged over answers (a long "
            "description counts as much as a short answer); token: the mean over all answer "
            "tokens (SFT's convention)."
        },
    )
    align_steps: int = field(
        default=3000, metadata={"help": "Projector alignment steps (0 = leave it as it is)."}
    )
    align_scenes: int = field(
        default=4096, metadata={"help": "Scenes drawn once for the alignment (~4 s per 4096)."}
    )
    align_batch_size: int = field(default=1024, metadata={"help": "Cells per alignment step."})
    align_lr: float = field(default=3e-3, metadata={"help": "Peak AdamW lr of the projector."})
    seed: int = field(default=0, metadata={"help": "Seed of the scene streams."})
    probe_questions: int = field(
        default=700,
        metadata={
            "help": "Held-out questions (one per fresh scene, families of PROBE_FAMILIES) the LM "
            "answers greedily with perfect slots after each phase (0 = no probe)."
        },
    )
    num_threads: int = field(
        default=1,
        metadata={"help": "CPU threads while pretraining (0 = leave torch's setting)."},
    )

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "relation_steps",
            "warmup_steps",
            "align_steps",
            "num_threads",
            "probe_questions",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"language pretraining: {name} must be >= 0")
        for name in ("batch_size", "align_scenes", "align_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"language pretraining: {name} must be >= 1")
        if self.lr <= 0 or self.align_lr <= 0:
            raise ValueError("language pretraining: learning rates must be > 0")
        if self.loss_per not in LOSS_PER:
            raise ValueError(
                f"language pretraining: loss_per must be one of {LOSS_PER}, got {self.loss_per!r}"
            )
        unknown = sorted(set(self.families) - set(FAMILIES))
        if unknown or not any(w > 0 for w in self.families.values()):
            raise ValueError(
                f"language pretraining: unknown question families {unknown} or no positive "
                f"weight; families are {list(FAMILIES)}"
            )


#: The relation curriculum (``LanguagePretrainConfig.relation_steps``): the lookups first
#: (relation questions with "Where is the ...?" ones, which the world files under ``other``
#: with the digit questions), then relation questions alone.
RELATION_PHASES: tuple[dict[str, float], dict[str, float]] = (
    {"relation": 1.0, "other": 1.0},
    {"relation": 1.0},
)

#: The curriculum for a world with relation rationales (``WorldConfig.relation_rationale``):
#: the lookups alone ("Where is the ...?" and the digit questions), then relation questions
#: alone. Measured (perfect slots, the scene stream where the lookups came hardest): with
#: relation questions in the first phase the answers' places are right 0.42 / 0.39 (first /
#: second object) and stay there; lookups first, then relation, 0.88 / 0.88 (docs/results.md,
#: "Relation answers that show their places").
RATIONALE_PHASES: tuple[dict[str, float], dict[str, float]] = (
    {"other": 1.0},
    {"relation": 1.0},
)


class SlotEmbedder:
    """What a perfect, word-aligned vision encoder would hand the LM for one scene.

    ``slots(scene)`` is ``(cells, hidden)``: per cell in reading order, the mean embedding of
    the background word plus the mean embedding of the cell's words ("large red circle",
    "digit 7"; nothing for an empty cell). Built from the live embedding table, so gradients
    reach it.
    """

    def __init__(
        self,
        embeddings: torch.nn.Embedding,
        tokenizer: Any,
        world: WorldConfig,
        position_words: bool = False,
    ) -> None:
        self.emb, self.tok, self.world = embeddings, tokenizer, world
        self.position_words = position_words
        self._ids: dict[str, torch.Tensor] = {}

    def _ids_of(self, text: str) -> list[int]:
        if text not in self._ids:
            self._ids[text] = self.tok(text, add_special_tokens=False)["input_ids"] if text else []
        return self._ids[text]

    def _bags(self, texts: list[str]) -> torch.Tensor:
        """Mean embedding per text, ``(len(texts), hidden)``; zeros for ``""``. One
        ``embedding_bag`` call for all of them instead of one lookup per cell (measured: 1.3 vs
        4.3 ms for 16 scenes, 2.5 vs 12.8 ms with position words)."""
        ids = [self._ids_of(t) for t in texts]
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long)
        offsets = torch.tensor([0, *itertools.accumulate(len(r) for r in ids)][:-1])
        return F.embedding_bag(flat, self.emb.weight, offsets, mode="mean")

    def slots(self, scene: Scene) -> torch.Tensor:
        """``(cells, hidden)`` for one scene."""
        return self.batch([scene])

    def batch(self, scenes: list[Scene]) -> torch.Tensor:
        """``(len(scenes) * cells, hidden)``: each scene's cells in reading order, scenes in
        order (the order their image tokens take in a batch of sequences)."""
        g = self.world.grid
        cells, backgrounds, positions = [], [], []
        for scene in scenes:
            words = [""] * (g * g)
            for o in scene.objects:
                words[o.row * g + o.col] = f"{o.size} {o.color} {o.shape}"
            if scene.glyph is not None:
                words[scene.glyph.row * g + scene.glyph.col] = f"digit {scene.glyph.digit}"
            cells += words
            backgrounds += [scene.background] * (g * g)
            if self.position_words:
                positions += [position_name(k // g, k % g, g) for k in range(g * g)]
        out = self._bags(backgrounds) + self._bags(cells)
        return out + self._bags(positions) if self.position_words else out


@torch.no_grad()
def _rescale_projector(
    projector: torch.nn.Module, feats: torch.Tensor, target: torch.Tensor
) -> None:
    """Scale LLaVA's projector (linear -> GELU -> linear) so that, on ``feats`` ``(N, d_in)``,
    the first layer's pre-activations have unit std (bias zeroed) and the output's std matches
    ``target``'s ``(N, d_out)``: a data-dependent init (as LSUV) for the alignment."""
    first, last = projector.linear_1, projector.linear_2
    sample = feats[:4096]
    first.weight.div_((sample @ first.weight.T).std().clamp_min(1e-8))
    first.bias.zero_()
    last.weight.div_((projector(sample).std() / target.std()).clamp_min(1e-8))


#: Families of the held-out slot probe (``LanguagePretrainConfig.probe_questions``): the four
#: core ones issue 2 scores, the lookups of ``other`` ("Where is the ...?", the digit) and the
#: absent-object answers of ``adversarial``, equally weighted.
PROBE_FAMILIES = ("attribute", "counting", "existence", "relation", "other", "adversarial")


@torch.no_grad()
def slot_probe(
    model: torch.nn.Module,
    processor: Any,
    slots: SlotEmbedder,
    world: WorldConfig,
    n: int,
    seed: int,
    batch_size: int = 128,
) -> dict[str, float]:
    """Held-out accuracy of the LM with perfect slots: ``n`` fresh scenes (their own stream,
    never trained on), one question each from :data:`PROBE_FAMILIES`, answered greedily and
    graded by :func:`mmrlhf.world.truth.check_short_answer`. Per family, plus ``core`` (the mean
    of the four core families). What the LM brings to SFT before any image is involved: with
    real images after SFT the core score was within a few points of it (docs/results.md)."""
    from mmrlhf.models.inputs import render
    from mmrlhf.world.generate import make_record
    from mmrlhf.world.questions import ask
    from mmrlhf.world.truth import check_short_answer

    tok, image_id = processor.tokenizer, model.config.image_token_id
    n_cells = world.grid * world.grid
    rng = random.Random(f"{seed}:language-pretrain:probe-questions")
    probe = []
    for i in range(n):
        scene = sample_scene(rng, world, f"probe{i}", "test")
        for qa in ask(scene, world, rng, 1, dict.fromkeys(PROBE_FAMILIES, 1.0)):
            rec = make_record(qa, scene, "test", 0)
            prompt, _ = render(processor, rec, None)
            prompt = prompt.replace(processor.image_token, processor.image_token * n_cells)
            probe.append((scene, rec, tok(prompt, add_special_tokens=False)["input_ids"]))
    was_training = model.training
    model.eval()
    right: dict[str, list[bool]] = {}
    for start in range(0, len(probe), batch_size):
        chunk = probe[start : start + batch_size]
        width = max(len(p) for _, _, p in chunk)
        seqs = torch.full((len(chunk), width), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(seqs)
        for i, (_, _, p) in enumerate(chunk):  # left padding for generation
            seqs[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        x = model.get_input_embeddings()(seqs)
        x = x.masked_scatter((seqs == image_id)[..., None], slots.batch([s for s, _, _ in chunk]))
        out = model.generate(
            inputs_embeds=x,
            attention_mask=mask,
            max_new_tokens=48,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )
        for (_, rec, _), ids in zip(chunk, out, strict=True):
            answer = tok.decode(ids, skip_special_tokens=True).strip()
            right.setdefault(rec.meta["family"], []).append(check_short_answer(rec, answer, world))
    model.train(was_training)
    acc = {f: round(sum(v) / len(v), 4) for f, v in sorted(right.items())}
    core = [acc[f] for f in ("attribute", "counting", "existence", "relation") if f in acc]
    acc["core"] = round(sum(core) / len(core), 4) if core else float("nan")
    return acc


def answer_loss_backward(
    model: torch.nn.Module,
    slots: SlotEmbedder,
    items: list[tuple[Scene, list[int], list[int]]],
    pad_id: int,
    image_id: int,
    bucket_overhead: int = BUCKET_OVERHEAD,
    per: str = "answer",
) -> torch.Tensor:
    """Next-token loss on the answers of ``items`` (``(scene, prompt ids, answer ids)``, image
    tokens in the prompt), image tokens replaced by the scenes' slots; backpropagates it and
    returns it detached.

    ``per="token"``: the mean over all answer tokens of the batch (SFT's convention);
    ``per="answer"``: each answer's token mean, averaged over the answers, so that a 60-token
    description weighs as much as a 6-token short answer. Either way the value and gradient
    are those of one right-padded forward of the whole batch, computed in buckets of similar
    length (:func:`mmrlhf.models.logprobs.length_buckets`) with the vocabulary projection
    applied to answer positions only. Why: descriptions are about twice the mean length, so one
    padded batch was ~45% padding, and projecting every position onto the vocabulary was ~40%
    of a step's FLOPs (measured: 1.9x the steps per second).
    """
    from mmrlhf.models.logprobs import length_buckets, lm_parts

    if per not in LOSS_PER:
        raise ValueError(f"per must be one of {LOSS_PER}, got {per!r}")
    parts = lm_parts(model)
    assert parts is not None  # the tiny LLaVA: LlavaModel + lm_head
    decoder, head = parts
    n_answer = sum(len(c) for _, _, c in items)
    total = torch.zeros(())
    for rows in length_buckets([len(p) + len(c) for _, p, c in items], bucket_overhead):
        part = [items[i] for i in rows]
        width = max(len(p) + len(c) for _, p, c in part)
        seqs = torch.full((len(part), width), pad_id, dtype=torch.long)
        mask = torch.zeros_like(seqs)
        labels = torch.full_like(seqs, -100)
        weight = torch.zeros(len(part), width - 1)  # per target position (t predicts t + 1)
        for i, (_, p, c) in enumerate(part):
            seqs[i, : len(p) + len(c)] = torch.tensor(p + c)
            mask[i, : len(p) + len(c)] = 1
            labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
            w = 1 / n_answer if per == "token" else 1 / (len(c) * len(items))
            weight[i, len(p) - 1 : len(p) - 1 + len(c)] = w
        x = model.get_input_embeddings()(seqs)
        x = x.masked_scatter((seqs == image_id)[..., None], slots.batch([s for s, _, _ in part]))
        hidden = decoder(inputs_embeds=x, attention_mask=mask).last_hidden_state
        target = labels[:, 1:]
        keep = target != -100
        logits = head(hidden[:, :-1][keep])  # [answer tokens of the bucket, vocab]
        ce = F.cross_entropy(logits, target[keep], reduction="none")
        loss = (ce * weight[keep]).sum()
        loss.backward()
        total = total + loss.detach()
    return total


def pretrain_language_model(
    model_dir: str | Path,
    world: WorldConfig,
    cfg: LanguagePretrainConfig | None = None,
    *,
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain the LM of the tiny LLaVA in ``model_dir`` on symbolic scenes, align its
    projector, and save it back in place (see the module docstring).

    Returns (and writes to ``model_dir / REPORT_FILE``) the settings, seconds per stage, the
    last LM loss and the alignment's held-out cosine similarity between projected image tokens
    and their slots. Writing in place is not atomic; callers that cache (the demo) build in a
    scratch folder and rename.
    """
    from mmrlhf.world.vision import cpu_threads

    cfg = cfg or LanguagePretrainConfig()
    with cpu_threads(cfg.num_threads):
        return _pretrain(Path(model_dir), world, cfg, progress)


def _pretrain(
    model_dir: Path, world: WorldConfig, cfg: LanguagePretrainConfig, progress: bool
) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from mmrlhf.models.inputs import render
    from mmrlhf.models.load import ModelConfig, load_vlm, vision_tower
    from mmrlhf.world.generate import make_record
    from mmrlhf.world.questions import ask
    from mmrlhf.world.vision import check_cell_patching, image_tokens, save_in_place

    model, processor = load_vlm(ModelConfig(path=str(model_dir), device="cpu"), for_training=False)
    check_cell_patching(model.config, world)
    tok = processor.tokenizer
    image_id = model.config.image_token_id
    n_cells = world.grid * world.grid
    slots = SlotEmbedder(model.get_input_embeddings(), tok, world, cfg.position_words)
    report: dict[str, Any] = {"config": asdict(cfg)}

    encoded: dict[tuple[str, str], tuple[list[int], list[int]]] = {}

    def encode(scene: Scene, qa: Any, k: int) -> tuple[list[int], list[int]]:
        # The chat template's one <image> becomes one image token per cell, as the processor
        # expands it for this model (check_cell_patching guarantees cells == image tokens).
        # The rendered text depends on the question and answer only, and the world's templates
        # repeat them; rendering the chat template was most of a step's data time. Cleared
        # when large: every description is new, and token lists cost ~4 KB each.
        key = (qa.question, qa.answer)
        if len(encoded) >= 20_000:
            encoded.clear()
        if key not in encoded:
            prompt, completion = render(processor, make_record(qa, scene, "train", k), qa.answer)
            prompt = prompt.replace(processor.image_token, processor.image_token * n_cells)
            encoded[key] = (
                tok(prompt, add_special_tokens=False)["input_ids"],
                tok(completion, add_special_tokens=False)["input_ids"],
            )
        return encoded[key]

    # 1. The LM on symbolic scenes: embeddings, blocks and head train; tower and projector not.
    # With ``relation_steps`` the two curriculum phases come first. Each phase has its own
    # AdamW state, warm-up and cosine, and its own scene stream; the main phase's stream is the
    # one it had before the curriculum existed, so runs without it are unchanged.
    lm_params = [
        p
        for n, p in model.named_parameters()
        if "vision_tower" not in n and "multi_modal_projector" not in n
    ]
    for p in lm_params:
        p.requires_grad_(True)
    model.train()
    if world.relation_rationale:
        curriculum = zip(("lookup", "relation"), RATIONALE_PHASES, strict=True)
    else:
        curriculum = zip(("relation-lookup", "relation"), RELATION_PHASES, strict=True)
    phases = [(name, cfg.relation_steps, fams) for name, fams in curriculum]
    phases.append(("train", cfg.steps, cfg.families))
    t0 = time.time()
    done: list[dict[str, Any]] = []
    for name, steps, families in phases:
        if steps == 0:
            continue
        rng = random.Random(f"{cfg.seed}:language-pretrain:{name}")
        weights = dict(families)  # one copy per phase, not one per scene
        opt = torch.optim.AdamW(lm_params, lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.01)
        loss_value = first_loss = float("nan")
        bar = tqdm(range(steps), desc=f"language pretrain ({name})", disable=not progress)
        for step in bar:
            # 1a. Warm-up, then cosine to 5% of the peak.
            warm = min(1.0, (step + 1) / max(1, cfg.warmup_steps))
            cos = 0.05 + 0.475 * (1 + math.cos(math.pi * step / steps))
            for g in opt.param_groups:
                g["lr"] = cfg.lr * warm * cos
            # 1b. Fresh scenes, two questions each, right-padded, loss on the answers only.
            items: list[tuple[Scene, list[int], list[int]]] = []
            while len(items) < cfg.batch_size:
                scene = sample_scene(rng, world, f"lm{step}-{len(items)}", "train")
                for k, qa in enumerate(ask(scene, world, rng, 2, weights)):
                    items.append((scene, *encode(scene, qa, k)))
            items = items[: cfg.batch_size]
            opt.zero_grad(set_to_none=True)
            # 1c. Forward through the language model only (no pixel values), backward.
            loss = answer_loss_backward(
                model, slots, items, tok.pad_token_id, image_id, per=cfg.loss_per
            )
            torch.nn.utils.clip_grad_norm_(lm_params, 1.0)
            opt.step()
            if step % 20 == 0 or step == steps - 1:
                loss_value = loss.item()  # a sync; every 20 steps is enough for the bar
                first_loss = loss_value if step == 0 else first_loss
                bar.set_postfix(loss=f"{loss_value:.3f}")
        phase: dict[str, Any] = {
            "name": name,
            "steps": steps,
            "first_loss": round(first_loss, 5),
            "final_loss": round(loss_value, 5),
        }
        if cfg.probe_questions:
            t_probe = time.time()
            phase["slot_probe"] = slot_probe(
                model, processor, slots, world, cfg.probe_questions, cfg.seed
            )
            phase["probe_seconds"] = round(time.time() - t_probe, 1)
        done.append(phase)
    report["lm_phases"] = done
    report["lm_seconds"] = round(time.time() - t0, 1)
    report["lm_first_loss"] = done[0]["first_loss"] if done else float("nan")
    report["lm_final_loss"] = done[-1]["final_loss"] if done else float("nan")
    if done and "slot_probe" in done[-1]:
        report["slot_probe"] = done[-1]["slot_probe"]
    for p in lm_params:
        p.requires_grad_(False)

    # 2. Projector alignment: tower frozen, embeddings frozen, projector regresses the slots.
    tower = vision_tower(model)
    assert tower is not None
    tower.eval()
    projector = model.model.multi_modal_projector
    projector.requires_grad_(True)
    layer = model.config.vision_feature_layer
    opt = torch.optim.AdamW(projector.parameters(), lr=cfg.align_lr, weight_decay=0.0)
    rng = random.Random(f"{cfg.seed}:language-pretrain:align")
    t1 = time.time()

    def draw(r: random.Random, n: int, tag: str) -> tuple[torch.Tensor, torch.Tensor]:
        scenes = [sample_scene(r, world, f"{tag}{i}") for i in range(n)]
        pixels = processor.image_processor(
            [render_scene(s, world) for s in scenes], return_tensors="pt"
        )["pixel_values"]
        with torch.no_grad():
            feats = image_tokens(tower, pixels, layer)
            target = slots.batch(scenes).view(len(scenes), n_cells, -1)
        return feats, target

    # 2a. One bank of image tokens and their slots, drawn once: rendering costs far more than
    # a projector step, and a few thousand scenes cover the cells' combinations many times.
    feats, target = draw(rng, cfg.align_scenes, "a")
    feats, target = feats.flatten(0, 1), target.flatten(0, 1)
    # 2b. Data-dependent scale: the tower's features are large (norm ~40) and the slots small
    # (~0.6), so the random projector's outputs start ~100x too large and Adam spends the run
    # shrinking them. Measured (3000 steps, held-out cosine to the slots): 0.82 from the plain
    # init, 0.997 after rescaling each layer to the data.
    _rescale_projector(projector, feats, target)
    # 2c. Minibatches of cells; warm-up, then cosine decay.
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(range(cfg.align_steps), desc="projector align", disable=not progress)
    for step in bar:
        warm = min(1.0, (step + 1) / 100)
        for g in opt.param_groups:
            g["lr"] = cfg.align_lr * warm * 0.5 * (1 + math.cos(math.pi * step / cfg.align_steps))
        idx = torch.randint(0, len(feats), (cfg.align_batch_size,), generator=gen)
        loss = F.mse_loss(projector(feats[idx]), target[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0:
            bar.set_postfix(mse=f"{loss.item():.5f}")
    projector.requires_grad_(False)
    with torch.no_grad():
        feats, target = draw(random.Random(f"{cfg.seed}:language-pretrain:probe"), 256, "p")
        out = projector(feats)
        report["align_heldout_mse"] = round(F.mse_loss(out, target).item(), 6)
        report["align_heldout_cosine"] = round(
            F.cosine_similarity(out, target, dim=-1).mean().item(), 4
        )
        report["slot_norm"] = round(target.norm(dim=-1).mean().item(), 4)
    report["align_seconds"] = round(time.time() - t1, 1)

    # 3. Save over the checkpoint it was loaded from.
    save_in_place(model, model_dir, ".language-pretrain.tmp")
    report["seconds"] = round(time.time() - t0, 1)
    (model_dir / REPORT_FILE).write_text(json.dumps(report, indent=1))
    return report
