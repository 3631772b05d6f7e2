"""Helpers of the reward tests: a tiny preference set over circle images."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image, ImageDraw

from mmrlhf.config import load_config
from mmrlhf.data.record import Facts, ImageRef, Ranking, Record, Response
from mmrlhf.training.reward import RewardConfig

COLORS = {"red": (220, 30, 30), "blue": (40, 60, 220), "green": (30, 180, 40)}


def make_preference_set(
    root: Path, n: int = 24, name: str = "prefs.jsonl", full_facts: bool = True
) -> Path:
    """``n`` records: a circle image, "What color is the circle?", three responses (one per
    colour, in a rotating order), the right colour ranked first and the two wrong ones tied;
    facts (caption, short answer, objects; only the short answer without ``full_facts``) and a
    critique per response."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = list(COLORS)
    with open(root / name, "w") as f:
        for i in range(n):
            color = names[i % 3]
            img = root / "images" / f"{i}.png"
            if not img.exists():
                im = Image.new("RGB", (72, 72), (90, 90, 90))
                ImageDraw.Draw(im).ellipse((16, 16, 56, 56), fill=COLORS[color])
                im.save(img)
            order = [names[(i // 3 + j) % 3] for j in range(3)]
            responses = [
                Response(
                    text=f"The circle is {c}.",
                    critique="The response is correct."
                    if c == color
                    else f"The response is wrong: the circle is {color}.",
                )
                for c in order
            ]
            best = order.index(color)
            rest = [j for j in range(3) if j != best]
            rec = Record.single(
                f"q{i}",
                "What color is the circle?",
                responses,
                images=[ImageRef(path=f"images/{i}.png")],
                ranking=Ranking(groups=[[best], rest]),
                facts=Facts(
                    captions=[f"A {color} circle on a grey background."] if full_facts else [],
                    short_answer=color,
                    objects=[f"{color} circle"] if full_facts else [],
                ),
                category="color",
            )
            f.write(json.dumps(rec.to_dict()) + "\n")
    return root / name


def rm_config(model: Path | str, data: Path | str, out: Path | str, *extra: str) -> RewardConfig:
    """The tests' reward config: the tiny model on CPU, 8 queries a step, lr 3e-3, no
    TensorBoard or progress bar, a log line per step; ``extra`` dotted overrides come last."""
    return load_config(
        RewardConfig,
        None,
        [
            f"model.path={model}",
            "model.device=cpu",
            f"data.train={data}",
            f"train.output_dir={out}",
            "train.batch_size=8",
            "train.lr=3e-3",
            "train.warmup_ratio=0.1",
            "train.tensorboard=false",
            "train.progress=false",
            "train.log_every=1",
            *extra,
        ],
    )
