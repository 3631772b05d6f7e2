"""Generic CHAIR: phrase matching, hand-computed metrics and the real COCO synonym list."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmrlhf.evaluation.metrics.chair import (
    build_synonyms,
    chair_metrics,
    extract_objects,
    load_synonyms,
)

BENCHMARKS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks"
SYNONYMS = BENCHMARKS / "coco_chair_synonyms.json"

VOCAB = {
    "person": ["man", "woman", "tennis player", "people", "lady", "man on bicycle"],
    "bicycle": ["bike"],
    "dog": ["puppy"],
    "bus": [],
    "tennis racket": ["racket"],
    "cat": ["kitten"],
    "truck": ["semi - trailer"],
}


def test_build_synonyms_normalises_and_maps_classes_to_themselves() -> None:
    syn = build_synonyms(VOCAB)
    assert syn["person"] == "person" and syn["bus"] == "bus"
    assert syn["tennis player"] == "person" and syn["tennis racket"] == "tennis racket"
    assert syn["semi trailer"] == "truck"  # hyphen dropped, words single-spaced
    # a synonym under two classes keeps the first; a class name always maps to itself
    syn2 = build_synonyms({"cow": ["calf"], "elephant": ["calf"], "bench": [], "chair": ["bench"]})
    assert syn2["calf"] == "cow" and syn2["bench"] == "bench"
    with pytest.raises(ValueError, match="dog"):
        build_synonyms({"dog": "puppy"})
    with pytest.raises(ValueError, match="synonym"):
        build_synonyms({"dog": ["puppy", ""]})


def test_extract_objects_longest_phrase_plurals_case_and_boundaries() -> None:
    syn = build_synonyms(VOCAB)
    assert extract_objects("The Tennis Players hold rackets.", syn) == [
        ("Tennis Players", "person"),  # longest phrase first, surface text kept
        ("rackets", "tennis racket"),
    ]
    # "man" is a phrase too, but the longer "man on bicycle" wins and consumes "bicycle"
    assert extract_objects("A man on bicycle and a man on a bike.", syn) == [
        ("man on bicycle", "person"),
        ("man", "person"),
        ("bike", "bicycle"),
    ]
    assert extract_objects("Two buses, three puppies and two ladies.", syn) == [
        ("buses", "bus"),  # -es
        ("puppies", "dog"),  # -ies -> -y
        ("ladies", "person"),
    ]
    # whole words only: dogma, catalog, manager are not objects
    assert extract_objects("A dogma, a catalog and a manager.", syn) == []
    # no phrase across punctuation: "tennis. player" is neither a tennis player nor anything
    assert extract_objects("It was tennis. Player two won.", syn) == []
    assert extract_objects("A semi-trailer.", syn) == [("semi-trailer", "truck")]
    with pytest.raises(ValueError, match="text"):
        extract_objects(None, syn)  # type: ignore[arg-type]


def test_chair_metrics_hand_computed() -> None:
    syn = build_synonyms(VOCAB)
    texts = [
        "A man and two Dogs near a bus.",  # person, dog*, bus           -> 3 mentions, 1 bad
        "The tennis players hold rackets; a puppy sleeps.",  # person, racket, dog -> 3, 0 bad
        "Two buses and a kitten, and another kitten.",  # bus, cat*, cat*  -> 3, 2 bad
        "Nothing of note: a dogma and a catalog.",  # no mentions        -> 0, 0 bad
    ]
    gt = [{"person", "bus"}, {"person", "tennis racket", "dog"}, {"bus"}, set()]
    m = chair_metrics(texts, gt, syn)
    # CHAIR_i = (1 + 0 + 2 + 0) / (3 + 3 + 3 + 0) = 3 / 9; CHAIR_s = 2 bad responses / 4
    assert m["mentions"] == 9 and m["hallucinated"] == 3
    assert m["chair_i"] == pytest.approx(1 / 3)
    assert m["responses"] == 4 and m["responses_hallucinated"] == 2
    assert m["chair_s"] == pytest.approx(0.5)
    empty = chair_metrics([], [], syn)
    assert empty["chair_i"] == 0.0 and empty["chair_s"] == 0.0 and empty["responses"] == 0


def test_chair_metrics_bad_input() -> None:
    syn = build_synonyms(VOCAB)
    with pytest.raises(ValueError, match="lengths differ"):
        chair_metrics(["a dog"], [], syn)
    with pytest.raises(ValueError, match=r"gt_objects\[0\]: unknown classes \['dgo'\]"):
        chair_metrics(["a dog"], [{"dgo"}], syn)
    with pytest.raises(ValueError, match=r"gt_objects\[0\]"):
        chair_metrics(["a dog"], ["dog"], syn)
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        chair_metrics(["a dog", 3], [{"dog"}, {"dog"}], syn)  # type: ignore[list-item]


def test_real_coco_synonyms() -> None:
    if not SYNONYMS.is_file():
        pytest.skip(f"{SYNONYMS} is not available")
    syn = load_synonyms(SYNONYMS)
    raw = json.loads(SYNONYMS.read_text())
    assert len(raw) == 80 and set(syn.values()) == set(raw)
    assert all(syn[" ".join(c.split())] == c for c in raw)  # classes map to themselves
    assert syn["people"] == "person" and syn["bike"] == "bicycle"
    assert syn["calf"] == "cow"  # listed under cow, then elephant: the first wins
    assert syn["teddy bear"] == "teddy bear"  # also a bear synonym, but a class name

    text = "A man riding a bicycle next to a dog"
    assert extract_objects(text, syn) == [("man", "person"), ("bicycle", "bicycle"), ("dog", "dog")]
    m = chair_metrics([text], [{"person", "bicycle"}], syn)
    # 3 mentions, the dog is hallucinated: CHAIR_i = 1/3, CHAIR_s = 1/1
    assert (m["mentions"], m["hallucinated"]) == (3, 1)
    assert m["chair_i"] == pytest.approx(1 / 3) and m["chair_s"] == 1.0
    # multi-word synonyms (longest first) and plurals on the real list
    assert extract_objects("A man on bicycle.", syn) == [("man on bicycle", "person")]
    assert extract_objects("Two tennis players and some hot dogs.", syn) == [
        ("tennis players", "person"),
        ("hot dogs", "hot dog"),
    ]


def test_load_synonyms_errors(tmp_path: Path) -> None:
    p = tmp_path / "syn.json"
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match=str(p)):
        load_synonyms(p)
    p.write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_synonyms(p)
