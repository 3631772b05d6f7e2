"""Our DPO equals TRL's: loss and every parameter's gradient, on the same tiny LLaVA and pairs.

With ``w = 0`` and one pair per query, :func:`mmrlhf.losses.dpo.mmdpo_loss` over log-probs from
:func:`mmrlhf.models.logprobs.response_logps` (shared-prefix path: one prompt forward per query,
the KV cache repeated for its two responses) must be TRL's ``DPOTrainer`` sigmoid loss (two full
forwards per pair through its fused LM head, reference model rebuilt from the policy's path).

Both sides must see the same token sequences, and that is asserted, not assumed. One documented
difference had to be removed first: the tiny models' Vicuna-style template ends an assistant
turn with ``</s>\\n``. TRL takes the completion as ``render(prompt + answer)[len(prompt):]``, so
its completion ends ``</s>`` + ``\\n`` and it trains the newline token; our ``render`` strips the
trailing newline (nothing follows it, it is a turn separator, not something to learn). The test
therefore gives both sides one processor whose template ends the assistant turn at ``</s>``;
with that, TRL's collated rows (attention-masked) equal our full (prompt + response) encodings
token for token and its completion mask equals our labels.

The policy is the saved model plus seeded Gaussian noise on every weight (so the loss is not
exactly log 2 and the gradients are informative); the reference is the unperturbed checkpoint
(ours: loaded from the path and frozen; TRL: it loads it itself from ``config._name_or_path``).
Everything is fp32, eval mode (the tiny configs have no dropout; TRL also disables it), no
truncation (``max_length=None``, needed for VLMs), and TRL's collator is called on the dataset in
order (no sampler, so no shuffling).
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

pytest.importorskip("trl")
pytest.importorskip("datasets")

from mmrlhf.data.record import Record, Response  # noqa: E402
from mmrlhf.losses.dpo import mmdpo_loss  # noqa: E402
from mmrlhf.models.inputs import IGNORE_INDEX, load_media, to_messages  # noqa: E402
from mmrlhf.models.load import load_processor  # noqa: E402
from mmrlhf.models.logprobs import build_groups, response_logps  # noqa: E402

BETA = 0.1
# one rejected answer per query, of different lengths (padding on both sides is exercised)
WRONG = [
    "I do not know.",
    "The circle is purple.",
    "There is a large red circle at the top left.",
    "The circle is green.",
]


def _records(circle_data: Path, n: int = 4) -> list[Record]:
    recs = []
    for i, line in enumerate(circle_data.read_text().splitlines()[:n]):
        r = Record.from_dict(json.loads(line))
        r.images[0].path = str(circle_data.parent / r.images[0].path)
        r.responses = [r.responses[0], Response(text=WRONG[i % len(WRONG)])]
        recs.append(r)
    return recs


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": [{"type": "text", "text": text}]}]


def test_loss_and_gradients_equal_trl_dpo_trainer(tiny_models, circle_data, tmp_path):
    from datasets import Dataset
    from transformers import AutoModelForImageTextToText
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer

    path = tiny_models["llava"]
    processor = load_processor(path)
    # the one template change (module doc): the assistant turn ends at </s>, no newline after it
    assert "</s>{{ '\\n' }}" in processor.chat_template
    processor.chat_template = processor.chat_template.replace("</s>{{ '\\n' }}", "</s>")
    records = _records(circle_data)
    n = len(records)

    # policy: the checkpoint plus seeded noise; TRL gets an identical copy of it
    policy = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.02)
    policy.eval()
    trl_policy = copy.deepcopy(policy)
    reference = AutoModelForImageTextToText.from_pretrained(str(path), dtype=torch.float32)
    reference.eval().requires_grad_(False)

    # ours: shared-prefix log-probs, responses [chosen, rejected] per query, mmdpo_loss with w = 0
    responses = [[0, 1]] * n
    pol, shared = response_logps(policy, processor, records, responses)
    assert shared
    with torch.no_grad():
        ref, _ = response_logps(reference, processor, records, responses)
    chosen = torch.arange(0, 2 * n, 2)
    loss, metrics = mmdpo_loss(pol.logps, ref.logps, chosen, chosen + 1, beta=BETA, w=0.0)
    loss.backward()
    assert abs(loss.item() - math.log(2)) > 1e-3  # the perturbation makes the test informative

    # TRL: a conversational vision preference dataset, the trainer's own collator and loss
    rows = [
        {
            "images": load_media(r)[0],
            "prompt": to_messages(r),
            "chosen": _assistant(r.responses[0].text),
            "rejected": _assistant(r.responses[1].text),
        }
        for r in records
    ]
    dataset = Dataset.from_list(rows)
    args = TRLConfig(
        output_dir=str(tmp_path / "trl"),
        max_length=None,
        per_device_train_batch_size=n,
        beta=BETA,
        loss_type=["sigmoid"],
        activation_checkpointing=False,
        bf16=False,
        use_cpu=True,
        report_to=[],
        disable_dropout=True,
        dataloader_num_workers=0,
    )
    trainer = DPOTrainer(
        model=trl_policy, args=args, train_dataset=dataset, processing_class=processor
    )
    assert trainer.ref_model is not None  # a frozen copy loaded from the policy's path
    batch = trainer.data_collator([dataset[i] for i in range(n)])  # in order: no shuffling

    # identical token sequences: TRL's rows are [chosen x n, rejected x n]; ours per query
    _, fulls = build_groups(records, responses, processor)
    for j, ex in enumerate(fulls):
        row = j // 2 + (n if j % 2 else 0)
        keep = batch["attention_mask"][row].bool()
        assert torch.equal(batch["input_ids"][row][keep], ex.input_ids)
        assert torch.equal(batch["completion_mask"][row][keep].bool(), ex.labels != IGNORE_INDEX)
    torch.testing.assert_close(
        batch["pixel_values"][:n], torch.cat([ex.vision["pixel_values"] for ex in fulls[::2]])
    )

    trainer.model.eval()
    trl_loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
    trl_loss.backward()

    torch.testing.assert_close(trl_loss.detach(), loss.detach(), atol=1e-5, rtol=0)
    logged = trainer._metrics["eval"]  # the model is in eval mode
    assert logged["logps/chosen"][-1] == pytest.approx(metrics["logps/chosen"], abs=1e-4)
    assert logged["logps/rejected"][-1] == pytest.approx(metrics["logps/rejected"], abs=1e-4)
    assert logged["rewards/margins"][-1] == pytest.approx(metrics["rewards/margins"], abs=1e-5)

    theirs = dict(trainer.model.named_parameters())
    compared = 0
    for name, p in policy.named_parameters():
        q = theirs[name]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is None:  # e.g. the CLIP tower's post-layernorm: its output is not used
            continue
        torch.testing.assert_close(
            p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}"
        )
        compared += 1
    assert compared > 50
    assert max(p.grad.abs().max().item() for p in policy.parameters() if p.grad is not None) > 1e-3
