"""rm.critique_focus: chosen critique tokens (e.g. the verdict) weigh more in the LM term."""

import re

import pytest
import torch
from reward_helpers import rm_config

from mmrlhf.config import ConfigError
from mmrlhf.data.io import load_records
from mmrlhf.models.inputs import collate, load_media
from mmrlhf.models.reward import RewardModel, RewardSpec, encode_for_reward, focus_spans
from mmrlhf.training.reward import run_reward

SPEC = RewardSpec(type="critique")
CRIT = "The response is wrong: the circle is blue."


def test_focus_spans_are_the_groups_or_the_whole_match():
    text = "It answers 2, which is right. It answers 3, which is wrong."
    #       0         1         2         3         4         5
    #       0123456789012345678901234567890123456789012345678901234567890
    two_groups = re.compile(r"answers ([0-9]), which is (right|wrong)")
    assert focus_spans(two_groups, text) == [(11, 12), (23, 28), (41, 42), (53, 58)]
    assert focus_spans(re.compile(r"is (right|wrong)"), text) == [(23, 28), (53, 58)]
    assert focus_spans(re.compile(r"which is \w+"), text) == [(14, 28), (44, 58)]
    # an optional group that did not take part adds nothing
    assert focus_spans(re.compile(r"answers ([0-9])(x)?"), text) == [(11, 12), (41, 42)]
    assert focus_spans(re.compile(r"absent"), text) == []


def _rows(rm, rec, media, focus=None):
    return encode_for_reward(
        rec, ["x", "y"], rm.processor, SPEC, critiques=[CRIT, "Fine."], media=media, focus=focus
    )


def test_only_the_matched_critique_tokens_get_the_weight(tiny_models, pref_data):
    rm = RewardModel.from_pretrained(tiny_models["llava"], init_head=True, spec=SPEC, device="cpu")
    rec = load_records(pref_data)[0][0]
    media = load_media(rec, pref_data.parent)
    plain = _rows(rm, rec, media)
    weighted = _rows(rm, rec, media, focus=(re.compile(r"is (wrong)"), 5.0))
    for a, b in zip(plain, weighted, strict=True):  # the offsets call changes no token
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
    assert plain[0].label_weights is None
    w = weighted[0].label_weights
    assert w is not None and w.shape == weighted[0].input_ids.shape
    hit = w == 5.0
    assert set(w.tolist()) == {1.0, 5.0}
    assert not hit[: weighted[0].prompt_length].any()  # prompt tokens are never weighted
    tok = rm.processor.tokenizer
    assert tok.decode(weighted[0].input_ids[hit]).strip() == "wrong"
    assert weighted[1].label_weights is None  # "Fine." does not match: no weights at all


def test_token_weights_scale_each_tokens_loss(tiny_models, pref_data):
    """lm_weight [B, T]: the loss is linear in a token's weight, L(1 + d) = L(1) + d * ce_k, and
    all-ones equals no weight."""
    rm = RewardModel.from_pretrained(tiny_models["llava"], init_head=True, spec=SPEC, device="cpu")
    rm.eval()
    rec = load_records(pref_data)[0][0]
    rows = _rows(rm, rec, load_media(rec, pref_data.parent))
    batch = collate(rows, rm.processor.tokenizer.pad_token_id)
    k = int(rows[0].prompt_length) + 2  # a labelled token of row 0

    def loss(d: float) -> float:
        w = torch.ones(batch["labels"].shape)
        w[0, k] += d
        with torch.no_grad():
            return float(rm(batch, lm=True, lm_weight=w).lm_loss_sum)

    with torch.no_grad():
        unweighted = float(rm(batch, lm=True).lm_loss_sum)
    assert loss(0.0) == pytest.approx(unweighted, rel=1e-6)
    ce_k = loss(1.0) - loss(0.0)
    assert ce_k > 0.01
    assert loss(4.0) - loss(0.0) == pytest.approx(4 * ce_k, rel=1e-4)


def test_focus_changes_training_and_a_pattern_matching_nothing_is_an_error(
    tiny_models, pref_data, tmp_path
):
    common = ("rm.type=critique", "train.max_steps=2", "rm.head_dropout=0")
    model = tiny_models["llava"]
    base = run_reward(rm_config(model, pref_data, tmp_path / "a", *common))
    focus = run_reward(
        rm_config(
            model,
            pref_data,
            tmp_path / "b",
            *common,
            "rm.critique_focus=is (wrong|correct)",
            "rm.critique_focus_weight=8",
        )
    )
    assert focus["losses"][0] > base["losses"][0] + 1e-4  # the verdict tokens now weigh 8
    cfg = rm_config(model, pref_data, tmp_path / "c", *common, "rm.critique_focus=no such words")
    with pytest.raises(ValueError, match="matches none of the .* training critiques"):
        run_reward(cfg)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("rm.critique_focus=is (wrong",), "not a regular expression"),
        (("rm.type=scalar", "rm.critique_focus=wrong"), "needs rm.type=critique"),
        (("rm.critique_focus_weight=-1",), "critique_focus_weight must be >= 0"),
    ],
)
def test_bad_focus_settings_are_clear_errors(tiny_models, pref_data, tmp_path, overrides, message):
    with pytest.raises((ConfigError, ValueError), match=message):
        rm_config(tiny_models["llava"], pref_data, tmp_path, "rm.type=critique", *overrides)
