"""The artifacts of a batch, built side by side in worker processes (``--jobs``).

Each worker makes its own PlanBuilder from the same ``BuilderSetup`` (the model, the profile, the data,
the cache) and builds whole plans: convert, quantize, prune and distil. The artifact cache makes this
safe: every artifact folder is built under a file lock, so two workers (or two edgepack runs) asked
for the same artifact build it once. A setup that cannot be sent to a worker (a module defined in a
script's ``__main__``) is built here, one plan after another, and said so.

Interrupted (SIGINT/SIGTERM, edgepack.interrupts), ``close()`` does not wait for the running builds: each
worker gets SIGTERM, unwinds its build (onnx2tf's process group ended, temporary folders removed) and
exits; a worker still alive after the grace period, and its children, are killed.
"""

from __future__ import annotations

import multiprocessing
import pickle
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from edgepack import interrupts
from edgepack.compress.plan import CompressionPlan
from edgepack.compress.plan_builder import BuildFailed, BuiltArtifact, PlanBuilder
from edgepack.compress.quantize import Check
from edgepack.data import Dataset
from edgepack.model import ModelHandle
from edgepack.profiles import DeviceProfile


@dataclass(frozen=True)
class BuilderSetup:
    """Everything a PlanBuilder is made of: sent to each worker process."""

    handle: ModelHandle
    profile: DeviceProfile
    calib: Dataset
    eval_data: Dataset
    cache: Path
    calibrated: bool
    max_accuracy_drop: float
    distill_epochs: int
    check: Check

    def builder(self, say: Callable[[str], None]) -> PlanBuilder:
        return PlanBuilder(self.handle, self.profile, self.calib, self.eval_data, self.cache,
                           calibrated=self.calibrated, max_accuracy_drop=self.max_accuracy_drop,
                           distill_epochs=self.distill_epochs, say=say, check=self.check)


#: outcome of one plan: the artifact, or why it could not be built; the lines it said; seconds taken
Built = tuple[BuiltArtifact | BuildFailed, list[str], float]

_worker: PlanBuilder | None = None
_lines: list[str] = []


def _start_worker(setup: BuilderSetup) -> None:
    global _worker
    interrupts.start_worker()
    _worker = setup.builder(_lines.append)


def _build_in_worker(plan: CompressionPlan) -> Built:
    assert _worker is not None
    _lines.clear()
    start = time.perf_counter()
    with interrupts.task():
        try:
            built: BuiltArtifact | BuildFailed = _worker.build(plan)
        except BuildFailed as exc:
            built = exc
    return built, list(_lines), time.perf_counter() - start


class ParallelBuilder:
    """``build(plans)``: each plan's artifact or BuildFailed, in order; up to ``jobs`` at once."""

    def __init__(self, setup: BuilderSetup, jobs: int, say: Callable[[str], None]) -> None:
        self.setup, self.say = setup, say
        self.local = setup.builder(say)  # the source engine and single builds, in this process
        self.jobs = max(1, jobs)
        self.note: str | None = None
        if self.jobs > 1:
            try:
                pickle.dumps(setup)
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                self.jobs = 1
                self.note = f"artifacts built one at a time: the model cannot be sent to a worker process ({exc})"
        self._pool: ProcessPoolExecutor | None = None

    def build(self, plans: list[CompressionPlan]) -> list[BuiltArtifact | BuildFailed]:
        if self.jobs == 1 or len(plans) == 1:
            return [self._here(plan) for plan in plans]
        if self._pool is None:
            # spawn, not fork: this process has ONNX Runtime's and torch's threads running
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(self.setup,))
        self.say(f"building {len(plans)} artifacts side by side ({min(self.jobs, len(plans))} worker processes)")
        with interrupts.held():  # workers start with the signals held, until start_worker
            futures = [self._pool.submit(_build_in_worker, plan) for plan in plans]
        results = []
        for plan, future in zip(plans, futures, strict=True):
            try:
                built, lines, seconds = future.result()
            except BrokenProcessPool:
                if interrupts.received():  # a worker ended by the same signal: the interruption, not a fault
                    raise interrupts.Interrupted(interrupts.received() or 0) from None
                raise
            for line in lines:
                self.say(line)
            self._said(plan, built, seconds)
            results.append(built)
        return results

    def _here(self, plan: CompressionPlan) -> BuiltArtifact | BuildFailed:
        start = time.perf_counter()
        try:
            built: BuiltArtifact | BuildFailed = self.local.build(plan)
        except BuildFailed as exc:
            built = exc
        self._said(plan, built, time.perf_counter() - start)
        return built

    def _said(self, plan: CompressionPlan, built: BuiltArtifact | BuildFailed, seconds: float) -> None:
        label = plan.label.rsplit(" x", 1)[0]
        if isinstance(built, BuildFailed):
            self.say(f"build  {label}: FAILED: {built}")
            return
        drop = "-" if built.accuracy_drop is None else f"{built.accuracy_drop:.2f} pts"
        self.say(f"build  {label}: {built.size_mb:.3f} MB, accuracy drop {drop} ({seconds:.1f} s)")

    def close(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        # called from a `finally`: sys.exc_info() is what is on its way out (a Ctrl-C in the Python API too)
        if interrupts.received() is None and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
            pool.shutdown(cancel_futures=True)
            return
        workers = [(pid, start) for pid, start in interrupts.descendants()
                   if pid in {p.pid for p in multiprocessing.active_children()}]
        pool.shutdown(wait=False, cancel_futures=True)
        # each worker and what it started, found while the worker still lives
        interrupts.end_processes([p for w in workers for p in [w, *interrupts.descendants(w[0])]])
