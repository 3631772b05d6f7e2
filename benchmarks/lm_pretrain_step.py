"""The LM pretraining step: one right-padded forward with full logits vs length buckets with
answer-only logits (``mmrlhf.world.language.answer_loss_backward``), on the same batches.

Both compute the same loss and gradient (tested in tests/world/test_world_language.py); this
measures what the buckets save. Batches are the pretraining's own: fresh scenes, two questions
each from the SFT family mix, perfect slots. Forward + backward only (no optimizer step, which
costs the same in both). Prints one JSON line.

Usage::

    python benchmarks/lm_pretrain_step.py --model TINY_LLAVA [--steps 100] [--threads 1]

``TINY_LLAVA`` is a tiny LLaVA built on a world (``mmrlhf model build-tiny --world W``).
"""

from __future__ import annotations

import argparse
import json
import random
import time

import torch
import torch.nn.functional as F


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from mmrlhf.models.inputs import render
    from mmrlhf.models.load import ModelConfig, load_vlm
    from mmrlhf.world.config import WorldConfig
    from mmrlhf.world.generate import make_record
    from mmrlhf.world.language import SlotEmbedder, answer_loss_backward
    from mmrlhf.world.questions import ask
    from mmrlhf.world.scene import sample_scene

    model, processor = load_vlm(ModelConfig(path=args.model, device="cpu"), for_training=False)
    for p in model.parameters():
        p.requires_grad_(True)
    model.train()
    tok, image_id = processor.tokenizer, model.config.image_token_id
    world = WorldConfig()
    slots = SlotEmbedder(model.get_input_embeddings(), tok, world, position_words=True)
    rng = random.Random(0)
    weights = dict(world.sft_family_weights)
    batches = []
    for step in range(args.steps):
        items = []
        while len(items) < args.batch:
            scene = sample_scene(rng, world, f"b{step}-{len(items)}", "train")
            for k, qa in enumerate(ask(scene, world, rng, 2, weights)):
                prompt, completion = render(
                    processor, make_record(qa, scene, "train", k), qa.answer
                )
                prompt = prompt.replace(processor.image_token, processor.image_token * 9)
                items.append(
                    (
                        scene,
                        tok(prompt, add_special_tokens=False)["input_ids"],
                        tok(completion, add_special_tokens=False)["input_ids"],
                    )
                )
        batches.append(items[: args.batch])

    def padded(items: list) -> None:
        width = max(len(p) + len(c) for _, p, c in items)
        seqs = torch.full((len(items), width), tok.pad_token_id)
        mask, labels = torch.zeros_like(seqs), torch.full_like(seqs, -100)
        for i, (_, p, c) in enumerate(items):
            seqs[i, : len(p) + len(c)] = torch.tensor(p + c)
            mask[i, : len(p) + len(c)] = 1
            labels[i, len(p) : len(p) + len(c)] = torch.tensor(c)
        x = model.get_input_embeddings()(seqs)
        x = x.masked_scatter((seqs == image_id)[..., None], slots.batch([s for s, _, _ in items]))
        logits = model(inputs_embeds=x, attention_mask=mask).logits[:, :-1]
        F.cross_entropy(logits.flatten(0, 1), labels[:, 1:].flatten()).backward()

    def bucketed(items: list) -> None:
        answer_loss_backward(model, slots, items, tok.pad_token_id, image_id, per="token")

    seconds = {"padded": 0.0, "buckets": 0.0}
    for items in batches:  # alternate, so that machine load hits both alike
        for name, fn in (("padded", padded), ("buckets", bucketed)):
            t = time.perf_counter()
            fn(items)
            seconds[name] += time.perf_counter() - t
            model.zero_grad(set_to_none=True)
    lengths = [len(p) + len(c) for b in batches for _, p, c in b]
    widths = [max(len(p) + len(c) for _, p, c in b) for b in batches]
    print(
        json.dumps(
            {
                "steps": args.steps,
                "batch": args.batch,
                "threads": args.threads,
                "mean_length": round(sum(lengths) / len(lengths), 1),
                "mean_padded_width": round(sum(widths) / len(widths), 1),
                "padded_steps_per_s": round(args.steps / seconds["padded"], 1),
                "buckets_steps_per_s": round(args.steps / seconds["buckets"], 1),
                "speedup": round(seconds["padded"] / seconds["buckets"], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
