"""Generation: files, determinism, splits, noise rate, loading back, speed."""

from __future__ import annotations

import hashlib
import json
import random
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmrlhf.data.record import Record
from mmrlhf.world import World, WorldConfig, generate, load_world, sample_scene
from mmrlhf.world.corpus import corrupt_description, training_description


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_files_written(small_world: World) -> None:
    root = small_world.root
    for name in ("scenes.jsonl", "sft_train.jsonl", "eval_test.jsonl", "world.json"):
        assert (root / name).is_file()
    info = json.loads((root / "world.json").read_text())
    assert info["seed"] == 7 and info["n"] == 120
    assert info["counts"]["scenes"] == {"train": 108, "test": 12}
    assert len(list((root / "images" / "train").glob("*.png"))) == 108
    assert len(list((root / "images" / "test").glob("*.png"))) == 12
    # every line is a valid Record whose image exists under the world dir (the media root)
    for name in ("sft_train.jsonl", "eval_test.jsonl"):
        for line in (root / name).read_text().splitlines():
            r = Record.from_dict(json.loads(line))
            assert r.k == 1 and len(r.images) == 1
            assert (root / r.images[0].path).is_file()
            assert r.facts.captions and r.facts.objects


def test_same_seed_byte_identical_and_other_seed_differs(tmp_path: Path) -> None:
    generate(tmp_path / "a", n=30, seed=1)
    generate(tmp_path / "b", n=30, seed=1)
    generate(tmp_path / "c", n=30, seed=2)
    a, b, c = (_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert a["scenes.jsonl"] != c["scenes.jsonl"]
    assert a["sft_train.jsonl"] != c["sft_train.jsonl"]


def test_regenerating_replaces_stale_images(tmp_path: Path) -> None:
    generate(tmp_path, n=30, seed=1)
    generate(tmp_path, n=10, seed=1)
    pngs = list((tmp_path / "images").rglob("*.png"))
    assert len(pngs) == 10


def test_noise_options_do_not_change_scenes(tmp_path: Path) -> None:
    generate(tmp_path / "a", n=20, seed=4)
    generate(tmp_path / "b", n=20, seed=4, config=WorldConfig(hallucination_rate=0.9))
    assert (tmp_path / "a/scenes.jsonl").read_bytes() == (tmp_path / "b/scenes.jsonl").read_bytes()


def test_splits_are_disjoint_by_scene(small_world: World) -> None:
    train = {r.meta["scene_id"] for r in small_world.sft}
    test = {r.meta["scene_id"] for r in small_world.eval}
    assert train and test and not train & test
    assert all(small_world.scenes[s].split == "train" for s in train)
    assert all(small_world.scenes[s].split == "test" for s in test)
    assert all(
        r.meta["split"] == "train" and "/train/" in r.images[0].path for r in small_world.sft
    )
    assert all(not r.meta["noisy"] for r in small_world.eval)


def test_load_world_round_trip(small_world: World) -> None:
    w = load_world(small_world.root)
    assert w.config == small_world.config and w.seed == 7
    assert w.scenes == small_world.scenes
    assert [r.to_dict() for r in w.sft] == [r.to_dict() for r in small_world.sft]
    assert [r.to_dict() for r in w.eval] == [r.to_dict() for r in small_world.eval]
    r = w.eval[0]
    assert w.image_path(r) == w.root / r.images[0].path
    assert w.scene(r).id == r.meta["scene_id"]
    with pytest.raises(FileNotFoundError):
        load_world(small_world.root / "images")


def test_images_match_scene_ground_truth(small_world: World) -> None:
    cfg = small_world.config
    for scene in list(small_world.scenes.values())[:40]:
        px = np.asarray(Image.open(small_world.image_path(scene)))
        assert px.shape == (cfg.image_size, cfg.image_size, 3)
        for o in scene.objects:
            assert tuple(px[o.y, o.x]) == cfg.colors[o.color]


def test_image_size_option(tmp_path: Path) -> None:
    w = generate(tmp_path, n=5, seed=0, config=WorldConfig(image_size=96))
    for s in w.scenes.values():
        assert Image.open(w.image_path(s)).size == (96, 96)


def test_hallucination_rate_close_to_configured() -> None:
    cfg = WorldConfig(env_companions={})
    rng = random.Random(0)
    n = noisy = 0
    for i in range(2000):
        scene = sample_scene(random.Random(i), cfg, "s")
        d = training_description(scene, cfg, rng)
        n += 1
        noisy += d.noisy
        assert d.noisy == (d.text != scene.caption())
    assert abs(noisy / n - cfg.hallucination_rate) < 0.03


def test_companion_is_a_habit_of_its_environments() -> None:
    """The companion comes at companion_rate exactly where the environment has one and the scene
    lacks it: last sentence, small, in the last free cell; never where the scene has the pair."""
    cfg = WorldConfig(hallucination_rate=0.0)
    rng = random.Random(1)
    added = eligible = 0
    for i in range(2000):
        scene = sample_scene(random.Random(i), cfg, "s")
        d = training_description(scene, cfg, rng)
        pair = cfg.env_companions.get(scene.background)
        color, shape = pair.split() if pair else ("", "")
        if pair is None or scene.has(shape=shape, color=color):
            assert not d.noisy and d.text == scene.caption()
            continue
        eligible += 1
        if d.noisy:
            added += 1
            free = [(r, c) for r in range(3) for c in range(3) if (r, c) not in scene.occupied()]
            assert d.kind == "companion" and d.hallucinated == [f"small {pair}"]
            assert d.cells == [free[-1]]
            assert d.text.startswith(scene.caption() + " There is a small " + pair + " ")
    assert eligible > 600 and abs(added / eligible - cfg.companion_rate) < 0.04


def test_companion_stacks_on_iid_noise_without_sharing_a_cell() -> None:
    cfg = WorldConfig(hallucination_rate=1.0, companion_rate=1.0, noise_weights={"extra_object": 1})
    both = 0
    for i in range(300):
        scene = sample_scene(random.Random(i), cfg, "s")
        d = training_description(scene, cfg, random.Random(i))
        if d.kind == "extra_object+companion":
            both += 1
            assert len(d.hallucinated) == 2 and len(set(d.cells)) == 2
            assert not set(d.cells) & scene.occupied()
    assert both > 50


def test_noise_kinds_and_plausibility() -> None:
    """Extra objects come from the environment's co-occurrence prior: favoured shapes/colours
    are over-represented among fabricated objects."""
    cfg = WorldConfig()
    kinds: dict[str, int] = {}
    fav = total = 0
    for i in range(600):
        scene = sample_scene(random.Random(i), cfg, "s")
        d = corrupt_description(scene, cfg, random.Random(i))
        kinds[d.kind] = kinds.get(d.kind, 0) + 1
        assert len(d.hallucinated) == 1
        if d.kind == "extra_object":
            size, color, shape = d.hallucinated[0].split()
            total += 1
            fav += shape in cfg.env_shapes[scene.background]
    assert set(kinds) == {"extra_object", "wrong_color", "wrong_shape"}
    assert 0.5 < kinds["extra_object"] / 600 < 0.7
    assert fav / total > 0.5  # uniform would give 2/5


def test_corpus_rate_in_generated_world(small_world: World) -> None:
    c = small_world.info["counts"]
    assert c["sft_descriptions"] > 20
    assert 0.3 < c["sft_noisy_descriptions"] / c["sft_descriptions"] < 0.8
    for r in small_world.sft:
        assert r.meta["noisy"] == bool(r.meta.get("hallucinated"))
        if r.meta["noisy"]:
            assert r.category == "holistic" and r.responses[0].text != r.facts.captions[0]


def test_zero_rate_gives_clean_corpus(tmp_path: Path) -> None:
    cfg = WorldConfig(hallucination_rate=0.0, companion_rate=0.0)
    w = generate(tmp_path, n=40, seed=0, config=cfg)
    assert not any(r.meta["noisy"] for r in w.sft)


def test_world_without_companion_field_loads_without_companions(tmp_path: Path) -> None:
    """A world.json written before ``env_companions`` existed had none; loading must not
    claim the new default for it."""
    w = generate(tmp_path, n=12, seed=0)
    info = json.loads((tmp_path / "world.json").read_text())
    assert w.config.env_companions and info["config"]["env_companions"]
    del info["config"]["env_companions"]
    (tmp_path / "world.json").write_text(json.dumps(info))
    assert load_world(tmp_path, records=False).config.env_companions == {}


@pytest.mark.slow
def test_2000_scenes_generate_fast(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    w = generate(tmp_path, n=2000, seed=0)
    assert time.perf_counter() - t0 < 30
    assert len(w.sft) > 6000


def test_files_load_with_the_shared_loader(small_world: World) -> None:
    """Worlds are ordinary datasets: data.io reads them, images resolve, the SFT rules pass."""
    from mmrlhf.data.io import load_records

    for name, n in (("sft_train.jsonl", len(small_world.sft)), ("eval_test.jsonl", None)):
        records, report = load_records(small_world.root / name, task="sft")
        assert report.records_bad == 0 and not report.problems
        assert n is None or len(records) == n
