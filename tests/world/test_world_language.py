"""Pretraining the tiny LLaVA's language model on symbolic scenes and aligning its projector
(``mmrlhf.world.language``)."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from mmrlhf.models.load import load_processor
from mmrlhf.world import WorldConfig
from mmrlhf.world.language import (
    PROBE_FAMILIES,
    RATIONALE_PHASES,
    RELATION_PHASES,
    REPORT_FILE,
    LanguagePretrainConfig,
    SlotEmbedder,
    answer_loss_backward,
    pretrain_language_model,
    slot_probe,
)
from mmrlhf.world.scene import Glyph, Scene, SceneObject


def _id_table(vocab: int) -> torch.nn.Embedding:
    """An embedding table where token t is the vector ``[t, 1]``: a mean over tokens is then
    ``[mean id, 1]``, easy to compute by hand."""
    emb = torch.nn.Embedding(vocab, 2)
    with torch.no_grad():
        emb.weight[:, 0] = torch.arange(vocab, dtype=torch.float)
        emb.weight[:, 1] = 1.0
    return emb


def _mean_id(tok: Any, text: str) -> float:
    ids = tok(text, add_special_tokens=False)["input_ids"]
    return sum(ids) / len(ids)


def test_slots_hand_computed(tiny_models: dict[str, Path]) -> None:
    """An embedding table where token t is the vector ``[t, 1]``: a cell's slot is the mean over
    the background's tokens plus the mean over the cell's words, so with background tokens
    ``b`` and cell tokens ``c`` the slot is ``[mean(b) + mean(c), 2]``; an empty cell is
    ``[mean(b), 1]``."""
    tok = load_processor(tiny_models["llava"]).tokenizer
    emb = _id_table(len(tok))
    world = WorldConfig()
    scene = Scene(
        id="s",
        background="ocean",
        objects=[SceneObject("circle", "red", "large", 0, 0, 12, 12)],
        glyph=Glyph(digit=7, row=2, col=2),
    )
    slots = SlotEmbedder(emb, tok, world).slots(scene)

    bg = _mean_id(tok, "ocean")
    assert slots.shape == (9, 2)
    assert torch.allclose(slots[0], torch.tensor([bg + _mean_id(tok, "large red circle"), 2.0]))
    assert torch.allclose(slots[8], torch.tensor([bg + _mean_id(tok, "digit 7"), 2.0]))
    for k in range(1, 8):
        assert torch.allclose(slots[k], torch.tensor([bg, 1.0]))


def test_batched_slots_match_one_scene_at_a_time(tiny_models: dict[str, Path]) -> None:
    """``batch`` (one embedding_bag for a whole batch) equals the scenes' slots stacked in
    order, position words included (``[t, 1]`` table: each position adds ``[mean(p), 1]``)."""
    tok = load_processor(tiny_models["llava"]).tokenizer
    emb = _id_table(len(tok))
    world = WorldConfig()
    a = Scene(
        id="a", background="ocean", objects=[SceneObject("circle", "red", "large", 0, 0, 12, 12)]
    )
    b = Scene(id="b", background="cave", objects=[], glyph=Glyph(digit=3, row=1, col=1))
    plain, placed = SlotEmbedder(emb, tok, world), SlotEmbedder(emb, tok, world, True)
    both = placed.batch([a, b])
    assert both.shape == (18, 2)
    assert torch.equal(both, torch.cat([placed.slots(a), placed.slots(b)]))
    top_left = torch.tensor([_mean_id(tok, "top left"), 1.0])
    assert torch.allclose(both[0], plain.slots(a)[0] + top_left)
    assert not torch.equal(both[9:], plain.batch([b]))


def test_bucketed_answer_loss_is_the_one_forward_loss(tiny_models: dict[str, Path]) -> None:
    """Buckets by length with answer-only logits give the loss and gradients of one
    right-padded forward of the whole batch with full logits: the mean CE over all answer
    tokens (per token) or the mean of each answer's mean (per answer)."""
    from mmrlhf.models.load import ModelConfig, load_vlm
    from mmrlhf.world.scene import sample_scene

    model, processor = load_vlm(ModelConfig(path=str(tiny_models["llava"]), device="cpu"))
    model.train()
    for p in model.parameters():
        p.requires_grad_(True)
    tok, image_id = processor.tokenizer, model.config.image_token_id
    world = WorldConfig()
    slots = SlotEmbedder(model.get_input_embeddings(), tok, world, position_words=True)
    rng = random.Random(0)
    # three lengths far apart, so the cheapest bucketing splits them
    items = []
    for i, (q, a) in enumerate(
        [("What?", "Red."), ("Describe it.", "A long answer " * 6), ("Is it?", "Yes, it is.")]
    ):
        prompt = tok(f"USER: {q}" + processor.image_token * 9 + "ASSISTANT:")["input_ids"]
        items.append((sample_scene(rng, world, f"s{i}"), prompt, tok(a)["input_ids"]))
    params = [p for p in model.parameters() if p.requires_grad]

    def grads() -> list[torch.Tensor]:
        out = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
        model.zero_grad(set_to_none=True)
        return out

    # reference: one padded batch, full logits
    width = max(len(p) + len(c) for _, p, c in items)
    seqs = torch.full((3, width), tok.pad_token_id)
    mask, labels = torch.zeros_like(seqs), torch.full_like(seqs, -100)
    for i, (_, p, c) in enumerate(items):
        seqs[i, : len(p) + len(c)] = torch.tensor(p + c)
        mask[i, : len(p) + len(c)] = 1
        labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
    x = model.get_input_embeddings()(seqs)
    x = x.masked_scatter((seqs == image_id)[..., None], slots.batch([s for s, _, _ in items]))
    logits = model(inputs_embeds=x, attention_mask=mask).logits[:, :-1]
    ce = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), labels[:, 1:], reduction="none"
    )  # [3, T-1], 0 off the answers
    answer = labels[:, 1:] != -100
    refs = {
        "token": ce.sum() / answer.sum(),  # one mean over the 3 answers' tokens
        "answer": (ce.sum(1) / answer.sum(1)).mean(),  # each answer's mean, then their mean
    }
    assert not torch.isclose(refs["token"], refs["answer"])  # the lengths differ enough
    for per, ref in refs.items():
        ref.backward(retain_graph=True)
        ref_grads = grads()
        for overhead in (0, 10**6):  # one bucket per length / one bucket
            loss = answer_loss_backward(
                model, slots, items, tok.pad_token_id, image_id, overhead, per=per
            )
            torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-6)
            for g, r in zip(grads(), ref_grads, strict=True):
                torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_pretraining_trains_the_lm_then_the_projector(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    model = tmp_path / "tiny"
    shutil.copytree(tiny_models["llava"], model)
    before = load_file(model / "model.safetensors")
    report = pretrain_language_model(
        model,
        WorldConfig(),
        LanguagePretrainConfig(
            steps=40,
            batch_size=8,
            warmup_steps=5,
            align_steps=200,
            align_scenes=128,
            probe_questions=12,
        ),
        progress=False,
    )
    probe = report["lm_phases"][-1]["slot_probe"]
    assert report["slot_probe"] == probe and "core" in probe
    assert set(probe) <= {*PROBE_FAMILIES, "core"}
    assert all(0 <= v <= 1 for v in probe.values())
    after = load_file(model / "model.safetensors")
    changed = {k for k in before if not (before[k] == after[k]).all()}
    # the tower is never touched; the embeddings, every LM block, the head and the projector are
    assert not any("vision_tower" in k for k in changed)
    assert any("embed_tokens" in k for k in changed) and any("lm_head" in k for k in changed)
    assert any("multi_modal_projector" in k for k in changed)
    assert any("layers.1.mlp" in k and "vision" not in k for k in changed)
    assert report["lm_final_loss"] < report["lm_first_loss"], report
    # a random projector points anywhere (cosine ~0); 200 steps on 128 scenes already align it
    assert report["align_heldout_cosine"] > 0.6, report
    assert json.loads((model / REPORT_FILE).read_text()) == report
    assert not (model / ".language-pretrain.tmp").exists()


def test_slot_probe_grades_each_answer_against_its_own_question(
    tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An LM whose greedy answer is the probe question's true answer scores 1.0 in every family;
    the same answers shifted by one question score far less: answers are graded against the
    questions they answer, and held-out questions come from their own seeded stream."""
    from mmrlhf.models.load import ModelConfig, load_vlm
    from mmrlhf.world.questions import ask
    from mmrlhf.world.scene import sample_scene

    model, processor = load_vlm(ModelConfig(path=str(tiny_models["llava"]), device="cpu"))
    tok, world = processor.tokenizer, WorldConfig()
    slots = SlotEmbedder(model.get_input_embeddings(), tok, world, position_words=True)
    # the probe's own stream, replayed: the true answers in probe order
    rng = random.Random("0:language-pretrain:probe-questions")
    truth = []
    for i in range(40):
        scene = sample_scene(rng, world, f"probe{i}", "test")
        for qa in ask(scene, world, rng, 1, dict.fromkeys(PROBE_FAMILIES, 1.0)):
            truth.append(qa.answer)
    for shift, perfect in ((0, True), (1, False)):
        answers = iter(truth[shift:] + truth[:shift])

        def fake_generate(inputs_embeds, answers=answers, **_):
            rows = [
                tok(next(answers) + "</s>", add_special_tokens=False)["input_ids"]
                for _ in range(len(inputs_embeds))
            ]
            width = max(map(len, rows))
            return torch.tensor([r + [tok.pad_token_id] * (width - len(r)) for r in rows])

        monkeypatch.setattr(model, "generate", fake_generate)
        acc = slot_probe(model, processor, slots, world, 40, seed=0, batch_size=16)
        assert set(acc) == {*PROBE_FAMILIES, "core"}
        if perfect:
            assert all(v == 1.0 for v in acc.values()), acc
        else:
            assert acc["core"] < 0.8, acc


def test_relation_curriculum_runs_its_phases_before_the_main_one(
    tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    small = dict(batch_size=4, warmup_steps=1, align_steps=0, align_scenes=8)
    runs = {}
    for relation_steps in (0, 3):
        model = tmp_path / f"tiny{relation_steps}"
        shutil.copytree(tiny_models["llava"], model)
        report = pretrain_language_model(
            model,
            WorldConfig(),
            LanguagePretrainConfig(steps=2, relation_steps=relation_steps, **small),
            progress=False,
        )
        runs[relation_steps] = (report, load_file(model / "model.safetensors"))
    plain, curriculum = runs[0][0], runs[3][0]
    assert [p["name"] for p in plain["lm_phases"]] == ["train"]
    assert [(p["name"], p["steps"]) for p in curriculum["lm_phases"]] == [
        ("relation-lookup", 3),
        ("relation", 3),
        ("train", 2),
    ]
    assert curriculum["lm_first_loss"] == curriculum["lm_phases"][0]["first_loss"]
    assert curriculum["lm_final_loss"] == curriculum["lm_phases"][-1]["final_loss"]
    # the curriculum's steps changed the LM that the main phase then started from
    w0, w3 = runs[0][1], runs[3][1]
    emb = next(k for k in w0 if "embed_tokens" in k and "vision" not in k)
    assert not torch.equal(w0[emb], w3[emb])
    assert set(RELATION_PHASES[0]) == {"relation", "other"}
    assert set(RELATION_PHASES[1]) == {"relation"}
    # with relation rationales the first phase is the lookups alone
    model = tmp_path / "tiny-rationale"
    shutil.copytree(tiny_models["llava"], model)
    report = pretrain_language_model(
        model,
        WorldConfig(relation_rationale=True),
        LanguagePretrainConfig(steps=2, relation_steps=3, **small),
        progress=False,
    )
    assert [(p["name"], p["steps"]) for p in report["lm_phases"]] == [
        ("lookup", 3),
        ("relation", 3),
        ("train", 2),
    ]
    assert RATIONALE_PHASES == ({"other": 1.0}, {"relation": 1.0})


def test_pretraining_needs_one_token_per_cell(tiny_models: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="needs the llava tiny model"):
        pretrain_language_model(tiny_models["qwen2_vl"], WorldConfig(), progress=False)


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="align_scenes must be >= 1"):
        LanguagePretrainConfig(align_scenes=0)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        LanguagePretrainConfig(steps=-1)
    with pytest.raises(ValueError, match="relation_steps must be >= 0"):
        LanguagePretrainConfig(relation_steps=-1)
    with pytest.raises(ValueError, match="unknown question families"):
        LanguagePretrainConfig(families={"attribute": 1.0, "colour": 1.0})
    with pytest.raises(ValueError, match="loss_per must be one of"):
        LanguagePretrainConfig(loss_per="sequence")
    with pytest.raises(ValueError, match="probe_questions must be >= 0"):
        LanguagePretrainConfig(probe_questions=-1)
