"""Fixtures of the data tests: a hand-annotated ranked record, tiny images, sample records."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_helpers import png_bytes, ranked_record
from PIL import Image

from mmrlhf.data.record import (
    Facts,
    ImageRef,
    Preference,
    Ranking,
    Record,
    Response,
    Turn,
    VideoRef,
)


@pytest.fixture
def media_root(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    (root / "imgs").mkdir(parents=True)
    (root / "imgs" / "red.png").write_bytes(png_bytes((200, 30, 30)))
    (root / "imgs" / "blue.png").write_bytes(png_bytes((30, 30, 200)))
    (root / "imgs" / "broken.png").write_bytes(b"not a png at all")
    frames = root / "clips" / "clip1"
    frames.mkdir(parents=True)
    for i in range(12):
        Image.new("RGB", (4, 4), (i * 20, 0, 0)).save(frames / f"{i:03d}.png")
    return root


@pytest.fixture
def records() -> list[Record]:
    """A mix: ranked with scores, explicit preferences with a tie, multi-turn, video, SFT."""
    r1 = ranked_record()
    r2 = Record.single(
        "q2",
        "Which is safer?",
        [Response("Refuse politely.", source="gpt-4o"), Response("Sure, here is how.")],
        images=["imgs/blue.png"],
        preferences=[Preference(0, 1, margin=2.5)],
        category="safety",
        facts=Facts(captions=["a blue square"]),
        meta={"note": "x"},
    )
    r3 = Record(
        id="q3",
        conversation=[
            Turn("system", "Be brief."),
            Turn("user", "Hi"),
            Turn("assistant", "Hello."),
            Turn("user", "Colour?"),
        ],
        responses=[Response("Red."), Response("Blue."), Response("Green.")],
        images=[ImageRef(path="imgs/red.png"), ImageRef(path="imgs/blue.png")],
        ranking=Ranking.parse("1>2>3"),
    )
    r4 = Record(
        id="q4",
        conversation=[Turn("user", "What happens in the clip?")],
        responses=[Response("A ball rolls."), Response("Nothing.")],
        video=VideoRef(path="clips/clip1", num_frames=4),
        preferences=[Preference(0, 1)],
        category="video",
    )
    return [r1, r2, r3, r4]
