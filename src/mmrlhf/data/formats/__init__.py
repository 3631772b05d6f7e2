"""File formats: one module per format, a registry, and format detection.

Each format module has ``read(path, **options)`` yielding ``(line, Record | RecordError |
Notice)`` and/or ``write(records, path, **options) -> int`` (rows written), plus
``matches(first_object_or_columns) -> bool`` used by :func:`detect_format`.

Format names (``--from`` / ``--to`` on the command line):

============================  ==========  ===================================================
name                          read/write  what
============================  ==========  ===================================================
``jsonl``                     r/w         our records, one ``Record.to_dict()`` per line
``parquet``                   r/w         our records, columnar (docs/data.md)
``mmrlhf_pairs``              r/w         MM-RLHF pair file (also RewardBench, our ``pairs``)
``mmrlhf_annotation``         r/w         MM-RLHF full annotation: scores, ranking, reasons
``rlaif_v``                   r           RLAIF-V parquet (Hugging Face), optional ``logps``
``llava_rlhf``                r           LLaVA-RLHF human preference JSON
``llava_rlhf_ppo``            r           LLaVA-RLHF PPO prompt JSON (no responses)
``trl``                       r/w         TRL vision preference, JSONL or parquet
``llamafactory``              r/w         LLaMA-Factory ShareGPT preference JSON
``swift``                     r/w         ms-swift preference JSONL
============================  ==========  ===================================================
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from mmrlhf.data import problems as P
from mmrlhf.data.problems import DataError


@dataclass(frozen=True)
class FormatInfo:
    name: str
    module: str
    description: str
    extensions: tuple[str, ...]
    can_read: bool = True
    can_write: bool = True


FORMATS: dict[str, FormatInfo] = {
    f.name: f
    for f in (
        FormatInfo("jsonl", "records_jsonl", "our records, one JSON per line", (".jsonl",)),
        FormatInfo("parquet", "records_parquet", "our records, columnar parquet", (".parquet",)),
        FormatInfo(
            "mmrlhf_pairs", "mmrlhf_pairs", "MM-RLHF pair file (one pair per row)", (".jsonl",)
        ),
        FormatInfo(
            "mmrlhf_annotation",
            "mmrlhf_annotation",
            "MM-RLHF full annotation (scores, ranking, reasons)",
            (".jsonl", ".json"),
        ),
        FormatInfo("rlaif_v", "rlaif_v", "RLAIF-V parquet", (".parquet",), can_write=False),
        FormatInfo(
            "llava_rlhf", "llava_rlhf", "LLaVA-RLHF preference JSON", (".json",), can_write=False
        ),
        FormatInfo(
            "llava_rlhf_ppo",
            "llava_rlhf_ppo",
            "LLaVA-RLHF PPO prompt JSON",
            (".json",),
            can_write=False,
        ),
        FormatInfo("trl", "trl", "TRL vision preference", (".jsonl", ".parquet")),
        FormatInfo("llamafactory", "llamafactory", "LLaMA-Factory ShareGPT ranking", (".json",)),
        FormatInfo("swift", "swift", "ms-swift preference JSONL", (".jsonl",)),
    )
}

# Detection order matters: more specific key sets first (a TRL file also has prompt/chosen).
_JSON_DETECT_ORDER = (
    "jsonl",
    "mmrlhf_annotation",
    "trl",
    "mmrlhf_pairs",
    "llava_rlhf",
    "llava_rlhf_ppo",
    "llamafactory",
    "swift",
)
_PARQUET_DETECT_ORDER = ("parquet", "rlaif_v", "trl")


class FormatError(DataError):
    """The format is unknown, cannot be detected, or cannot do what was asked."""

    def __init__(self, message: str, source: str | None = None) -> None:
        super().__init__("-", message, kind=P.UNKNOWN_FORMAT, source=source, line=None)


def format_names(readable: bool | None = None, writable: bool | None = None) -> list[str]:
    return [
        f.name
        for f in FORMATS.values()
        if (readable is None or f.can_read == readable)
        and (writable is None or f.can_write == writable)
    ]


def get_format(name: str, *, for_write: bool = False) -> ModuleType:
    """The module of format ``name``; a :class:`FormatError` names the known ones."""
    info = FORMATS.get(name)
    if info is None:
        raise FormatError(f"unknown format {name!r}; known formats: {', '.join(FORMATS)}")
    if for_write and not info.can_write:
        raise FormatError(
            f"format {name!r} can be read but not written; writable formats: "
            f"{', '.join(format_names(writable=True))}"
        )
    return importlib.import_module(f"mmrlhf.data.formats.{info.module}")


def detect_format(path: str | Path) -> str:
    """The format of an existing file, from its extension and its first record's keys
    (parquet: its column names). Raises :class:`FormatError` when nothing matches."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise FormatError("file not found", source=source)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            cols = set(pq.read_schema(path).names)
        except Exception as e:  # pyarrow raises several unrelated types for a bad file
            raise FormatError(f"not a readable parquet file: {e}", source=source) from None
        for name in _PARQUET_DETECT_ORDER:
            if get_format(name).matches(cols):
                return name
        raise FormatError(
            f"cannot tell the format from the columns {sorted(cols)}; pass --from "
            f"(known formats: {', '.join(FORMATS)})",
            source=source,
        )
    if suffix not in (".json", ".jsonl"):
        raise FormatError(
            f"cannot tell the format from the extension {suffix or '(none)'!r}: use .jsonl, "
            ".json or .parquet, or pass --from",
            source=source,
        )
    from mmrlhf.data.formats._common import first_json_object

    first = first_json_object(path)
    if first is None:
        raise FormatError("has no JSON object to detect the format from", source=source)
    for name in _JSON_DETECT_ORDER:
        if get_format(name).matches(first):
            return name
    raise FormatError(
        f"cannot tell the format from the keys {sorted(first)}; pass --from "
        f"(known formats: {', '.join(FORMATS)})",
        source=source,
    )


def format_for_output(path: str | Path, name: str = "auto") -> str:
    """The format to write ``path`` in: ``name``, or for ``auto`` our own format by extension."""
    if name != "auto":
        return name
    suffix = Path(path).suffix.lower()
    if suffix == ".jsonl":
        return "jsonl"
    if suffix == ".parquet":
        return "parquet"
    raise FormatError(
        f"cannot choose an output format for extension {suffix or '(none)'!r}: name one "
        f"({', '.join(format_names(writable=True))})",
        source=str(path),
    )
