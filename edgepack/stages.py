"""Where a build's time goes: each stage (a conversion route, calibration, the sensitivity pass, the
pruning probe, distillation, measuring, packaging) timed on the wall clock and kept in order.

    clock = StageClock()
    with clock.stage("convert", "onnx -> tflite"):
        ...
    clock.times  # (StageTime("convert", 12.3, "onnx -> tflite"),)

A stage that runs in a worker process is timed there and added here with ``add`` (the times travel
with the worker's result). Thread-safe: side-by-side builds add to one clock.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class StageTime:
    stage: str  # "convert", "calibrate", "sensitivity", "prune probe", "distill", "measure", "package", ...
    seconds: float
    detail: str = ""  # what it worked on: "onnx -> tflite", "tflite int8", "prune 30%"

    def to_dict(self) -> dict[str, Any]:
        return {"stage": self.stage, "seconds": round(self.seconds, 3), "detail": self.detail}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> StageTime:
        return cls(str(data["stage"]), float(data["seconds"]), str(data.get("detail") or ""))


class StageClock:
    def __init__(self) -> None:
        self._times: list[StageTime] = []
        self._lock = threading.Lock()

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        """Time the block as stage ``name`` (recorded even when the block raises: the time was spent)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add(StageTime(name, time.perf_counter() - start, detail))

    def add(self, *times: StageTime) -> None:
        with self._lock:
            self._times.extend(times)

    @property
    def times(self) -> tuple[StageTime, ...]:
        with self._lock:
            return tuple(self._times)


def totals(times: tuple[StageTime, ...] | list[StageTime]) -> dict[str, float]:
    """Seconds per stage name, in the order the stages first ran."""
    out: dict[str, float] = {}
    for t in times:
        out[t.stage] = out.get(t.stage, 0.0) + t.seconds
    return out
