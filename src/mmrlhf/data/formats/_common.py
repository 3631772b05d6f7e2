"""Shared machinery of the format adapters: JSON row reading with line numbers, atomic writes,
grouping one-pair-per-row files into records, and small conversions.

Adapters yield ``(line, item)`` where ``item`` is a :class:`Record`, a :class:`RecordError`
(the record at that line is bad) or a :class:`Notice`. ``line`` is the 1-based line of the
record in the file (JSON arrays: the line where the element starts; parquet: the row number).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrlhf.data import problems as P
from mmrlhf.data.pairs import Pair, derive_pairs
from mmrlhf.data.problems import DataError, Notice
from mmrlhf.data.record import (
    Facts,
    ImageRef,
    Preference,
    Record,
    RecordError,
    Response,
    Turn,
    VideoRef,
)

Item = Record | RecordError | Notice
ReadResult = Iterator[tuple[int, Item]]

IMAGE_TAG = "<image>"
VIDEO_TAG = "<video>"


# ----------------------------------------------------------------------------------------------
# writing


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path next to ``path``; renamed onto ``path`` only if the block succeeds, so a
    crash never leaves a half-written file where a good one was (or is expected)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write one JSON object per line, atomically; returns the number of rows."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json_array(rows: Iterable[dict[str, Any]], path: str | Path) -> int:
    """Write a JSON array with one element per line (readable, and errors get useful lines)."""
    items = [json.dumps(r, ensure_ascii=False) for r in rows]
    body = "[\n" + ",\n".join(items) + ("\n]\n" if items else "]\n")
    atomic_write_text(path, body)
    return len(items)


# ----------------------------------------------------------------------------------------------
# reading JSON


def iter_json_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    """The objects of a JSONL file or of a JSON array file, with their 1-based line numbers.

    Bad JSON is yielded as a ``bad_json`` error at its line. In a JSONL file reading goes on at
    the next line; in an array file nothing after the error can be located, so reading stops.
    """
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096).lstrip()
    except (OSError, UnicodeDecodeError) as e:
        yield 0, DataError("-", f"cannot read file: {e}", kind=P.UNREADABLE_FILE)
        return
    if head.startswith("["):
        yield from _iter_json_array(path)
        return
    try:
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    yield (
                        n,
                        DataError(
                            "-", f"is not valid JSON: {e.msg} (column {e.colno})", kind=P.BAD_JSON
                        ),
                    )
                    continue
                if not isinstance(obj, dict):
                    yield (
                        n,
                        DataError(
                            "-", f"must be a JSON object, got {type(obj).__name__}", kind=P.BAD_JSON
                        ),
                    )
                    continue
                yield n, obj
    except UnicodeDecodeError as e:
        yield 0, DataError("-", f"is not UTF-8 text: {e}", kind=P.UNREADABLE_FILE)


def _iter_json_array(path: Path) -> Iterator[tuple[int, dict[str, Any] | DataError]]:
    text = path.read_text(encoding="utf-8")
    dec = json.JSONDecoder()
    pos = text.index("[") + 1
    line, counted = 1, 0

    def line_at(p: int) -> int:
        nonlocal line, counted
        line += text.count("\n", counted, p)
        counted = p
        return line

    def skip_ws(p: int) -> int:
        while p < len(text) and text[p] in " \t\r\n":
            p += 1
        return p

    pos = skip_ws(pos)
    if pos < len(text) and text[pos] == "]":
        return
    while True:
        pos = skip_ws(pos)
        try:
            obj, end = dec.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            yield line_at(e.pos), DataError("-", f"is not valid JSON: {e.msg}", kind=P.BAD_JSON)
            return
        ln = line_at(pos)
        if isinstance(obj, dict):
            yield ln, obj
        else:
            yield (
                ln,
                DataError("-", f"must be a JSON object, got {type(obj).__name__}", kind=P.BAD_JSON),
            )
        pos = skip_ws(end)
        if pos < len(text) and text[pos] == ",":
            pos += 1
            continue
        if pos < len(text) and text[pos] == "]":
            return
        yield line_at(pos), DataError("-", "expected ',' or ']' in the JSON array", kind=P.BAD_JSON)
        return


def first_json_object(path: str | Path) -> dict[str, Any] | None:
    """The first readable object of a JSON/JSONL file (for format detection)."""
    for _line, obj in iter_json_rows(path):
        if isinstance(obj, dict):
            return obj
    return None


def guarded(rows: Iterable[tuple[int, Any]], parse: Any) -> ReadResult:
    """Apply ``parse(obj) -> Record`` to each row; errors become items instead of exceptions.

    Only :class:`RecordError` and the plain type errors of malformed input are caught: anything
    else is a bug in the adapter and must surface.
    """
    for line, obj in rows:
        if isinstance(obj, RecordError):
            yield line, obj
            continue
        try:
            yield line, parse(obj)
        except RecordError as e:
            yield line, e
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            yield line, DataError("-", f"cannot be read: {type(e).__name__}: {e}")


# ----------------------------------------------------------------------------------------------
# small field helpers


def req_str(d: dict[str, Any], key: str, path: str | None = None) -> str:
    v = d.get(key)
    if v is None:
        raise RecordError(path or key, "is required")
    if not isinstance(v, str):
        raise RecordError(path or key, f"must be a string, got {type(v).__name__}")
    return v


def opt_float(v: Any, path: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise RecordError(path, f"must be a number, got {type(v).__name__}")
    return float(v)


def strip_tags(text: str, tags: tuple[str, ...] = (IMAGE_TAG, VIDEO_TAG)) -> str:
    """Remove ``<image>``/``<video>`` placeholders (and the line break that usually follows),
    since our records keep media out of the text."""
    for tag in tags:
        text = text.replace(tag + "\n", "").replace("\n" + tag, "").replace(tag, "")
    return text.strip()


def category_of(path: str | None) -> str | None:
    """The first component of a relative media path (MM-RLHF's category: ``mcq/073712.png``)."""
    if not path or "/" not in path.strip("/"):
        return None
    return path.strip("/").split("/")[0]


def image_ref(v: Any, path: str) -> ImageRef:
    """An image given as a path string, ``{path, bytes}`` or our ``{path, bytes_b64}``."""
    if isinstance(v, dict) and isinstance(v.get("bytes"), str):
        # Some JSON exports carry bytes as base64 under "bytes".
        v = {"path": v.get("path"), "bytes_b64": v["bytes"]}
    return ImageRef.from_dict(v, path)


def image_out(ref: ImageRef) -> str | dict[str, Any]:
    """An image for a JSON-based format: its path when it has one, else embedded base64."""
    if ref.path is not None and ref.data is None:
        return ref.path
    return ref.to_dict()


def media_prefix(record: Record) -> str:
    """The ``<image>``/``<video>`` tags that ShareGPT-style formats put before the query."""
    if record.video is not None:
        return VIDEO_TAG
    return IMAGE_TAG * len(record.images)


def text_hash(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode("utf-8")).hexdigest()[:12]


def pairs_for_writing(
    record: Record, strategy: str = "all", ties: str = "skip", margin: str = "given"
) -> list[Pair]:
    """The pairs a one-pair-per-row writer emits for ``record``."""
    return derive_pairs(record, strategy=strategy, ties=ties, margin=margin)


# ----------------------------------------------------------------------------------------------
# grouping one-pair-per-row files into records


@dataclass
class PairRow:
    """One row of a pair-per-row file, parsed. Rows of one query become one record."""

    id: str | None
    conversation: list[Turn]
    chosen: Response
    rejected: Response
    images: list[ImageRef] = field(default_factory=list)
    video: VideoRef | None = None
    chosen_index: int | None = None
    rejected_index: int | None = None
    is_tie: bool = False
    margin: float | None = None
    pref_meta: dict[str, Any] = field(default_factory=dict)
    category: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    facts: Facts | None = None

    def query_key(self) -> tuple:
        """What makes two rows the same query: context, query text, media."""
        ims = tuple(im.path or hashlib.sha1(im.data or b"").hexdigest() for im in self.images)
        conv = tuple((t.role, t.text) for t in self.conversation)
        return (conv, ims, self.video.path if self.video else None)


class RowError(RecordError):
    """A bad row whose query id is known, so the rest of its query can be dropped too."""

    def __init__(self, err: RecordError, group_id: str | None) -> None:
        self.group_id = group_id
        self.kind = P.kind_of(err)
        super().__init__(err.field, err.message, source=err.source, line=err.line)


@dataclass
class _Group:
    id: str
    line: int
    rows: list[tuple[int, PairRow]] = field(default_factory=list)
    bad_lines: list[int] = field(default_factory=list)


def _merge_response(into: Response, new: Response) -> None:
    """Fill what ``into`` lacks from another occurrence of the same response text."""
    for name in ("source", "critique", "reward", "ref_logp"):
        if getattr(into, name) is None and getattr(new, name) is not None:
            setattr(into, name, getattr(new, name))
    for k, v in new.meta.items():
        into.meta.setdefault(k, v)


def _build(group: _Group) -> Record:
    rows = group.rows
    responses: list[Response | None] = []
    index_of: dict[str, int] = {}  # response text -> index (rows without index columns)
    line_of: dict[str, int] = {}  # response text -> first line it appeared on
    use_index = all(r.chosen_index is not None and r.rejected_index is not None for _, r in rows)
    prefs: list[Preference] = []
    for line, row in rows:
        idx = []
        for side, resp, given in (
            ("chosen", row.chosen, row.chosen_index),
            ("rejected", row.rejected, row.rejected_index),
        ):
            if use_index:
                assert given is not None
                if given < 0:
                    raise DataError(f"{side}_index", f"must be >= 0, got {given}").located("", line)
                while len(responses) <= given:
                    responses.append(None)
                held = responses[given]
                if held is not None and held.text != resp.text:
                    raise DataError(
                        f"{side}_index",
                        f"response {given} of query {group.id!r} has a different text on "
                        f"line {line_of.get(held.text, group.line)}",
                        kind=P.BAD_PREFERENCE,
                    ).located("", line)
                i = given
            else:
                i = index_of.setdefault(resp.text, len(responses))
                if i == len(responses):
                    responses.append(None)
            line_of.setdefault(resp.text, line)
            held = responses[i]
            if held is None:
                responses[i] = dataclasses.replace(resp, meta=dict(resp.meta))
            else:
                _merge_response(held, resp)
            idx.append(i)
        # A pair-level value that differs from what the response already holds (the same text
        # judged with a different reason in another pair) is kept on the preference.
        meta = dict(row.pref_meta)
        for side, i, resp in (("chosen", idx[0], row.chosen), ("rejected", idx[1], row.rejected)):
            held = responses[i]
            assert held is not None
            if resp.meta.get("reason") != held.meta.get("reason"):
                meta[f"{side}_reason"] = resp.meta.get("reason", "")
            if resp.ref_logp is not None and resp.ref_logp != held.ref_logp:
                meta[f"reference_{side}_logp"] = resp.ref_logp
        prefs.append(Preference(idx[0], idx[1], row.is_tie, row.margin, meta))
    # Indices that no pair named (a writer that skipped some responses) are closed up.
    keep = [i for i, r in enumerate(responses) if r is not None]
    remap = {old: new for new, old in enumerate(keep)}
    for p in prefs:
        p.chosen, p.rejected = remap[p.chosen], remap[p.rejected]
    first = rows[0][1]
    meta: dict[str, Any] = {}
    for _, r in rows:
        for k, v in r.meta.items():
            meta.setdefault(k, v)
    category = next((r.category for _, r in rows if r.category), None)
    if category is None:
        category = category_of(first.video.path if first.video else None) or category_of(
            first.images[0].path if first.images else None
        )
    return Record(
        id=group.id,
        conversation=first.conversation,
        responses=[responses[i] for i in keep],  # type: ignore[misc]
        images=first.images,
        video=first.video,
        preferences=prefs,
        facts=first.facts,
        category=category,
        meta=meta,
    )


def group_pair_rows(rows: Iterable[tuple[int, PairRow | RecordError]]) -> ReadResult:
    """Group one-pair-per-row input into records: one per query, identical response texts
    merged, each row an explicit :class:`Preference`.

    Rows belong to the same query when they share ``id`` (or, without ids, the same context,
    query and media). An id that comes back with a *different* query (VL-RewardBench reuses
    some ids for different images) starts a new record ``<id>#2`` and is reported as a notice.
    A bad row drops its whole query (with a located ``incomplete_group`` problem), because a
    query with a missing pair would bias per-query metrics such as Acc+.
    Everything is read before anything is yielded, since rows of a query need not be adjacent.
    """
    groups: dict[str, _Group] = {}
    by_id: dict[str, list[tuple[tuple, str]]] = {}
    out: list[tuple[int, Item]] = []
    pending_bad: list[tuple[str, int]] = []
    for line, row in rows:
        if isinstance(row, RecordError):
            out.append((line, row))
            gid = getattr(row, "group_id", None)
            if gid is not None:
                pending_bad.append((gid, line))
            continue
        key = row.query_key()
        base = row.id if row.id is not None else "q" + text_hash(repr(key))
        known = by_id.setdefault(base, [])
        gid = next((g for k, g in known if k == key), None)
        if gid is None:
            gid = base if not known else f"{base}#{len(known) + 1}"
            if known:
                out.append(
                    (
                        line,
                        Notice(
                            "id",
                            f"id {base!r} was used on line {groups[known[0][1]].line} for a "
                            f"different query (other media or prompt); this query is {gid!r}",
                            kind="id_reused",
                        ),
                    )
                )
            known.append((key, gid))
            groups[gid] = _Group(gid, line)
        groups[gid].rows.append((line, row))
    for gid, line in pending_bad:
        # A bad row names its query by the raw id: every query under that id is tainted.
        for _k, g in by_id.get(gid, []):
            groups[g].bad_lines.append(line)
    for g in groups.values():
        if g.bad_lines:
            out.append(
                (
                    g.line,
                    DataError(
                        "id",
                        f"query {g.id!r} dropped: its row(s) on line(s) "
                        f"{', '.join(map(str, sorted(set(g.bad_lines))))} could not be read",
                        kind=P.INCOMPLETE_GROUP,
                    ),
                )
            )
            continue
        try:
            out.append((g.line, _build(g)))
        except RecordError as e:
            out.append((e.line or g.line, DataError(e.field, e.message, kind=P.kind_of(e))))
    out.sort(key=lambda t: t[0])
    yield from out


def parse_rows(
    rows: Iterable[tuple[int, dict[str, Any] | RecordError]], parse: Any
) -> Iterator[tuple[int, PairRow | RecordError]]:
    """Apply ``parse(obj) -> PairRow`` to each row, keeping the row's id on errors."""
    for line, obj in rows:
        if isinstance(obj, RecordError):
            yield line, obj
            continue
        try:
            yield line, parse(obj)
        except (RecordError, KeyError, TypeError, ValueError, AttributeError) as e:
            err = (
                e
                if isinstance(e, RecordError)
                else DataError("-", f"cannot be read: {type(e).__name__}: {e}")
            )
            rid = obj.get("id") if isinstance(obj, dict) else None
            yield line, RowError(err, None if rid is None else str(rid))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def image_paths_for_export(record: Record, out_path: str | Path) -> list[str]:
    """Image paths for formats that can only reference files (LLaMA-Factory, ms-swift).

    An image that has a path keeps it (relative to the same media root as the input). An image
    that exists only as bytes is written once to ``<out stem>_media/`` next to the output and
    referenced relative to the output's folder - those tools resolve paths against their
    dataset/media directory, which for a generated file is where it lies.
    """
    out: list[str] = []
    for i, im in enumerate(record.images):
        if im.path is not None:
            out.append(im.path)
            continue
        assert im.data is not None
        from PIL import Image

        try:
            import io as _io

            with Image.open(_io.BytesIO(im.data)) as pil:
                ext = (pil.format or "png").lower()
        except Exception:  # undecodable bytes are still exported: validation reports them
            ext = "bin"
        out_path = Path(out_path)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in record.id)
        rel = Path(f"{out_path.stem}_media") / f"{safe}_{i}.{ext}"
        target = out_path.parent / rel
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                tmp.write_bytes(im.data)
        out.append(rel.as_posix())
    return out


def writable_pairs(
    record: Record, strategy: str = "all", ties: str = "skip", margin: str = "given"
) -> list[Pair]:
    """Pairs for formats that have no notion of a tie (TRL, LLaMA-Factory, ms-swift): a tie
    pair written there would read as a real preference, so tie pairs are never written."""
    return [p for p in pairs_for_writing(record, strategy, ties, margin) if not p.is_tie]


def export_media(record: Record, out: Path) -> dict[str, Any]:
    """The ``images`` / ``videos`` path lists that LLaMA-Factory and ms-swift rows carry."""
    media: dict[str, Any] = {}
    if record.images:
        media["images"] = image_paths_for_export(record, out)
    if record.video is not None:
        media["videos"] = [record.video.path]
    return media
