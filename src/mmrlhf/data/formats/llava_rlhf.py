"""LLaVA-RLHF human preference JSON (``human_preference_data``).

Each element: ``image``, ``conversations`` ([{from: human|gpt, value}], the dialogue up to the
human turn being answered), ``output_1 {value}``, ``output_2 {value}``, ``preference`` (1 or 2,
the better output). Becomes a record with responses ``[output_1, output_2]`` and one preference.
The ``<image>`` tag is stripped from human turns (our records keep media out of the text).
The id is the element's ``id`` when present, else ``<image>#<n>`` (n = 0-based element index,
so two comparisons on one image stay distinct). Other keys go to ``Record.meta``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmrlhf.data.formats._common import ReadResult, guarded, image_ref, iter_json_rows, strip_tags
from mmrlhf.data.record import Preference, Record, RecordError, Response, Turn

ROLE = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
}
KNOWN = {"id", "image", "conversations", "output_1", "output_2", "preference"}


def matches(first: dict[str, Any]) -> bool:
    return "output_1" in first and "output_2" in first


def conversation(obj: dict[str, Any]) -> list[Turn]:
    """ShareGPT turns as :class:`Turn`s, ``<image>`` stripped from the human ones."""
    turns = obj.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RecordError("conversations", "must be a non-empty list of turns")
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise RecordError(f"conversations[{i}]", "must be an object")
        role = ROLE.get(t.get("from"))
        if role is None:
            raise RecordError(
                f"conversations[{i}].from", f"must be human or gpt, got {t.get('from')!r}"
            )
        value = t.get("value")
        if not isinstance(value, str):
            raise RecordError(f"conversations[{i}].value", "must be a string")
        out.append(Turn(role, strip_tags(value) if role == "user" else value))
    return out


def _output(obj: dict[str, Any], key: str) -> Response:
    v = obj.get(key)
    if isinstance(v, dict):
        v = v.get("value")
    if not isinstance(v, str):
        raise RecordError(f"{key}.value", "is required (a string)")
    return Response(text=v)


def make_parser() -> Any:
    count = [-1]

    def parse(obj: dict[str, Any]) -> Record:
        count[0] += 1
        conv = conversation(obj)
        if conv[-1].role != "user":
            raise RecordError(
                f"conversations[{len(conv) - 1}].from",
                "the last turn must be the human turn the outputs answer",
            )
        pref = obj.get("preference")
        if pref not in (1, 2) or isinstance(pref, bool):
            raise RecordError("preference", f"must be 1 or 2, got {pref!r}")
        image = obj.get("image")
        rid = obj.get("id")
        if rid is None:
            rid = f"{image}#{count[0]}"
        return Record(
            id=str(rid),
            conversation=conv,
            responses=[_output(obj, "output_1"), _output(obj, "output_2")],
            images=[image_ref(image, "image")] if image is not None else [],
            preferences=[Preference(pref - 1, 2 - pref)],
            meta={k: v for k, v in obj.items() if k not in KNOWN},
        )

    return parse


def read(path: str | Path, **_: Any) -> ReadResult:
    yield from guarded(iter_json_rows(path), make_parser())
