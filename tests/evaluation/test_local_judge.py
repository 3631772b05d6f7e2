"""The local-model judge on a tiny random Llama saved and loaded by path (no downloads)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from mmrlhf.evaluation.judges.base import CompareItem, RateItem
from mmrlhf.evaluation.judges.local import LocalJudge
from mmrlhf.evaluation.judges.prompts import mmhal_prompt, refomb_prompt
from mmrlhf.models.tiny import train_tokenizer

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def items() -> list[RateItem]:
    return [
        RateItem(
            id=f"q{i}",
            question="What color is the fire hydrant cap?",
            question_type="attribute",
            image_content=["Fire hydrant"],
            gt_answer="The cap is yellow.",
            answer="The cap is yellow." + " It stands on a sidewalk." * i,
        )
        for i in range(3)
    ]


def build_checkpoint(root: Path, chat_template: bool) -> Path:
    """A random 2-layer Llama with a byte-level BPE tokenizer trained on the judge prompts."""
    texts = [
        mmhal_prompt("What color is it?", ["Cat"], "Red.", "Blue. Rating: 5"),
        refomb_prompt("What is it?", "A cat on a red sofa.", "A cat.", "A dog. Winner: A"),
    ] * 20
    tok = train_tokenizer(texts, vocab_size=600)
    if chat_template:
        tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(cfg).save_pretrained(root)
    tok.save_pretrained(root)
    return root


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "chat-template"])
def checkpoint(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_checkpoint(tmp_path_factory.mktemp("tiny-judge"), request.param)


def test_garbage_output_is_unparsed_not_an_exception(checkpoint: Path) -> None:
    judge = LocalJudge(checkpoint, max_new_tokens=6, batch_size=2)
    assert judge.name == f"local:{checkpoint.name}"
    ratings = judge.rate(items())
    assert [r.id for r in ratings] == ["q0", "q1", "q2"]
    for r in ratings:
        assert (r.rating, r.parsed, r.error) == (0, False, None)
        assert isinstance(r.explanation, str)
    [v] = judge.compare([CompareItem("c", "Q?", "A description.", "x", "y")])
    assert (v.winner, v.parsed, v.error) == (None, False, None)
    assert judge.stats == {"generations": 4, "failures": 0, "unparsed": 4}


def test_parsing_path_end_to_end(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    judge = LocalJudge(checkpoint, max_new_tokens=6, batch_size=2)
    tok = judge.tokenizer
    calls = []

    def fake_generate(input_ids, attention_mask, generation_config, **kw):
        calls.append(input_ids.shape[0])
        # Left padding: every row's last position is a real token.
        assert bool(attention_mask[:, -1].all())
        assert generation_config.do_sample is False
        reply = reply_text[0]
        new = torch.tensor(tok(reply, add_special_tokens=False)["input_ids"] + [tok.eos_token_id])
        return torch.cat([input_ids, new.expand(input_ids.shape[0], -1)], dim=1)

    monkeypatch.setattr(judge.model, "generate", fake_generate)
    reply_text = ["The response matches the labels.\nRating: 5"]
    ratings = judge.rate(items())
    assert calls == [2, 1]
    assert [(r.rating, r.parsed) for r in ratings] == [(5, True)] * 3
    assert ratings[0].explanation == reply_text[0]
    reply_text[0] = "B has no hallucination.\nWinner: B"
    [v] = judge.compare([CompareItem("c", "Q?", "A description.", "x", "y")])
    assert (v.winner, v.parsed) == ("b", True)


def test_overlong_prompt_and_failed_generation_become_errors(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    judge = LocalJudge(checkpoint, max_new_tokens=6, batch_size=3)
    monkeypatch.setattr(judge.model.config, "max_position_embeddings", 64)
    ratings = judge.rate(items()[:2])
    assert all(not r.parsed and "exceeds the model's context" in r.error for r in ratings)
    monkeypatch.undo()

    def boom(**kw):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(judge.model, "generate", boom)
    ratings = judge.rate(items())
    assert all(r.rating == 0 and "out of memory" in r.error for r in ratings)
    assert judge.stats["failures"] == 5
