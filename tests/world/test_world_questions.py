"""Question families: every stored answer is right, adversarial questions ask about absent
things, existence probes are balanced, and everything stays in the vocabulary."""

from __future__ import annotations

import dataclasses
import random
import re
from collections import Counter

from mmrlhf.world import FAMILIES, World, WorldConfig, ask, check_short_answer, sample_scene

CFG = WorldConfig()


def _qas(n_scenes: int = 300, per: int = 9):
    for i in range(n_scenes):
        scene = sample_scene(random.Random(i), CFG, f"s{i}")
        for qa in ask(scene, CFG, random.Random(-i), per, CFG.eval_family_weights):
            yield scene, qa


def test_all_families_appear_with_their_mmhal_type(small_world: World) -> None:
    for records in (small_world.sft, small_world.eval):
        # the SFT corpus also holds a few safety records (mmrlhf.world.probes)
        assert {r.category for r in records} - {"safety"} == set(FAMILIES)
    for r in small_world.eval:
        want = "adversarial" if r.category == "existence" else r.category
        assert r.meta["mmhal_type"] == want
        assert r.meta["family"] == r.category and r.meta["scene_id"] in small_world.scenes


def test_every_stored_answer_passes_the_checker(small_world: World) -> None:
    n = 0
    for r in small_world.sft + small_world.eval:
        if r.category == "holistic":
            assert r.facts.short_answer is None
            continue
        assert check_short_answer(r, r.responses[0].text), (r.query, r.responses[0].text)
        assert check_short_answer(r, r.facts.short_answer), (r.query, r.facts.short_answer)
        n += 1
    assert n > 300


def test_adversarial_questions_ask_about_absent_things() -> None:
    seen = 0
    for scene, qa in _qas():
        if qa.family != "adversarial":
            continue
        seen += 1
        absent = qa.extra["absent"]
        assert qa.answer == f"There is no {absent} in the image." and qa.short == "none"
        words = absent.split()
        if absent == "digit":
            assert scene.glyph is None
        elif words[-1] == "object":
            assert not scene.has(color=words[0])
        elif len(words) == 1:
            assert not scene.has(shape=words[0])
        else:
            assert not scene.has(color=words[0], shape=words[1])
    assert seen > 50


def test_answers_agree_with_the_scene() -> None:
    for scene, qa in _qas(200):
        if qa.family == "counting" and not qa.extra:
            assert int(qa.short) == len(scene.objects)
        elif qa.family == "counting":
            ((attr, v),) = qa.extra.items()
            assert int(qa.short) == len(scene.find(**{attr: v}))
        elif qa.family == "environment":
            assert qa.short == scene.background
        elif qa.family == "holistic":
            assert qa.answer == scene.caption()
        elif qa.family == "attribute":
            target = [o for o in scene.objects if o.label() == qa.extra["target"]]
            assert target and getattr(target[0], qa.asks) == qa.short
        elif qa.family == "existence":
            m = re.match(r"Is there an? (?:(\w+) )?(\w+) in the image\?", qa.question)
            color, shape = m.groups()
            assert scene.has(shape=shape, color=color) == (qa.short == "yes")


def _referents(question: str) -> list[dict[str, str]]:
    """Noun phrases after "the": attributes up to a shape noun or "object"."""
    words = re.findall(r"\w+", question.lower())
    out = []
    for i, w in enumerate(words):
        if w != "the":
            continue
        attrs: dict[str, str] = {}
        for v in words[i + 1 :]:
            if v in ("small", "large"):
                attrs["size"] = v
            elif v in CFG.colors:
                attrs["color"] = v
            else:
                if v in CFG.shapes:
                    attrs["shape"] = v
                    out.append(attrs)
                elif v == "object":
                    out.append(attrs)
                break
    return out


def test_referents_are_unique() -> None:
    """A question never names an object the scene has twice (or not at all)."""
    checked = 0
    for scene, qa in _qas(200):
        if qa.family in ("relation", "comparison", "attribute", "other"):
            for attrs in _referents(qa.question):
                assert len(scene.find(**attrs)) == 1, (qa.question, scene.caption())
                checked += 1
    assert checked > 300


def test_existence_is_balanced_with_all_negative_kinds() -> None:
    kinds = Counter(qa.extra["pope"] for _, qa in _qas(400) if qa.family == "existence")
    yes = kinds["positive"]
    no = sum(kinds.values()) - yes
    assert abs(yes - no) / (yes + no) < 0.15
    assert {"random", "popular", "near_miss"} <= set(kinds)


def test_comparison_pairs_differ_in_size() -> None:
    seen = 0
    for scene, qa in _qas(200):
        if qa.family == "comparison" and qa.asks == "which":
            a, b = (_referents(f"the {d}")[0] for d in qa.extra["options"])
            (oa,), (ob,) = scene.find(**a), scene.find(**b)
            assert oa.size != ob.size
            want = "large" if "larger" in qa.question else "small"
            assert qa.short == qa.extra["options"][0 if oa.size == want else 1]
            assert qa.answer.startswith(f"The {qa.short} is")
            seen += 1
    assert seen > 20


def test_vocabulary_covers_every_generated_token(small_world: World) -> None:
    vocab = set(small_world.vocabulary())
    assert vocab == set(small_world.info["vocabulary"])
    assert len(vocab) < 150
    tok = re.compile(r"[A-Za-z]+|\d+|[^\sA-Za-z\d]")
    for r in small_world.sft + small_world.eval:
        for text in (r.query, r.responses[0].text, r.facts.short_answer or "", *r.facts.captions):
            assert set(tok.findall(text)) <= vocab, text


def test_relation_rationale_places_both_objects_then_compares() -> None:
    """WorldConfig.relation_rationale: the same questions, answers that name both places (each
    the object's true cell) and end with the relation; graded right, and a relation corrupted
    in the conclusion graded wrong. Off, the answers are the one-sentence ones."""
    from mmrlhf.world.generate import make_record, vocabulary
    from mmrlhf.world.scene import position_phrase

    cot = dataclasses.replace(CFG, relation_rationale=True)
    seen = 0
    for i in range(200):
        scene = sample_scene(random.Random(i), CFG, f"s{i}")
        plain = ask(scene, CFG, random.Random(-i), 9, {"relation": 1.0})
        placed = ask(scene, cot, random.Random(-i), 9, {"relation": 1.0})
        assert [q.question for q in plain] == [q.question for q in placed]
        for p, qa in zip(plain, placed, strict=True):
            assert re.fullmatch(r"The .+ is (left of|right of|above|below) the .+\.", p.answer)
            m = re.fullmatch(
                r"The (.+) is (.+) and the (.+) is (.+), so the \1 is (.+) the \3\.", qa.answer
            )
            assert m, qa.answer
            for name, place in ((m.group(1), m.group(2)), (m.group(3), m.group(4))):
                (obj,) = scene.find(**_referents(f"the {name}")[0])
                assert place == position_phrase(obj.row, obj.col, CFG.grid)
            rec = make_record(qa, scene, "test", 0)
            assert check_short_answer(rec, qa.answer, cot)
            wrong = {"left of": "right of", "right of": "left of", "above": "below"}
            bad = qa.answer[: m.start(5)] + wrong.get(m.group(5), "above") + qa.answer[m.end(5) :]
            assert not check_short_answer(rec, bad, cot)
            seen += 1
    assert seen > 100
    assert "so" in vocabulary(cot) and "so" not in vocabulary(CFG)
