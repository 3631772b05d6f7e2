"""A persistent cache of judge completions in SQLite.

Judging a benchmark with a hosted model costs money and minutes, and an evaluation is re-run
often (a new metric, a crashed report, a second model compared against the same references).
The cache makes re-running the same evaluation cost zero requests: the key is the SHA-256 of the
model name, the canonical JSON of the chat messages and the sampling parameters, the value is
the raw completion text, so any change to the prompt or the sampling re-asks the judge while an
identical request is answered locally.

Only successful completions are stored (the caller puts them after a valid reply); errors are
never cached, so a transient outage does not turn into permanent failures. Secrets never enter
a key: the caller passes only the model, the messages and the sampling parameters.

One SQLite connection is shared by the threads of a judge and guarded by a lock (SQLite
serialises writes anyway); WAL mode and a busy timeout let several processes share one file.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    completion TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def cache_key(model: str, messages: Sequence[Mapping[str, Any]], params: Mapping[str, Any]) -> str:
    """SHA-256 hex of (model, messages, sampling params) in canonical JSON.

    Canonical (sorted keys, no whitespace, UTF-8 kept) so that the same request built twice,
    in another process or with dict keys in another order, gets the same key.
    """
    payload = {"model": model, "messages": list(messages), "params": dict(params)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class JudgeCache:
    """Completion texts by :func:`cache_key`, in one SQLite file; safe across threads."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # check_same_thread=False: the judge's worker threads share this connection, and the
        # lock makes every use of it exclusive.
        self._conn = sqlite3.connect(
            str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None
        )
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.execute(_SCHEMA)

    def get(self, key: str) -> str | None:
        """The cached completion for ``key``, or None."""
        with self._lock:
            row = self._conn.execute(
                "SELECT completion FROM completions WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else row[0]

    def put(self, key: str, model: str, completion: str) -> None:
        """Store a successful completion (callers must never store an error)."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO completions (key, model, completion, created) "
                "VALUES (?, ?, ?, ?)",
                (key, model, completion, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        """Close the connection (the data is already committed: autocommit mode)."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> JudgeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JudgeCache({str(self.path)!r})"
