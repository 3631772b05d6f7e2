"""Shared-prefix log-probs equal separate full forwards (values and gradients, fp32, 1e-5) for
every supported architecture, with queries of different K and different prompt lengths."""

from __future__ import annotations

import pytest
import torch

from mmrlhf.data.io import load_records
from mmrlhf.data.record import Response
from mmrlhf.models.inputs import collate, encode
from mmrlhf.models.load import ModelConfig, load_vlm
from mmrlhf.models.logprobs import (
    BUCKET_OVERHEAD_TOKENS,
    build_groups,
    length_buckets,
    response_logps,
    separate_logps,
    shared_prefix_logps,
)

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


@pytest.mark.parametrize("overhead", [BUCKET_OVERHEAD_TOKENS, 0])
@pytest.mark.parametrize("arch", ["llava", "llava_onevision", "qwen2_vl"])
def test_shared_prefix_equals_separate(arch, overhead, tiny_models, circle_data):
    """``overhead=0`` splits the continuation into one bucket per response length (three
    buckets here), so the per-bucket cache copies are checked too."""
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

    shr = shared_prefix_logps(model, groups, pad, bucket_overhead=overhead)
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


def test_length_buckets_minimise_padding_plus_overhead():
    """Lengths [5, 6, 40, 5, 42]; sorted rows 0, 3 (5), 1 (6), 2 (40), 4 (42).
    Overhead 10: one bucket costs 5 * 42 + 10 = 220; {5, 5, 6} + {40, 42} costs
    3 * 6 + 10 + 2 * 42 + 10 = 122; splitting further adds 10 and saves at most 2 (5 vs 6 rows:
    2 * 1) or 2 (40 vs 42: 1 * 2), so two buckets are optimal.
    Overhead 1000: one bucket. Overhead 0: one bucket per distinct length."""
    lengths = [5, 6, 40, 5, 42]
    assert length_buckets(lengths, 10) == [[0, 3, 1], [2, 4]]
    assert length_buckets(lengths, 1000) == [[0, 3, 1, 2, 4]]
    assert length_buckets(lengths, 0) == [[0, 3], [1], [2], [4]]
    assert length_buckets([7], 10) == [[0]]


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_build_groups_equals_encoding_each_response(arch, tiny_models, circle_data):
    """The processor runs once per record in build_groups; the examples must still equal
    encoding each (record, response) on its own."""
    _, proc = load_vlm(ModelConfig(path=str(tiny_models[arch])), for_training=False)
    recs = _records(circle_data)
    _, fulls = build_groups(recs[:2], [[0, 2], [1]], proc, media_root=circle_data.parent)
    pairs = [(0, 0), (0, 2), (1, 1)]
    alone = [encode(recs[q], i, proc, media_root=circle_data.parent) for q, i in pairs]
    for a, b in zip(fulls, alone, strict=True):
        assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.labels, b.labels)
        assert a.prompt_length == b.prompt_length
        assert a.vision.keys() == b.vision.keys()
        for k in a.vision:
            assert torch.equal(a.vision[k], b.vision[k])
        assert a.extra_token_tensors.keys() == b.extra_token_tensors.keys()
        for k in a.extra_token_tensors:
            assert torch.equal(a.extra_token_tensors[k], b.extra_token_tensors[k])
