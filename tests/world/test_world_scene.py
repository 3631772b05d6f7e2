"""Scenes: sampling, rendering (sizes, visible objects, legible glyphs), descriptions."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from mmrlhf.world import Glyph, Scene, SceneObject, WorldConfig, render_scene, sample_scene
from mmrlhf.world.scene import position_phrase

CFG = WorldConfig()


def _scene() -> Scene:
    return Scene(
        id="x",
        background="desert",
        objects=[
            SceneObject("circle", "red", "large", 0, 0, 12, 12),
            SceneObject("square", "blue", "small", 1, 1, 36, 36),
        ],
        glyph=Glyph(7, 2, 2),
        seed=1,
    )


def test_caption_facts_labels_follow_templates() -> None:
    s = _scene()
    assert s.caption() == (
        "The scene is a desert. There is a large red circle at the top left. "
        "There is a small blue square in the center. The digit 7 is written at the bottom right."
    )
    assert s.facts() == [
        "The scene is a desert.",
        "There is a large red circle at the top left.",
        "There is a small blue square in the center.",
        "The digit 7 is written at the bottom right.",
        "There are 2 objects.",
    ]
    assert s.object_labels() == ["large red circle", "small blue square", "digit 7"]
    assert position_phrase(1, 0) == "on the left"


def test_scene_json_round_trip() -> None:
    s = sample_scene(random.Random(3), CFG, "s1", "train")
    d = json.loads(json.dumps(s.to_dict()))
    assert Scene.from_dict(d) == s


def test_sampling_is_deterministic_and_valid() -> None:
    for i in range(200):
        a = sample_scene(random.Random(i), CFG, "s")
        assert a == sample_scene(random.Random(i), CFG, "s")
        assert CFG.min_objects <= len(a.objects) <= CFG.max_objects
        cells = [(o.row, o.col) for o in a.objects] + (
            [(a.glyph.row, a.glyph.col)] if a.glyph else []
        )
        assert len(cells) == len(set(cells)), "objects and glyph need distinct cells"
        assert [(o.row, o.col) for o in a.objects] == sorted((o.row, o.col) for o in a.objects)
        for o in a.objects:  # jitter never pushes an object out of its cell
            half = CFG.size_px(o.size) / 2
            assert o.col * CFG.cell <= o.x - half and o.x + half <= (o.col + 1) * CFG.cell
            assert o.row * CFG.cell <= o.y - half and o.y + half <= (o.row + 1) * CFG.cell


def test_default_geometry() -> None:
    assert (CFG.image_size, CFG.grid, CFG.cell) == (72, 3, 24)
    assert (CFG.size_px("small"), CFG.size_px("large")) == (10, 20)


@pytest.mark.parametrize("size", [72, 96])
def test_rendered_objects_are_visible(size: int) -> None:
    cfg = WorldConfig(image_size=size)
    for i in range(100):
        s = sample_scene(random.Random(i), cfg, "s")
        img = render_scene(s, cfg)
        assert img.size == (size, size) and img.mode == "RGB"
        px = np.asarray(img)
        for o in s.objects:  # every shape covers its own centre
            assert tuple(px[o.y, o.x]) == cfg.colors[o.color], (i, o)


def test_render_is_deterministic() -> None:
    s = sample_scene(random.Random(5), CFG, "s")
    assert render_scene(s, CFG).tobytes() == render_scene(s, CFG).tobytes()


def test_glyph_is_drawn_and_digits_differ() -> None:
    """The digit leaves dark ink in its cell, and the ten digits render differently."""
    inks = []
    for d in range(10):
        s = Scene("g", "snowfield", [], Glyph(d, 1, 1), seed=0)
        cell = np.asarray(render_scene(s, CFG))[24:48, 24:48].astype(int)
        dark = cell.sum(axis=2) < 150
        assert dark.sum() > 10, f"digit {d} is barely drawn"
        inks.append(dark)
    for a in range(10):
        for b in range(a + 1, 10):
            assert (inks[a] != inks[b]).sum() > 10, (a, b)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="grid"):
        WorldConfig(grid=5)
    with pytest.raises(ValueError, match="too close"):
        WorldConfig(colors={"red": (220, 30, 30), "drab": (150, 120, 90)})
    with pytest.raises(ValueError, match="shapes"):
        WorldConfig(shapes=("circle", "hexagon"))
    assert WorldConfig.from_dict(json.loads(json.dumps(CFG.to_dict()))) == CFG
