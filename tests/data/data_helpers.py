"""Helpers shared by the data tests (a module with a unique name: tests/ has several
conftest.py files, so ``import conftest`` would be ambiguous)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from mmrlhf.data.record import ImageRef, Ranking, Record, Response, Score, Turn

BENCHMARKS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "benchmarks"


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def ranked_record() -> Record:
    """Four responses ranked ``1>2=3>4`` with scores and rewards chosen so every margin kind
    gives a distinct, hand-computable value (see test_pairs.py)."""

    def resp(text: str, h: float, f: float, e: float | None, reward: float | None) -> Response:
        return Response(
            text=text,
            source=f"model-{text[-1]}",
            helpfulness=Score(h, "h reason"),
            faithfulness=Score(f),
            ethics=None if e is None else Score(e, "safe"),
            reward=reward,
        )

    return Record(
        id="q1",
        conversation=[Turn("user", "What is in the image?")],
        responses=[
            resp("answer A", 5, 5, 5, 2.0),
            resp("answer B", 4, 3, 5, 1.0),
            resp("answer C", 4, 4, None, None),
            resp("answer D", 1, 2, 3, -1.0),
        ],
        images=[ImageRef(path="imgs/red.png")],
        ranking=Ranking.parse("1>2=3>4", reason="A is the most faithful"),
        category="long",
    )
