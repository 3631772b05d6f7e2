"""RewardModel: reading position, batch independence, encode-once pairs, the three prompt types,
save/load round trips on the three tiny architectures."""

import pytest
import torch

from mmrlhf.data.io import load_records
from mmrlhf.data.record import Facts, ImageRef, Ranking, Record, Response
from mmrlhf.losses.reward import reward_loss
from mmrlhf.models.inputs import IGNORE_INDEX, collate
from mmrlhf.models.reward import (
    MissingFactsError,
    RewardModel,
    RewardSpec,
    encode_for_reward,
    last_token_index,
)
from mmrlhf.training.reward import (
    PairDataError,
    RewardDataConfig,
    RMDataset,
    collate_items,
    prepare_items,
)

ARCHS = ("llava", "llava_onevision", "qwen2_vl")


def _rm(path, rm_type="scalar", **kw):
    torch.manual_seed(0)
    return RewardModel.from_pretrained(
        path, init_head=True, spec=RewardSpec(type=rm_type, **kw), device="cpu"
    )


def _encode_critiqued(rm, rec, response, critique, pref_data):
    """One response of ``rec`` with its critique, encoded for the critique RM."""
    (ex,) = encode_for_reward(
        rec, [response], rm.processor, rm.spec, critiques=[critique], media_root=pref_data.parent
    )
    return ex


@pytest.fixture(scope="module")
def records(pref_data):
    recs, _ = load_records(pref_data)
    return recs


def test_last_token_index_any_padding():
    right = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    left = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 0, 1]])
    assert last_token_index(right).tolist() == [2, 3, 0]
    assert last_token_index(left).tolist() == [3, 3, 3]


def test_reward_reads_last_non_pad_token(tiny_models, records, pref_data):
    rm = _rm(tiny_models["llava"])
    rec = records[0]
    exs = encode_for_reward(
        rec,
        ["Red.", "The circle is a long answer, green and blue."],
        rm.processor,
        rm.spec,
        media_root=pref_data.parent,
    )
    batch = collate(exs, rm.processor.tokenizer.pad_token_id)
    with torch.no_grad():
        hidden = rm.hidden_states(batch)
        rewards = rm(batch).rewards
    manual = torch.stack([rm.head(hidden[i, len(e.input_ids) - 1]) for i, e in enumerate(exs)])
    torch.testing.assert_close(rewards, manual)
    # the hidden state is the full model's last layer (what lm_head reads)
    full = rm.vlm(**{k: v for k, v in batch.items() if k != "labels"}, output_hidden_states=True)
    torch.testing.assert_close(hidden, full.hidden_states[-1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_reward_independent_of_batch_and_padding(tiny_models, records, pref_data, arch):
    rm = _rm(tiny_models[arch])
    rec = records[1]
    texts = ["The circle is red.", "It is a much longer answer about a blue circle, surely."]
    exs = encode_for_reward(rec, texts, rm.processor, rm.spec, media_root=pref_data.parent)
    pad = rm.processor.tokenizer.pad_token_id
    with torch.no_grad():
        together = rm(collate(exs, pad)).rewards
        alone = torch.cat([rm(collate([e], pad)).rewards for e in exs])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-5)


def _three_ranked(pref_data):
    return Record.single(
        "triple",
        "What color is the circle?",
        ["The circle is red.", "The circle is blue.", "The circle is green."],
        images=[ImageRef(path="images/0.png")],
        ranking=Ranking(groups=[[0], [1], [2]]),
    )


def test_pair_loss_unchanged_when_response_in_another_pair(tiny_models, pref_data):
    """Acceptance: response 0 is in pairs (0,1) and (0,2); it is encoded once and each pair's BT
    term equals that of the pair scored on its own."""
    rm = _rm(tiny_models["llava"])
    rm.eval()
    data = RewardDataConfig(pairs="all")
    rec = _three_ranked(pref_data)
    items, _ = prepare_items([rec], data, rm.spec)
    ds = RMDataset(items, rm.processor, str(pref_data.parent), rm.spec, data)
    pad = rm.processor.tokenizer.pad_token_id
    batch = collate_items([ds[0]], pad)
    pairs = batch.pop("pairs")
    assert batch["input_ids"].shape[0] == 3  # three responses, three pairs: each encoded once
    assert list(zip(pairs["chosen"].tolist(), pairs["rejected"].tolist(), strict=True)) == [
        (0, 1),
        (0, 2),
        (1, 2),
    ]
    with torch.no_grad():
        r = rm(batch).rewards
    per_pair = -torch.nn.functional.logsigmoid(r[pairs["chosen"]] - r[pairs["rejected"]])
    for c, j in ((0, 1), (0, 2)):
        two = Record.single(
            "two",
            rec.query,
            [rec.responses[c].text, rec.responses[j].text],
            images=rec.images,
            ranking=Ranking(groups=[[0], [1]]),
        )
        it2, _ = prepare_items([two], data, rm.spec)
        b2 = collate_items(
            [RMDataset(it2, rm.processor, str(pref_data.parent), rm.spec, data)[0]], pad
        )
        p2 = b2.pop("pairs")
        with torch.no_grad():
            loss2, _ = reward_loss(rm(b2).rewards, p2["chosen"], p2["rejected"])
        k = [(0, 1), (0, 2)].index((c, j))
        torch.testing.assert_close(per_pair[k], loss2, rtol=1e-5, atol=1e-6)
    # and the batch loss is the mean of those per-pair terms
    loss, m = reward_loss(r, pairs["chosen"], pairs["rejected"])
    torch.testing.assert_close(loss, per_pair.mean())
    assert m["n_pairs"] == 3


def test_critique_labels_and_score_position(tiny_models, records, pref_data):
    rm = _rm(tiny_models["llava"], "critique")
    rec = records[0]
    tok = rm.processor.tokenizer
    critique = "The response is wrong: the circle is red."
    ex = _encode_critiqued(rm, rec, "The circle is blue.", critique, pref_data)
    labelled = ex.labels[ex.labels != IGNORE_INDEX]
    assert tok.decode(labelled).strip() == critique + "</s>"
    prompt = tok.decode(ex.input_ids[: ex.prompt_length])
    assert "The circle is blue." in prompt and rm.spec.templates.critique_request in prompt
    batch = collate([ex], tok.pad_token_id)
    with torch.no_grad():
        out = rm(batch, lm=True)
        hidden = rm.hidden_states(batch)
        logits = rm.vlm(**{k: v for k, v in batch.items() if k != "labels"}).logits
    # the score is read at the critique's last token
    torch.testing.assert_close(out.rewards, rm.head(hidden[:, -1]))
    assert int(batch["input_ids"][0, -1]) == int(labelled[-1])
    # LM loss: only critique tokens, same as the full-vocabulary computation
    manual = torch.nn.functional.cross_entropy(
        logits[0, :-1].float(), batch["labels"][0, 1:], ignore_index=IGNORE_INDEX, reduction="sum"
    )
    assert out.lm_tokens == len(labelled)
    torch.testing.assert_close(out.lm_loss_sum, manual, rtol=1e-4, atol=1e-4)


def test_fact_prompt_carries_facts_and_missing_facts_fail(tiny_models, records, pref_data):
    rm = _rm(tiny_models["llava"], "fact")
    rec = records[0]
    (ex,) = encode_for_reward(
        rec, ["The circle is red."], rm.processor, rm.spec, media_root=pref_data.parent
    )
    prompt = rm.processor.tokenizer.decode(ex.input_ids[: ex.prompt_length])
    assert rec.facts.captions[0] in prompt and rec.facts.short_answer in prompt
    assert rm.spec.templates.facts_intro in prompt
    bare = Record.single(
        "nofacts",
        rec.query,
        ["a", "b"],
        images=rec.images,
        ranking=Ranking(groups=[[0], [1]]),
        facts=Facts(),
    )
    with pytest.raises(
        MissingFactsError, match="nofacts: facts: the fact reward model needs facts"
    ):
        encode_for_reward(bare, ["a"], rm.processor, rm.spec, media_root=pref_data.parent)
    data = RewardDataConfig()
    items, counts = prepare_items([rec, bare, bare], data, rm.spec)
    assert len(items) == 1 and counts["missing_facts"] == 2
    with pytest.raises(PairDataError, match="nofacts"):
        prepare_items([bare], data, rm.spec, strict=True)


def test_critique_rm_with_facts(tiny_models, records, pref_data, tmp_path):
    """facts=true: the critique RM's question turn carries the facts (before the response and
    the critique request), the critique stays the labelled part, the flag survives a save, and a
    record without facts fails with a message naming the variant."""
    rm = _rm(tiny_models["llava"], "critique", facts=True)
    rec = records[0]
    crit = rec.responses[0].critique
    ex = _encode_critiqued(rm, rec, "The circle is red.", crit, pref_data)
    tok = rm.processor.tokenizer
    prompt = tok.decode(ex.input_ids[: ex.prompt_length])
    assert prompt.index(rec.facts.captions[0]) < prompt.index("The circle is red.")
    assert prompt.index("The circle is red.") < prompt.index(rm.spec.templates.critique_request)
    assert crit in tok.decode(ex.input_ids[ex.prompt_length :])
    rm.save_pretrained(tmp_path / "rm")
    assert RewardModel.from_pretrained(tmp_path / "rm", device="cpu").spec.facts is True
    bare = Record.single(
        "nofacts",
        rec.query,
        ["a", "b"],
        images=rec.images,
        facts=Facts(),
        ranking=Ranking(groups=[[0], [1]]),
    )
    with pytest.raises(MissingFactsError, match="critique reward model with facts needs facts"):
        encode_for_reward(
            bare, ["a"], rm.processor, rm.spec, critiques=["c"], media_root=pref_data.parent
        )
    assert (
        "facts=true is for the critique type" in RewardSpec(type="scalar", facts=True).validate()[0]
    )


def test_bad_records_are_counted_or_raised(tiny_models):
    spec = RewardSpec()
    same = Record.single("same", "q", ["x", "x"], ranking=Ranking(groups=[[0], [1]]))
    tied = Record.single("tied", "q", ["x", "y"], ranking=Ranking(groups=[[0, 1]]))
    dup = Record.single("dup", "q", ["x", "x", "y"], ranking=Ranking(groups=[[0], [1], [2]]))
    items, counts = prepare_items([same, tied, dup], RewardDataConfig(), spec)
    assert counts == {
        "fewer_than_2_distinct_responses": 1,
        "no_pairs": 1,
        "identical_text_pairs": 1,
    }
    # dup: responses 0 and 1 share a text -> one slot; pairs (0,2), (1,2) both map to (0, 1)
    assert [it.record.id for it in items] == ["dup"] and items[0].texts == ["x", "y"]
    assert items[0].chosen == [0, 0] and items[0].rejected == [1, 1]
    for bad in (same, tied, dup):
        with pytest.raises(PairDataError, match=bad.id):
            prepare_items([bad], RewardDataConfig(strict=True), spec)
    # ties=keep turns the tied record into a tie pair
    items, _ = prepare_items([tied], RewardDataConfig(ties="keep"), spec)
    assert items[0].tie_a == [0] and items[0].tie_b == [1] and not items[0].chosen


def test_margins_from_scores_are_scaled():
    from mmrlhf.data.record import Score

    rec = Record.single(
        "m",
        "q",
        [Response("a", helpfulness=Score(5)), Response("b", helpfulness=Score(2))],
        ranking=Ranking(groups=[[0], [1]]),
    )
    items, _ = prepare_items(
        [rec], RewardDataConfig(margin="scores", margin_scale=0.5), RewardSpec()
    )
    assert items[0].margin == [1.5]


@pytest.mark.parametrize("arch", ARCHS)
def test_save_load_round_trip(tiny_models, records, pref_data, tmp_path, arch):
    rm = _rm(tiny_models[arch], head="linear")
    rm.eval()
    exs = encode_for_reward(
        records[2],
        [x.text for x in records[2].responses],
        rm.processor,
        rm.spec,
        media_root=pref_data.parent,
    )
    batch = collate(exs, rm.processor.tokenizer.pad_token_id)
    with torch.no_grad():
        rm.head.net[-1].bias.fill_(0.25)  # not the init value: the head must really be saved
        before = rm(batch).rewards
    rm.save_pretrained(tmp_path / "rm")
    assert (tmp_path / "rm" / "reward_head.safetensors").exists()
    loaded = RewardModel.from_pretrained(tmp_path / "rm", device="cpu")
    assert loaded.spec.head == "linear" and not loaded.training
    with torch.no_grad():
        after = loaded(batch).rewards
    torch.testing.assert_close(before, after)
    with pytest.raises(FileNotFoundError, match="init_head=True"):
        RewardModel.from_pretrained(tiny_models[arch], device="cpu")
    with pytest.raises(ValueError, match="type=scalar"):
        RewardModel.from_pretrained(tmp_path / "rm", spec=RewardSpec(type="critique"), device="cpu")


@pytest.mark.parametrize("rm_type", ["scalar", "critique"])
def test_response_first_layout(tiny_models, records, pref_data, tmp_path, rm_type):
    """response_first: the response sits in the question turn; scalar reads the reward at an
    empty assistant turn's end-of-turn token, critique labels the critique only; the setting
    survives save/load."""
    rm = _rm(tiny_models["llava"], rm_type, response_first=True)
    tok = rm.processor.tokenizer
    rec = records[0]
    response, critique = "The circle is blue.", "The response is wrong: the circle is red."
    (ex,) = encode_for_reward(
        rec,
        [response],
        rm.processor,
        rm.spec,
        critiques=[critique] if rm_type == "critique" else None,
        media_root=pref_data.parent,
    )
    prompt = tok.decode(ex.input_ids[: ex.prompt_length])
    user_turn = prompt.split("ASSISTANT:")[0]
    assert f"{rm.spec.templates.response_label} {response}" in user_turn
    assert prompt.count("ASSISTANT:") == 1  # no assistant turn holds the response
    assert (rm.spec.templates.critique_request in user_turn) == (rm_type == "critique")
    labelled = tok.decode(ex.labels[ex.labels != IGNORE_INDEX]).strip()
    assert labelled == (critique + "</s>" if rm_type == "critique" else "</s>")
    # a different response changes the prompt, not the labelled part (scalar)
    (other,) = encode_for_reward(
        rec,
        ["The circle is red."],
        rm.processor,
        rm.spec,
        critiques=[critique] if rm_type == "critique" else None,
        media_root=pref_data.parent,
    )
    assert not torch.equal(other.input_ids[: other.prompt_length], ex.input_ids[: ex.prompt_length])
    rm.save_pretrained(tmp_path / "rm")
    assert RewardModel.from_pretrained(tmp_path / "rm", device="cpu").spec.response_first


def test_score_grad_scales_only_the_backbone_gradient(tiny_models, records, pref_data):
    """Same rewards for any ``score_grad``; the head's gradient is unchanged, the backbone's is
    ``s`` times the full one (0.5 -> half; 0 -> none at all, ``grad is None``)."""
    rm = _rm(tiny_models["llava"])
    rm.eval()  # no head dropout: the three forwards must see the same function
    rm.requires_grad_(True)
    exs = encode_for_reward(
        records[0], ["Red.", "It is green."], rm.processor, rm.spec, media_root=pref_data.parent
    )
    batch = collate(exs, rm.processor.tokenizer.pad_token_id)
    backbone = rm.vlm.get_input_embeddings().weight
    head = rm.head.net[-1].weight
    got = {}
    for s in (1.0, 0.5, 0.0):
        rm.zero_grad(set_to_none=True)
        r = rm(batch, score_grad=s).rewards
        (r[0] - 2 * r[1]).backward()
        got[s] = (r.detach(), head.grad.clone(), backbone.grad)
    torch.testing.assert_close(got[0.5][0], got[1.0][0])
    torch.testing.assert_close(got[0.0][0], got[1.0][0])
    torch.testing.assert_close(got[0.5][1], got[1.0][1])
    torch.testing.assert_close(got[0.0][1], got[1.0][1])
    assert got[1.0][2].abs().sum() > 0
    torch.testing.assert_close(got[0.5][2], 0.5 * got[1.0][2])
    assert got[0.0][2] is None
