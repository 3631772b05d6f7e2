"""Shared-prefix log-probs equal separate full forwards (values and gradients, fp32, 1e-5) for
every supported architecture, with queries of different K and different prompt lengths."""

from __future__ import annotations

import pytest
import torch

from mmrlhf.data.io import load_records
from mmrlhf.data.record import Response
from mmrlhf.models.inputs import collate
from mmrlhf.models.load import ModelConfig, load_vlm
from mmrlhf.models.logprobs import build_groups, response_logps, separate_logps, shared_prefix_logps

ANSWERS = ["The circle is red.", "The circle is blue and it is large.", "Green."]


def _records(circle_data):
    recs, _ = load_records(circle_data)
    recs = recs[:3]
    for j, r in enumerate(recs):
        r.responses = [Response(text=t) for t in ANSWERS]
        # prompts of different lengths exercise the left padding and the position ids
        r.conversation[0].text = r.conversation[0].text + " Answer briefly." * j
    return recs


def _grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("arch", ["llava", "llava_onevision", "qwen2_vl"])
def test_shared_prefix_equals_separate(arch, tiny_models, circle_data):
    model, proc = load_vlm(ModelConfig(path=str(tiny_models[arch])), for_training=True)
    model.eval()  # no dropout: both paths must see the same function
    recs = _records(circle_data)
    wanted = [[0, 1, 2], [1, 2], [0]]  # K = 3, 2, 1
    groups, fulls = build_groups(recs, wanted, proc, media_root=circle_data.parent)
    pad = proc.tokenizer.pad_token_id

    sep = separate_logps(model, collate(fulls, pad))
    # a loss that weighs responses differently, so every response's gradient matters
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 0.25])
    (sep.logps * weights).sum().backward()
    g_sep = _grads(model)
    model.zero_grad()

    shr = shared_prefix_logps(model, groups, pad)
    (shr.logps * weights).sum().backward()
    g_shr = _grads(model)

    assert shr.logps.shape == (6,)
    torch.testing.assert_close(shr.logps, sep.logps, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shr.n_tokens, sep.n_tokens)
    assert g_sep.keys() == g_shr.keys() and len(g_sep) > 0
    for name in g_sep:
        torch.testing.assert_close(g_shr[name], g_sep[name], atol=1e-5, rtol=1e-4, msg=name)


def test_response_logps_reports_the_path(tiny_models, circle_data):
    model, proc = load_vlm(ModelConfig(path=str(tiny_models["llava"])), for_training=False)
    recs = _records(circle_data)
    with torch.no_grad():
        a, used_a = response_logps(model, proc, recs, [[0, 1]] * 3, media_root=circle_data.parent)
        b, used_b = response_logps(
            model, proc, recs, [[0, 1]] * 3, media_root=circle_data.parent, shared=False
        )
    assert used_a and not used_b
    torch.testing.assert_close(a.logps, b.logps, atol=1e-5, rtol=1e-5)
    # mean token NLL is the negated sum over the token count
    torch.testing.assert_close(a.nll, -a.logps / a.n_tokens)
