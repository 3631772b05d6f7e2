"""Shared fixtures: tiny real-architecture VLMs and a small image dataset, built by code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from mmrlhf.data.record import ImageRef, Record
from mmrlhf.models.tiny import TinyVLMConfig, build_tiny_vlm

SHARED_BENCHMARKS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "benchmarks"

COLORS = {"red": (220, 30, 30), "blue": (40, 60, 220), "green": (30, 180, 40)}
TEXTS = [
    "What color is the circle?",
    "The circle is red.",
    "The circle is blue.",
    "The circle is green.",
    "Describe the image in detail.",
    "There is a large red circle at the top left.",
] * 30


def make_dataset(root: Path, n: int = 12) -> Path:
    """n records, each a coloured circle image and a question about its colour."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    names = list(COLORS)
    with open(root / "train.jsonl", "w") as f:
        for i in range(n):
            color = names[i % len(names)]
            im = Image.new("RGB", (72, 72), (90, 90, 90))
            ImageDraw.Draw(im).ellipse((16, 16, 56, 56), fill=COLORS[color])
            im.save(root / "images" / f"{i}.png")
            rec = Record.single(
                f"r{i}",
                "What color is the circle?",
                [f"The circle is {color}."],
                images=[ImageRef(path=f"images/{i}.png")],
            )
            f.write(json.dumps(rec.to_dict()) + "\n")
    return root / "train.jsonl"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny saved checkpoint per supported architecture."""
    out = {}
    for arch in ("llava", "llava_onevision", "qwen2_vl"):
        d = tmp_path_factory.mktemp(f"tiny-{arch}")
        build_tiny_vlm(
            d,
            TEXTS,
            TinyVLMConfig(
                arch=arch, text_hidden=64, text_layers=2, vision_hidden=32, vocab_size=400
            ),
        )
        out[arch] = d
    return out


@pytest.fixture(scope="session")
def circle_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("circles"))
