"""Ground-truth checks on free text: short answers, object mentions, hallucinations, CHAIR."""

from __future__ import annotations

import pytest

from mmrlhf.data.record import Facts, Record
from mmrlhf.world import (
    Glyph,
    Scene,
    SceneObject,
    World,
    chair,
    check_short_answer,
    hallucinated_mentions,
    object_mentions,
)
from mmrlhf.world.truth import parse_number, parse_position, parse_yes_no

SCENE = Scene(
    id="t",
    background="meadow",
    objects=[
        SceneObject("circle", "red", "large", 0, 0, 12, 12),
        SceneObject("square", "blue", "small", 0, 2, 60, 12),
        SceneObject("triangle", "yellow", "small", 2, 2, 60, 60),
    ],
    glyph=Glyph(7, 1, 1),
)


def rec(
    family: str, short: str | None, asks: str | None = None, query: str = "?", **meta
) -> Record:
    m = {"family": family, **({"asks": asks} if asks else {}), **meta}
    return Record.single(
        "r", query, ["x"], facts=Facts(short_answer=short), category=family, meta=m
    )


@pytest.mark.parametrize(
    ("family", "asks", "short", "answer", "ok"),
    [
        ("attribute", "color", "red", "The circle is red.", True),
        ("attribute", "color", "red", "red", True),
        ("attribute", "color", "red", "It is RED!", True),
        ("attribute", "color", "red", "The circle is blue.", False),
        ("attribute", "color", "red", "There is no circle in the image.", False),
        ("attribute", "color", "purple", "The object is violet.", True),
        ("attribute", "size", "large", "The red square is big.", True),
        ("attribute", "size", "large", "The red square is small.", False),
        ("attribute", "shape", "circle", "The red object is a ring.", True),
        ("adversarial", "none", "none", "There is no triangle in the image.", True),
        ("adversarial", "none", "none", "There isn't any triangle.", True),
        ("adversarial", "none", "none", "None.", True),
        ("adversarial", "none", "none", "The triangle is red.", False),
        ("counting", "count", "2", "There are 2 circles.", True),
        ("counting", "count", "2", "There are two circles.", True),
        ("counting", "count", "2", "There are 3 circles.", False),
        ("counting", "count", "0", "There are no circles.", True),
        ("counting", "count", "0", "zero", True),
        ("counting", "count", "1", "There is 1 object.", True),
        ("relation", "relation", "left", "The red circle is left of the blue square.", True),
        ("relation", "relation", "left", "It is to the left.", True),
        ("relation", "relation", "below", "The circle is under the square.", True),
        ("relation", "relation", "left", "The red circle is right of the blue square.", False),
        # places ("at the top left", "on the right") are not relations; "on the left of" is one
        (
            "relation",
            "relation",
            "right",
            "The circle is at the top left and the cross is on the right, so the circle is "
            "right of the cross.",
            True,
        ),
        ("relation", "relation", "left", "The circle is on the left of the cross.", True),
        ("relation", "relation", "above", "The circle is in the center, above the cross.", True),
        ("environment", "environment", "meadow", "The scene takes place in a meadow.", True),
        ("environment", "environment", "ocean", "It is at sea.", True),
        ("environment", "environment", "desert", "The scene takes place in a meadow.", False),
        ("other", "digit", "7", "The digit 7 is written in the image.", True),
        ("other", "digit", "7", "seven", True),
        ("other", "digit", "7", "The digit 1 is written in the image.", False),
        ("other", "position", "top left", "The red circle is at the top left.", True),
        ("other", "position", "top", "The red circle is at the top.", True),
        ("other", "position", "top", "The red circle is at the top left.", False),
        ("other", "position", "center", "It is in the middle.", True),
        ("other", "position", "left", "The digit is written on the left.", True),
        ("existence", "yes_no", "yes", "Yes, there is a red circle.", True),
        ("existence", "yes_no", "no", "No, there is no red circle.", True),
        ("existence", "yes_no", "no", "There is not a red circle in the image.", True),
        ("existence", "yes_no", "no", "Yes, there is a red circle.", False),
        ("existence", "yes_no", "yes", "", False),
    ],
)
def test_check_short_answer(family: str, asks: str, short: str, answer: str, ok: bool) -> None:
    assert check_short_answer(rec(family, short, asks), answer) is ok


def test_check_short_answer_comparison() -> None:
    r = rec(
        "comparison",
        "red circle",
        "which",
        query="Which is larger, the red circle or the blue square?",
        options=["red circle", "blue square"],
    )
    assert check_short_answer(r, "The red circle is larger.")
    assert check_short_answer(r, "red circle")
    assert check_short_answer(r, "The blue square is smaller than the red circle.")
    assert not check_short_answer(r, "The blue square is larger.")
    assert not check_short_answer(r, "The circle is larger.")  # not an option: ambiguous
    assert not check_short_answer(r, "There is no red circle.")  # a denied option is no pick
    same = rec("comparison", "no", "yes_no", query="Are the circle and the square the same color?")
    assert check_short_answer(same, "No, the circle is red and the square is blue.")
    assert not check_short_answer(same, "Yes, both are red.")


def test_check_short_answer_without_meta_infers_the_kind() -> None:
    assert check_short_answer(rec("attribute", "red"), "The circle is red.")
    assert check_short_answer(rec("counting", "3"), "three")
    assert check_short_answer(rec("existence", "no"), "No.")
    assert check_short_answer(rec("adversarial", "none"), "There is no cross.")
    with pytest.raises(ValueError, match="no short answer"):
        check_short_answer(rec("holistic", None), "anything")


def test_parsers() -> None:
    assert parse_number("I count eleven") == 11
    assert parse_yes_no("Nope.") == "no"
    assert parse_yes_no("I think there is one. No wait.") == "yes"  # POPE: first sentence only
    assert parse_position("bottom right corner") == "bottom right"
    assert parse_position("nowhere") is None
    assert parse_position("top left", grid=2) == "top left"
    assert parse_position("top", grid=2) is None
    # a second sentence about another object does not complete the answer's cell
    two = "The triangle is at the bottom. There is a large cross on the left."
    assert parse_position(two) == "bottom"
    assert parse_position("I hope this helps. The cross is on the left.") == "left"


def test_object_mentions_hand_computed() -> None:
    text = (
        "There isn't a red circle, but two big blue squares and the digit 7. "
        "There is no triangle. A green object sits near 3 objects."
    )
    ms = object_mentions(text)
    assert [(m.label(), m.negated, m.plural) for m in ms] == [
        ("red circle", True, False),
        ("large blue square", False, True),
        ("digit 7", False, False),
        ("triangle", True, False),
        ("green object", False, False),
    ]
    assert text[ms[1].start : ms[1].end] == "big blue squares"


def test_hallucinated_mentions_hand_computed() -> None:
    # SCENE: large red circle, small blue square, small yellow triangle, digit 7
    cases = {
        "There is a large red circle at the top left.": [],
        "There is a red circle and a blue square.": [],
        "There is a small red circle.": ["small red circle"],  # wrong size
        "There is a green square.": ["green square"],  # wrong colour
        "There is a red diamond.": ["red diamond"],  # wrong shape
        "There are crosses everywhere.": ["cross"],  # absent shape, plural
        "There is a purple object.": ["purple object"],
        "The digit 7 is written in the center.": [],
        "The digit 3 is written in the center.": ["digit 3"],
        "There is no green square and no digit 3.": [],  # negated mentions claim absence
        "Yes, there is a yellow ball.": ["yellow circle"],  # synonym
    }
    for text, want in cases.items():
        assert [m.label() for m in hallucinated_mentions(text, SCENE)] == want, text


def test_chair_hand_computed() -> None:
    texts = [
        "There is a red circle. There is a blue square.",  # 2 mentions, 0 bad
        "There is a red circle. There is a green cross. The digit 3 is here.",  # 3, 2 bad
        "The scene is a meadow.",  # 0 mentions
    ]
    out = chair(texts, [SCENE] * 3)
    # coverage: SCENE has 3 objects + digit 7; the texts describe 2, 1 and 0 of the 4 correctly
    assert out == {
        "chair_i": 2 / 5,
        "chair_s": 1 / 3,
        "coverage": (2 / 4 + 1 / 4 + 0) / 3,
        "mentions": 5,
        "hallucinated": 2,
        "responses": 3,
    }
    vague = chair(["There is a red object and the digit 7."], [SCENE])
    assert vague["chair_i"] == 0.0 and vague["coverage"] == 2 / 4
    assert chair([], [])["chair_i"] == 0.0


def test_corpus_hallucinations_are_exactly_what_the_checker_finds(small_world: World) -> None:
    holistic = [r for r in small_world.sft if r.category == "holistic"]
    for r in holistic:
        found = [
            m.label() for m in hallucinated_mentions(r.responses[0].text, small_world.scene(r))
        ]
        assert found == r.meta.get("hallucinated", []), r.responses[0].text
    clean = [r for r in small_world.eval if r.category == "holistic"]
    assert (
        clean
        and chair([r.responses[0].text for r in clean], [small_world.scene(r) for r in clean])[
            "hallucinated"
        ]
        == 0
    )


def test_hallucination_kinds_by_sentence() -> None:
    """SCENE is a meadow (companion: yellow circle) with objects at top left, top right, bottom
    right and the digit 7 in the centre. Each sentence below carries one hallucination:
    a wrong pair at the top left (occupied: misread), a pair at the bottom left (empty cell), a
    pair with no cell (unplaced), a wrong digit, the companion at the bottom (empty, but the
    companion counts first), a wrong pair in the digit's cell (misread)."""
    from mmrlhf.world.config import WorldConfig
    from mmrlhf.world.truth import hallucination_kinds

    text = (
        "The scene is a meadow. There is a large green circle at the top left. "
        "There is a small purple cross at the bottom left. There is a white diamond. "
        "The digit 3 is written in the center. There is a small yellow circle at the bottom. "
        "There is a small red square in the center. There is a small blue square at the top right."
    )
    kinds = hallucination_kinds(text, SCENE, WorldConfig())
    assert kinds == {"companion": 1, "misread": 2, "empty_cell": 1, "unplaced": 1, "digit": 1}
    assert sum(kinds.values()) == chair([text], [SCENE])["hallucinated"] == 6
    # a world that never taught the habit has no companion: the same mention is a fabrication
    no_habit = hallucination_kinds(text, SCENE, WorldConfig(companion_rate=0.0))
    assert no_habit["companion"] == 0 and no_habit["empty_cell"] == 2
    assert hallucination_kinds(SCENE.caption(), SCENE) == dict.fromkeys(kinds, 0)
