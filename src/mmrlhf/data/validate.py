"""``validate``: read a file completely and report every problem, located and counted.

Unlike a strict load, validation never stops at the first problem: every record is read, every
problem of every record is listed as ``file:line: field: what is wrong``, and a summary counts
good and bad records and problems per kind. Problems (kind in brackets):

- unreadable JSON line or array element [bad_json]; a field of the wrong type [invalid_record];
- missing image/video file [missing_media], image that does not decode [bad_media];
- empty response text [empty_response];
- K < 2 for ``task="preference"`` (K < 1 for ``sft``) [too_few_responses]; a preference record
  with neither ranking nor preferences [no_preference];
- score outside 1-5 [score_out_of_range]; ranking that is not a ranking of the responses
  [bad_ranking]; preference index out of range or self-comparison [bad_preference];
- duplicate id, naming the line where it first appeared [duplicate_id];
- a query of a pair file dropped because one of its rows is bad [incomplete_group];
- unknown or undetectable format, missing file [unknown_format].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrlhf.data.checks import TASKS
from mmrlhf.data.io import iter_records
from mmrlhf.data.problems import DataError, LoadReport


@dataclass
class ValidationResult:
    """Outcome of :func:`validate`: the full :class:`LoadReport` plus convenience views."""

    report: LoadReport = field(default_factory=LoadReport)
    task: str = "preference"

    @property
    def ok(self) -> bool:
        return self.report.ok

    @property
    def problems(self) -> list[DataError]:
        return self.report.problems

    @property
    def counts(self) -> dict[str, int]:
        return self.report.counts

    @property
    def records_ok(self) -> int:
        return self.report.records_ok

    @property
    def records_bad(self) -> int:
        return self.report.records_bad

    def lines(self) -> list[str]:
        """Every problem as ``file:line: field: message``, in file order."""
        return self.report.messages()

    def summary(self) -> str:
        return self.report.summary()

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "ok": self.ok, **self.report.to_dict()}


def validate(
    path: str | Path,
    format: str = "auto",
    media_root: str | Path | None = None,
    task: str = "preference",
    check_media: bool = True,
    **options: Any,
) -> ValidationResult:
    """Check every record of ``path`` for ``task`` (``preference``, ``sft`` or ``prompts``).

    Never raises for a data problem: an unknown format or missing file is reported as a
    problem of the file itself (``file: -: ...``).
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, got {task!r}")
    result = ValidationResult(task=task)
    try:
        for _ in iter_records(
            path,
            format=format,
            media_root=media_root,
            mode="skip",
            check_media=check_media,
            report=result.report,
            task=task,
            **options,
        ):
            pass
    except DataError:
        pass  # already in the report (unknown format / unreadable file)
    result.report.problems.sort(key=lambda p: p.line or 0)
    return result
