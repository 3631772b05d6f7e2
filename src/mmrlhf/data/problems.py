"""Problems found while reading data, and the report that collects them.

Every problem is a :class:`DataError` (a :class:`~mmrlhf.data.record.RecordError` with a
``kind``), printed as ``file:line: field: message``. The ``kind`` is a short stable name
(``missing_media``, ``duplicate_id``...) so that reports can count problems per kind and tests
can assert on them without matching message text.

A :class:`Notice` is something worth telling the user that is *not* an error (a query id reused
for a different query, an unrecognised optional column): it never drops or fails a record, but
it is kept in the report so that nothing changes silently.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmrlhf.data.record import RecordError

# Problem kinds. Kept as constants so a typo in one place is a NameError, not a new kind.
BAD_JSON = "bad_json"
INVALID_RECORD = "invalid_record"
MISSING_MEDIA = "missing_media"
BAD_MEDIA = "bad_media"
EMPTY_RESPONSE = "empty_response"
TOO_FEW_RESPONSES = "too_few_responses"
NO_PREFERENCE = "no_preference"
SCORE_OUT_OF_RANGE = "score_out_of_range"
BAD_RANKING = "bad_ranking"
BAD_PREFERENCE = "bad_preference"
DUPLICATE_ID = "duplicate_id"
INCOMPLETE_GROUP = "incomplete_group"
UNKNOWN_FORMAT = "unknown_format"
UNREADABLE_FILE = "unreadable_file"


class DataError(RecordError):
    """A :class:`RecordError` that also says what kind of problem it is."""

    def __init__(
        self,
        field: str,
        message: str,
        kind: str = INVALID_RECORD,
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        self.kind = kind
        super().__init__(field, message, source=source, line=line)

    def located(self, source: str, line: int | None) -> DataError:
        # Overridden so that locating a DataError keeps its kind (the base returns a RecordError).
        return DataError(self.field, self.message, kind=self.kind, source=source, line=line)


def kind_of(err: RecordError) -> str:
    """The problem kind of any RecordError; plain ones (schema errors) are ``invalid_record``."""
    return getattr(err, "kind", INVALID_RECORD)


def as_data_error(err: RecordError, source: str, line: int | None) -> DataError:
    """``err`` as a located :class:`DataError` (keeps a location that is already there)."""
    src = err.source if err.source is not None else source
    ln = err.line if err.line is not None else line
    return DataError(err.field, err.message, kind=kind_of(err), source=src, line=ln)


@dataclass
class Notice:
    """Something the user should know about that does not make a record bad."""

    field: str
    message: str
    kind: str
    source: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}: " if self.source is not None else ""
        return f"{where}{self.field}: {self.message}"


@dataclass
class LoadReport:
    """What a load (or a validation) saw: good and bad records, every problem and notice.

    ``records_bad`` counts records (or, for flat pair files, rows) that were rejected; one bad
    record can carry several problems, all of which are listed in ``problems``.
    """

    source: str = ""
    format: str = ""
    records_ok: int = 0
    records_bad: int = 0
    problems: list[DataError] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """Number of problems per kind."""
        return dict(Counter(p.kind for p in self.problems))

    @property
    def ok(self) -> bool:
        return not self.problems

    def messages(self) -> list[str]:
        return [str(p) for p in self.problems]

    def summary(self) -> str:
        total = self.records_ok + self.records_bad
        parts = [f"{total} records: {self.records_ok} ok, {self.records_bad} bad"]
        if self.problems:
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.counts.items()))
            parts.append(f"{len(self.problems)} problems ({kinds})")
        if self.notices:
            parts.append(f"{len(self.notices)} notices")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "records_ok": self.records_ok,
            "records_bad": self.records_bad,
            "counts": self.counts,
            "problems": self.messages(),
            "notices": [str(n) for n in self.notices],
            "notice_counts": dict(Counter(n.kind for n in self.notices)),
        }

    def write(self, path: str | Path) -> None:
        """Write the report as JSON (atomically)."""
        from mmrlhf.data.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n")
