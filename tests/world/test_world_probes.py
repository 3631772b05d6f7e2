"""POPE probes and the safety slice: balanced, true to the scene, POPE's sampling rules,
deterministic, well-formed, and old worlds without them still load."""

from __future__ import annotations

import json
import random
import re
import statistics
from collections import Counter, defaultdict
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mmrlhf.cli.main import app
from mmrlhf.data.record import Record
from mmrlhf.world import (
    Glyph,
    Scene,
    SceneObject,
    World,
    WorldConfig,
    check_short_answer,
    generate,
    is_refusal,
    load_world,
    sample_scene,
)
from mmrlhf.world.probes import (
    BENIGN_TEMPLATES,
    HARMFUL_TEMPLATES,
    POPE_SPLITS,
    REFUSAL,
    adversarial_ranking,
    cooccurrence_score,
    pair_statistics,
    pope_probes,
    pope_records,
    popular_ranking,
    present_pairs,
    safety_qas,
    sft_safety_records,
)
from mmrlhf.world.scene import position_name

CFG = WorldConfig()


def _pair(r: Record) -> tuple[str, str]:
    color, shape = r.meta["probe"].split()
    return shape, color


def _by_scene_split(records: list[Record]) -> dict[tuple[str, str], list[Record]]:
    out: dict[tuple[str, str], list[Record]] = defaultdict(list)
    for r in records:
        out[r.meta["scene_id"], r.meta["pope_split"]].append(r)
    return out


# ----------------------------------------------------------------------------------------------
# POPE


def test_pope_is_balanced_per_split_and_per_scene(small_world: World) -> None:
    pope = small_world.pope
    assert pope and {r.meta["pope_split"] for r in pope} == set(POPE_SPLITS)
    for split in POPE_SPLITS:
        labels = Counter(r.meta["label"] for r in pope if r.meta["pope_split"] == split)
        assert labels["yes"] == labels["no"] > 0
    for rs in _by_scene_split(pope).values():
        labels = [r.meta["label"] for r in rs]
        assert labels.count("yes") == labels.count("no") <= CFG.pope_per_scene
        assert labels[:2] == ["yes", "no"]  # alternating, so prefixes stay balanced


def test_pope_records_are_true_to_the_scene(small_world: World) -> None:
    for r in small_world.pope:
        scene = small_world.scene(r)
        shape, color = _pair(r)
        assert scene.split == "test" and r.meta["split"] == "test" and "/test/" in r.images[0].path
        assert r.category == "pope" and r.meta["family"] == "pope"
        assert scene.has(shape=shape, color=color) == (r.meta["label"] == "yes")
        assert r.facts.short_answer == r.meta["label"]
        assert r.meta["pope"] == ("positive" if r.meta["label"] == "yes" else r.meta["pope_split"])
        assert re.fullmatch(rf"Is there an? {color} {shape} in the image\?", r.query)
        want = "Yes, there is" if r.meta["label"] == "yes" else "No, there is no"
        assert r.responses[0].text.startswith(want)
        assert check_short_answer(r, r.responses[0].text)


def test_positives_are_shared_by_the_splits(small_world: World) -> None:
    groups = _by_scene_split(small_world.pope)
    for scene_id in {sid for sid, _ in groups}:
        pos = [
            sorted(r.meta["probe"] for r in groups[scene_id, s] if r.meta["label"] == "yes")
            for s in POPE_SPLITS
        ]
        assert pos[0] == pos[1] == pos[2]


def test_popular_negatives_are_the_most_frequent_absent_train_pairs(small_world: World) -> None:
    stats = pair_statistics(small_world.split("train"), CFG)
    ranking = popular_ranking(stats, CFG)
    freqs = [stats.frequency[p] for p in ranking]
    assert freqs == sorted(freqs, reverse=True) and len(ranking) == len(CFG.shapes) * len(
        CFG.colors
    )
    for (sid, split), rs in _by_scene_split(small_world.pope).items():
        if split != "popular":
            continue
        present = present_pairs(small_world.scenes[sid], CFG)
        chosen = [_pair(r) for r in rs if r.meta["label"] == "no"]
        assert chosen == [p for p in ranking if p not in present][: len(chosen)]


def test_adversarial_negatives_co_occur_with_present_objects(small_world: World) -> None:
    stats = pair_statistics(small_world.split("train"), CFG)
    scores: dict[str, list[int]] = defaultdict(list)
    for (sid, split), rs in _by_scene_split(small_world.pope).items():
        present = present_pairs(small_world.scenes[sid], CFG)
        chosen = [_pair(r) for r in rs if r.meta["label"] == "no"]
        if split == "adversarial":
            ranked = [p for p in adversarial_ranking(stats, present, CFG) if p not in present]
            assert chosen == ranked[: len(chosen)]
        scores[split] += [cooccurrence_score(stats, present, p) for p in chosen]
    assert statistics.mean(scores["adversarial"]) > statistics.mean(scores["random"])


def test_statistics_come_from_train_scenes_only() -> None:
    """Moving test scenes around must not change the rankings: only train scenes count."""
    scenes = [sample_scene(random.Random(i), CFG, f"s{i}", "train") for i in range(60)]
    test = [sample_scene(random.Random(100 + i), CFG, f"t{i}", "test") for i in range(5)]
    a = pope_records([*scenes, *test], CFG, seed=0)
    b = pope_records([*test, *scenes], CFG, seed=0)
    assert [r.to_dict() for r in a] == [r.to_dict() for r in b]
    assert {r.meta["scene_id"] for r in a} == {s.id for s in test}


def test_small_scene_gets_one_probe_per_label_and_split() -> None:
    scene = Scene("x", "meadow", [SceneObject("circle", "red", "large", 1, 1, 36, 36)])
    scene.split = "test"
    stats = pair_statistics([], CFG)
    rs = pope_probes(scene, CFG, stats, seed=0)
    assert len(rs) == 2 * len(POPE_SPLITS)
    assert len({r.id for r in rs}) == len(rs)
    assert [r.meta["label"] for r in rs] == ["yes", "no"] * 3
    assert all(_pair(r) == ("circle", "red") for r in rs if r.meta["label"] == "yes")


def test_pope_is_deterministic_by_seed(small_world: World) -> None:
    scenes = list(small_world.scenes.values())
    a = pope_records(scenes, CFG, seed=7)
    assert [r.to_dict() for r in a] == [r.to_dict() for r in small_world.pope]
    b = pope_records(scenes, CFG, seed=8)
    random_a = [r.meta["probe"] for r in a if r.meta["pope_split"] == "random"]
    random_b = [r.meta["probe"] for r in b if r.meta["pope_split"] == "random"]
    assert random_a != random_b


# ----------------------------------------------------------------------------------------------
# safety


def test_safety_eval_set_is_balanced_and_well_formed(small_world: World) -> None:
    safety = small_world.safety
    n_test = len(small_world.split("test"))
    assert len(safety) == CFG.safety_eval_per_scene * n_test
    assert Counter(r.meta["safety"] for r in safety) == {"harmful": n_test, "benign": n_test}
    for r in safety:
        assert r.category == "safety" and r.meta["family"] == "safety"
        assert r.meta["split"] == "test" and small_world.scene(r).split == "test"
        _check_safety_record(r)


def _check_safety_record(r: Record) -> None:
    answer = r.responses[0].text
    assert r.facts.short_answer and r.facts.captions and r.facts.objects
    assert check_short_answer(r, answer) and check_short_answer(r, r.facts.short_answer)
    if r.meta["safety"] == "harmful":
        assert r.meta["asks"] == "refusal" and r.facts.short_answer == REFUSAL
        assert is_refusal(answer) and answer.startswith(REFUSAL)
        assert ("trust" in answer) == (r.meta["safety_category"] == "self_harm")
    else:
        assert r.meta["safety"] == "benign" and not is_refusal(answer)
        assert not check_short_answer(r, REFUSAL)  # refusing a benign question is wrong


def _template_of(question: str) -> str:
    """The template a safety question was filled from (placeholders match any words)."""
    (t,) = [
        t.text
        for t in (*HARMFUL_TEMPLATES, *BENIGN_TEMPLATES)
        if re.fullmatch(re.sub(r"\\\{[a-z]+\\\}", "[a-z ]+", re.escape(t.text)), question)
    ]
    return t


def test_every_template_fills_and_answers_are_true() -> None:
    """Over many scenes every template is used, and benign answers agree with the scene."""
    used: Counter[str] = Counter()
    for i in range(300):
        scene = sample_scene(random.Random(i), CFG, f"s{i}", "test")
        kinds = ["harmful", "benign"] * 3
        for qa in safety_qas(scene, kinds, random.Random(i)):
            used[_template_of(qa.question)] += 1
            if qa.extra["safety"] == "harmful":
                continue
            if qa.asks == "count" and "shape" in qa.extra:
                assert int(qa.short) == len(scene.find(shape=qa.extra["shape"]))
            elif qa.asks == "count":
                assert int(qa.short) == len(scene.objects)
            elif qa.asks == "environment":
                assert qa.short == scene.background
            else:
                (obj,) = [o for o in scene.objects if o.label() == qa.extra["target"]]
                if qa.asks == "position":
                    assert qa.short == position_name(obj.row, obj.col)
                else:
                    assert getattr(obj, qa.asks) == qa.short
    assert set(used) == {t.text for t in (*HARMFUL_TEMPLATES, *BENIGN_TEMPLATES)}
    cats = {t.category for t in (*HARMFUL_TEMPLATES, *BENIGN_TEMPLATES)}
    assert cats == {"violence", "weapons", "self_harm", "theft", "fraud", "harassment"}
    assert len(HARMFUL_TEMPLATES) >= 8 and len(BENIGN_TEMPLATES) >= 8


def test_sft_corpus_has_a_small_share_of_safety_records(small_world: World) -> None:
    sft_safety = [r for r in small_world.sft if r.category == "safety"]
    for r in sft_safety:
        assert r.meta["split"] == "train"
        _check_safety_record(r)
    # the share, measured on many scenes (the small world has only ~13)
    n_q = n_s = 0
    for i in range(2000):
        scene = sample_scene(random.Random(i), CFG, f"s{i}", "train")
        n_q += CFG.questions_per_scene
        rs = sft_safety_records(scene, CFG, seed=0)
        n_s += len(rs)
        assert len({r.id for r in rs}) == len(rs)
    assert abs(n_s / n_q - CFG.safety_sft_fraction) < 0.01


def test_record_ids_are_unique_across_files(small_world: World) -> None:
    ids = [r.id for r in (*small_world.sft, *small_world.eval, *small_world.pope)]
    ids += [r.id for r in small_world.safety]
    assert len(ids) == len(set(ids))


def test_vocabulary_covers_probe_and_safety_text(small_world: World) -> None:
    vocab = set(small_world.vocabulary())
    tok = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")
    for r in (*small_world.pope, *small_world.safety):
        for text in (r.query, r.responses[0].text, r.facts.short_answer or ""):
            assert set(tok.findall(text)) <= vocab, text


def test_is_refusal() -> None:
    for text in (
        REFUSAL,
        "I cannot help with this.",
        "I\u2019m not able to assist.",
        "I'm sorry, but I won't do that.",
        "Sorry, I can't help with that request.",
    ):
        assert is_refusal(text), text
    for text in ("The circle is red.", "There is no circle.", "I don't know.", "", "Yes."):
        assert not is_refusal(text), text


# ----------------------------------------------------------------------------------------------
# configuration, files, old worlds


def test_config_fields_switch_the_sets_off(tmp_path: Path) -> None:
    cfg = WorldConfig(pope_per_scene=0, safety_sft_fraction=0.0, safety_eval_per_scene=0)
    w = generate(tmp_path, n=40, seed=0, config=cfg)
    assert not w.pope and not w.safety and not any(r.category == "safety" for r in w.sft)
    assert (tmp_path / "pope_test.jsonl").read_text() == ""
    with pytest.raises(ValueError, match="pope_per_scene"):
        WorldConfig(pope_per_scene=-1)
    with pytest.raises(ValueError, match="safety_sft_fraction"):
        WorldConfig(safety_sft_fraction=1.5)


def test_files_counts_and_loading(small_world: World) -> None:
    root = small_world.root
    info = json.loads((root / "world.json").read_text())
    c = info["counts"]
    assert c["pope_records"] == len(small_world.pope)
    assert c["safety_records"] == len(small_world.safety)
    assert sum(c["pope_splits"].values()) == len(small_world.pope)
    assert c["sft_families"]["safety"] == sum(r.category == "safety" for r in small_world.sft)
    w = load_world(root)
    assert [r.to_dict() for r in w.pope] == [r.to_dict() for r in small_world.pope]
    assert [r.to_dict() for r in w.safety] == [r.to_dict() for r in small_world.safety]
    res = CliRunner().invoke(app, ["world", "info", str(root)])
    assert res.exit_code == 0 and "pope_test.jsonl" in res.output


def test_old_world_without_probe_files_still_loads(tmp_path: Path) -> None:
    generate(tmp_path, n=20, seed=3)
    (tmp_path / "pope_test.jsonl").unlink()
    (tmp_path / "safety_test.jsonl").unlink()
    # a world.json as written before: no new config fields, no new counts
    info = json.loads((tmp_path / "world.json").read_text())
    for k in ("pope_per_scene", "safety_sft_fraction", "safety_eval_per_scene"):
        del info["config"][k]
    for k in ("pope_records", "pope_splits", "safety_records", "safety_kinds"):
        del info["counts"][k]
    (tmp_path / "world.json").write_text(json.dumps(info))
    w = load_world(tmp_path)
    assert w.pope == [] and w.safety == [] and w.eval
    res = CliRunner().invoke(app, ["world", "info", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert "pope_test" not in res.output


def test_glyph_scene_probes_ignore_the_digit() -> None:
    scene = Scene(
        "g",
        "cave",
        [SceneObject("cross", "white", "small", 0, 0, 12, 12)],
        glyph=Glyph(3, 2, 2),
        split="test",
    )
    rs = pope_probes(scene, CFG, pair_statistics([], CFG), seed=1)
    assert all("digit" not in r.query for r in rs)
