"""rm.reference_diff: the response's claim-level differences from the reference, in the prompt."""

import pytest
import torch
from reward_helpers import rm_config

from mmrlhf.config import ConfigError
from mmrlhf.data.io import load_records
from mmrlhf.data.record import Ranking, Record, Response
from mmrlhf.models.load import ModelConfig, load_vlm
from mmrlhf.models.reward import RewardModel, RewardSpec, scoring_record
from mmrlhf.models.textdiff import NO_DIFFERENCE, reference_diff
from mmrlhf.training.reward import RMDataset, prepare_items, run_reward


def test_shared_sentences_in_any_order_case_or_punctuation_are_no_difference():
    ref = "The cross is red. There are 2 objects."
    assert reference_diff(ref, ref) == NO_DIFFERENCE == "none"
    assert reference_diff(ref, "there are 2 objects!  The cross is RED") == "none"
    assert reference_diff("", "") == "none"


def test_a_close_sentence_is_shown_word_by_word():
    ref = "The scene is a cave. There is a large green triangle at the bottom left."
    resp = "The scene is a cave. There is a large white triangle at the bottom left."
    assert reference_diff(ref, resp) == '"white" instead of "green"'
    # replace, insert and delete inside one pair, in word order
    got = reference_diff("The digit is written at the bottom right.", "The digit is in the center.")
    # ref words: the digit is written at the bottom right; resp: the digit is in the center
    # matching blocks: "the digit is" then "the" -> written at -> in; bottom right -> center
    assert got == '"in" instead of "written at"; "center" instead of "bottom right"'
    assert reference_diff("The circle is red.", "The red circle is red.") == 'adds "red"'


def test_unpaired_sentences_are_added_or_left_out_whole():
    # "there is 1 circle" / "there are 2 circles": 2 of 8 words shared, ratio 0.25 < 0.5
    assert reference_diff("There is 1 circle.", "There are 2 circles. I hope this helps.") == (
        'adds "there are 2 circles"; adds "i hope this helps"; leaves out "there is 1 circle"'
    )
    # a response that leaves a sentence out, and the docstring's example
    ref = "The scene is a desert. There is a small red cross at the top."
    assert reference_diff(ref, "The scene is a desert.") == (
        'leaves out "there is a small red cross at the top"'
    )
    got = reference_diff(
        "The cross is red. There are 2 objects.",
        "There are 2 objects. The cross is blue. I hope this helps.",
    )
    assert got == '"blue" instead of "red"; adds "i hope this helps"'


def test_items_and_chunks_are_bounded():
    resp = " ".join(f"Sentence number {w} is new." for w in "abcdefgh")
    got = reference_diff("Something else entirely here.", resp, max_items=3)
    assert got.count(";") == 3 and got.endswith("; ...")
    long = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen."
    assert reference_diff("", long) == (
        'adds "one two three four five six seven eight nine ten eleven twelve ..."'
    )


def _rec():
    return Record.single(
        "r1",
        "What color?",
        [Response("The circle is red."), Response("The circle is blue.")],
        ranking=Ranking(groups=[[0], [1]]),
    )


def test_the_prompt_states_the_difference_after_the_response():
    spec = RewardSpec(type="critique", reference=True, response_first=True, reference_diff=True)
    t = spec.templates
    prompt, _ = scoring_record(_rec(), "The circle is blue.", spec, "c", "The circle is red.")
    want = (
        f"{t.reference_intro}\n\n{t.response_label} The circle is blue.\n\n"
        f'{t.diff_label} "blue" instead of "red".\n\n{t.critique_request}'
    )
    assert prompt.conversation[-1].text == want
    same, _ = scoring_record(_rec(), "The circle is red.", spec, "c", "The circle is red.")
    assert f"{t.diff_label} none." in same.conversation[-1].text
    # MM-RLHF's layout: the difference opens the critique request after the response turn
    spec = RewardSpec(type="critique", reference=True, reference_diff=True)
    prompt, _ = scoring_record(_rec(), "The circle is blue.", spec, "c", "The circle is red.")
    assert prompt.conversation[-2].text == "The circle is blue."
    assert prompt.conversation[-1].text == (
        f'{t.diff_label} "blue" instead of "red".\n\n{t.critique_request}'
    )
    # off: the prompt is the plain reference layout
    plain = RewardSpec(type="critique", reference=True)
    prompt, _ = scoring_record(_rec(), "The circle is blue.", plain, "c", "The circle is red.")
    assert prompt.conversation[-1].text == t.critique_request
    assert RewardSpec(type="critique", reference_diff=True).validate() == [
        "reference_diff=true needs reference=true (a reference to compare with)"
    ]


def test_config_rejects_diff_without_reference(tiny_models, pref_data, tmp_path):
    with pytest.raises(ConfigError, match="reference_diff=true needs reference=true"):
        rm_config(
            tiny_models["llava"], pref_data, tmp_path, "rm.type=critique", "rm.reference_diff=true"
        )


def test_diff_rm_trains_and_saves_the_option(tiny_models, pref_data, tmp_path):
    """The option reaches training (each response row holds its difference) and the saved
    spec, so scoring builds the same prompt."""
    cfg = rm_config(
        tiny_models["llava"],
        pref_data,
        tmp_path,
        "rm.type=critique",
        "rm.reference=true",
        "rm.reference_diff=true",
        "train.max_steps=2",
        "train.num_threads=1",
    )
    records, _ = load_records(str(pref_data), task="preference")
    items, _ = prepare_items(records, cfg.data, cfg.rm.spec())
    _, processor = load_vlm(ModelConfig(path=str(tiny_models["llava"])), for_training=False)
    exs, it = RMDataset(items, processor, str(pref_data.parent), cfg.rm.spec(), cfg.data)[0]
    label = cfg.rm.templates.diff_label
    for ex, text in zip(exs, it.texts, strict=True):
        prompt = processor.tokenizer.decode(ex.input_ids[: ex.prompt_length])
        want = reference_diff(it.reference, text)
        assert f"{label} {want}." in prompt, prompt
    assert {reference_diff(it.reference, t) == "none" for t in it.texts} == {True, False}
    torch.manual_seed(0)
    res = run_reward(cfg)
    rm = RewardModel.from_pretrained(res["final"], device="cpu")
    assert rm.spec.reference_diff and rm.spec.reference
