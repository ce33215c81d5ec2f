"""Append-only records of measurements, so that nothing is measured twice.

One JSON object per line in ``<cache>/records.jsonl`` (``~/.cache/edgepack`` unless ``--cache DIR``),
keyed by what was measured: the artifact's sha256, the device's identity (profile name and host key
fingerprint, or "local"), the runtime, the thread count, the harness version and the purpose (a
latency, the on-device accuracy check, a per-op profile). A build killed
midway loses at most the measurement in flight: every record is flushed and fsynced as it is written.
A line that cannot be a record (torn by a crash mid-write, written by another version, not UTF-8) is
skipped on reading and counted (``skipped``): a damaged line costs its measurement, never the cache.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path
from typing import Any

from edgepack.strict_json import dumps


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgepack"


class Purpose(str, Enum):
    """What a measurement is for: each is recorded and counted apart."""

    LATENCY = "latency"  # timing a candidate (search and confirmation rounds)
    ACCURACY = "accuracy"  # the held-out samples through the chosen artifact on the board
    OP_PROFILE = "op-profile"  # the chosen artifact's per-op breakdown

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RecordKey:
    artifact_sha256: str
    device: str  # profile name + host key fingerprint, e.g. "rpi4@SHA256:abc..." or "host@local"
    runtime: str  # "tflite" | "onnxruntime" | "auto"
    threads: int
    harness_version: str
    repeat: int = 0  # 1, 2, ...: the same thing measured again, to see through the device's noise
    purpose: str = "latency"  # Purpose: what the measurement served

    def as_tuple(self) -> tuple[str, str, str, int, str, int, str]:
        return (self.artifact_sha256, self.device, self.runtime, self.threads, self.harness_version, self.repeat,
                str(self.purpose))  # a Purpose hashes by its name, the text by its value

    @classmethod
    def parse(cls, data: Any) -> RecordKey:
        """A key as written by ``Records.add``; TypeError for anything else (other fields, other types)."""
        key = cls(**data) if isinstance(data, dict) else None
        if key is None or not all(isinstance(getattr(key, f.name), int if f.type == "int" else str)
                                  and not isinstance(getattr(key, f.name), bool) for f in fields(cls)):
            raise TypeError("not a record key")
        return key


class Records:
    """The store. ``get`` answers from memory; ``add`` appends one line and syncs it to disk."""

    def __init__(self, cache_dir: str | Path | None = None) -> None:
        self.path = Path(cache_dir or default_cache_dir()) / "records.jsonl"
        self._index: dict[tuple[str, str, str, int, str, int, str], dict[str, Any]] = {}
        self._lock = threading.Lock()  # a pool's boards report from their own threads
        self.skipped = 0  # lines that could not be read as records
        for key, result in self._read():
            self._index[key.as_tuple()] = result

    def _read(self) -> Iterator[tuple[RecordKey, dict[str, Any]]]:
        if not self.path.exists():
            return
        with self.path.open("rb") as fh:
            for line in fh:
                if not line.strip():
                    continue
                try:
                    record = json.loads(line.decode("utf-8"))
                    key, result = RecordKey.parse(record["key"]), record["result"]
                    if not isinstance(result, dict):
                        raise TypeError("not a result")
                except (UnicodeDecodeError, ValueError, TypeError, KeyError):  # torn, foreign or damaged
                    self.skipped += 1
                    continue
                yield key, result

    def get(self, key: RecordKey) -> dict[str, Any] | None:
        return self._index.get(key.as_tuple())

    def add(self, key: RecordKey, result: dict[str, Any]) -> None:
        """Append one record and fsync it. A full disk (ENOSPC/EDQUOT) truncates the file back to what
        it held, so no torn line is left, and raises :class:`~edgepack.disk.DiskFullError`."""
        from edgepack.disk import naming_full_disk

        line = dumps({"key": {**asdict(key), "purpose": str(key.purpose)}, "result": result})
        with self._lock, naming_full_disk(self.path.parent):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a+b", buffering=0) as fh:
                start = fh.seek(0, os.SEEK_END)
                data = line.encode() + b"\n"
                if start > 0:  # after a torn line, start on a line of our own
                    fh.seek(-1, os.SEEK_END)
                    data = data if fh.read(1) == b"\n" else b"\n" + data
                try:
                    view = memoryview(data)
                    while view:
                        view = view[fh.write(view) or 0:]
                    os.fsync(fh.fileno())
                except OSError:
                    fh.truncate(start)
                    raise
            self._index[key.as_tuple()] = result

    def __len__(self) -> int:
        return len(self._index)
