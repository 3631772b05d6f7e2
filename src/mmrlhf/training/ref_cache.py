"""On-disk cache of reference log-probs for preference training.

DPO's reference model never changes during a run, so its log-prob of each (record, response) is
computed once and reused across epochs *and* runs (TRL refuses ``precompute_ref_log_probs`` for
vision datasets; for a VLM the reference forward is as costly as the policy's).

The cache file is keyed by fingerprints of what determines the values:

- the data: SHA-256 of the training file's bytes;
- the reference model: every file of its folder by name and size, plus SHA-256 of the first and
  last 4 MiB of each weights file (hashing a 15 GB checkpoint in full would take minutes; a
  retrained checkpoint differs in those bytes and almost surely in its config/sizes);
- the encoding: maximum length, truncation, and anything else the caller adds.

Entries are ``"record_id\\tresponse_index" -> logp``. Writes are atomic (temp file + rename), so a
killed run leaves the previous complete file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_CHUNK = 4 << 20


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (streamed)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_fingerprint(path: str | Path) -> str:
    """A fingerprint of a saved model folder (see the module docstring for what it covers)."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: reference model folder not found")
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        size = f.stat().st_size
        h.update(f"{rel}\0{size}\0".encode())
        if f.suffix in (".safetensors", ".bin", ".pt") or f.name.endswith(".json"):
            with open(f, "rb") as fh:
                h.update(fh.read(_CHUNK))
                if size > 2 * _CHUNK:
                    fh.seek(size - _CHUNK)
                    h.update(fh.read(_CHUNK))
    return h.hexdigest()


def cache_key(data_fingerprint: str, ref_fingerprint: str, settings: dict[str, Any]) -> str:
    """The cache file's key: a hash of the data, the reference model and the encoding settings."""
    blob = json.dumps(
        {"data": data_fingerprint, "ref": ref_fingerprint, "settings": settings}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class RefLogpCache:
    """``(record_id, response_index) -> reference log-prob``, persisted to ``dir/key.json``."""

    def __init__(self, directory: str | Path, key: str):
        self.path = Path(directory) / f"ref_logps-{key}.json"
        self.values: dict[str, float] = {}
        self.dirty = False
        if self.path.exists():
            self.values = json.loads(self.path.read_text())["values"]

    @staticmethod
    def _k(record_id: str, index: int) -> str:
        return f"{record_id}\t{index}"

    def get(self, record_id: str, index: int) -> float | None:
        return self.values.get(self._k(record_id, index))

    def missing(self, items: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
        return [(r, i) for r, i in items if self._k(r, i) not in self.values]

    def put(self, record_id: str, index: int, value: float) -> None:
        self.values[self._k(record_id, index)] = float(value)
        self.dirty = True

    def __len__(self) -> int:
        return len(self.values)

    def save(self) -> None:
        """Write atomically if anything changed."""
        if not self.dirty:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".ref_logps.", suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            json.dump({"values": self.values}, f)
        os.replace(tmp, self.path)
        self.dirty = False
