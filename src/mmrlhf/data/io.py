"""Loading and saving records in any supported format, with located, counted problems.

``load_records`` / ``iter_records`` read a file through its format adapter
(:mod:`mmrlhf.data.formats`), check every record (:func:`~mmrlhf.data.checks.record_problems`
plus duplicate ids) and either stop at the first problem (``mode="strict"``: raises a
:class:`~mmrlhf.data.problems.DataError` printed as ``file:line: field: message``) or skip the
bad record and go on (``mode="skip"``). Either way every problem lands in a
:class:`~mmrlhf.data.problems.LoadReport`: nothing is dropped silently.

``save_records`` writes records in any writable format; every write goes to a temporary file
that replaces the target only when complete.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from mmrlhf.data import problems as P
from mmrlhf.data.checks import record_problems
from mmrlhf.data.formats import FormatError, detect_format, format_for_output, get_format
from mmrlhf.data.formats._common import atomic_path, atomic_write_text
from mmrlhf.data.media import MediaError, image_bytes
from mmrlhf.data.problems import DataError, LoadReport, Notice, as_data_error
from mmrlhf.data.record import ImageRef, Record, RecordError

MODES = ("strict", "skip")

__all__ = [
    "atomic_path",
    "atomic_write_text",
    "embed_images",
    "iter_records",
    "load_records",
    "save_records",
]


def _default_root(path: Path, media_root: str | Path | None) -> Path:
    # Datasets keep their media next to (or under) the data file far more often than under
    # the current directory, so the file's folder is the default media root.
    return Path(media_root) if media_root is not None else path.parent


def iter_records(
    path: str | Path,
    format: str = "auto",
    media_root: str | Path | None = None,
    mode: str = "strict",
    check_media: bool = True,
    report: LoadReport | None = None,
    task: str | None = None,
    **options: Any,
) -> Iterator[Record]:
    """Yield the good records of ``path`` one by one (constant memory for line formats; flat
    pair formats are grouped, so they are read whole first).

    ``report`` (created if not given) is filled as reading goes: pass one in to see the counts
    afterwards. ``task`` adds the task rules of the validator (``preference``: K >= 2 and a
    label; ``sft``: K >= 1; ``prompts``: none); ``None`` applies only task-independent checks.
    ``options`` go to the format's reader. Raises :class:`DataError` in strict mode, and in
    both modes for a file that cannot be read at all (unknown format, missing file).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    path = Path(path)
    source = str(path)
    report = report if report is not None else LoadReport()
    report.source = source
    try:
        fmt = detect_format(path) if format == "auto" else format
        module = get_format(fmt)
        if not path.is_file():
            raise FormatError("file not found", source=source)
    except FormatError as e:
        err = e.located(source, None)
        report.problems.append(err)
        raise err from None
    if not hasattr(module, "read"):
        err = FormatError(f"format {fmt!r} cannot be read", source=source)
        report.problems.append(err)
        raise err
    report.format = fmt
    root = _default_root(path, media_root)
    first_line: dict[str, int] = {}
    for line, item in module.read(path, media_root=root, **options):
        if isinstance(item, Notice):
            item.source, item.line = source, line
            report.notices.append(item)
            continue
        if isinstance(item, RecordError):
            found = [as_data_error(item, source, line)]
        else:
            found = [
                as_data_error(p, source, line)
                for p in record_problems(item, task, root, check_media)
            ]
            if item.id in first_line:
                found.append(
                    DataError(
                        "id",
                        f"duplicate id {item.id!r} (first seen on line {first_line[item.id]})",
                        kind=P.DUPLICATE_ID,
                        source=source,
                        line=line,
                    )
                )
            else:
                first_line[item.id] = line
        if found:
            report.records_bad += 1
            report.problems.extend(found)
            if mode == "strict":
                raise found[0]
            continue
        report.records_ok += 1
        yield item


def load_records(
    path: str | Path,
    format: str = "auto",
    media_root: str | Path | None = None,
    mode: str = "strict",
    check_media: bool = True,
    report_path: str | Path | None = None,
    task: str | None = None,
    **options: Any,
) -> tuple[list[Record], LoadReport]:
    """Read every good record of ``path``; returns ``(records, report)``.

    - ``format``: a name from :data:`mmrlhf.data.formats.FORMATS` or ``"auto"`` (extension +
      first record's keys, or parquet column names).
    - ``media_root``: where relative image/video paths point; default: the file's folder.
    - ``mode``: ``"strict"`` raises the first problem as :class:`DataError`
      (``file:line: field: message``); ``"skip"`` leaves bad records out and counts them.
    - ``check_media``: check that images exist and decode, videos exist. ``False`` lets
      text-only work proceed on files whose media are elsewhere.
    - ``report_path``: also write the report as JSON there (in strict mode too, before raising).
    - ``task``: add the validator's task rules (see :func:`iter_records`).
    """
    report = LoadReport()
    try:
        records = list(
            iter_records(
                path,
                format=format,
                media_root=media_root,
                mode=mode,
                check_media=check_media,
                report=report,
                task=task,
                **options,
            )
        )
    finally:
        if report_path is not None:
            report.write(report_path)
    return records, report


def embed_images(record: Record, media_root: str | Path | None = None) -> Record:
    """A copy of ``record`` whose images carry their bytes (paths kept as provenance).

    Raises :class:`DataError` naming the record and image when a file is missing.
    """
    images = []
    for i, im in enumerate(record.images):
        try:
            images.append(ImageRef(path=im.path, data=image_bytes(im, media_root)))
        except MediaError as e:
            raise DataError(f"images[{i}]", f"record {record.id!r}: {e}", kind=e.kind) from None
    return dataclasses.replace(record, images=images)


def save_records(
    records: Iterable[Record],
    path: str | Path,
    format: str = "auto",
    media_root: str | Path | None = None,
    embed_images: bool = False,
    **options: Any,
) -> int:
    """Write ``records`` to ``path`` in ``format`` (``auto``: ``.jsonl`` -> ``jsonl``,
    ``.parquet`` -> ``parquet``; any other format must be named). Returns the number of rows
    written (records, or pairs for one-pair-per-row formats).

    ``embed_images=True`` reads each image file (relative to ``media_root``, default the
    current directory) and stores its bytes in the output. ``options`` go to the writer:
    pair-per-row formats take ``strategy``, ``ties``, ``margin`` (see
    :func:`~mmrlhf.data.pairs.derive_pairs`; default ``all``/``skip``/``given``).
    """
    fmt = format_for_output(path, format)
    module = get_format(fmt, for_write=True)
    if embed_images:
        root = media_root
        records = (_embed(r, root) for r in records)
    return module.write(records, Path(path), **options)


def _embed(record: Record, root: str | Path | None) -> Record:
    return embed_images(record, root)
