"""The Measurer: a batch of measurements in, a batch of typed outcomes out, over a pool of boards.

It holds the pool (one runner per board of one profile), the records (nothing measured twice), the
boards' identities (profile + host key: what a record is keyed by) and the counters (how many
measurements each purpose took, new and from the records). A batch is spread over the boards: each
board takes the next job it may run (a job pinned to one board waits for that board), so different
candidates are measured on different boards at the same time. Each runner holds its board's lock
for every measurement, the same lock ``deploy`` takes, so two edgepacks never time one board at once.

An emulated board (an arm64 userland under qemu on an x86 CPU, ``environment.emulated``) times an
emulator, not a board: ``set_aside_emulated`` keeps such boards out of a pool that has real ones, and
says when only emulated ones are left (then nothing about speed is measured).

A board that fails as a board (the connection is lost and a reconnect fails) is dropped, said once,
and its job goes to the others. When no board is left, ``NoBoardLeft`` ends the build. Failures of a
model on a healthy board (timeout, crash, missing runtime) are outcomes with ``error`` set.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgepack.errors import EdgepackError
from edgepack.formats import ArtifactFormat
from edgepack.records import Purpose, RecordKey, Records
from edgepack.runners.base import EMULATED, Environment, HarnessResult, Runner, RunRequest
from edgepack.runners.conditions import Judge, measure_steady
from edgepack.runners.local import LocalRunner
from edgepack.runners.pool import BoardUnreachable, in_parallel
from edgepack.runners.validation import outputs_problem


class NoBoardLeft(EdgepackError):
    """Every board of the pool was lost mid-build."""


@dataclass(frozen=True)
class Job:
    """One measurement to take. ``sha256``: the artifact's (its record key); ``board``: only that board
    may take it (confirmation rounds compare candidates on one board), None: any board."""

    request: RunRequest
    sha256: str
    purpose: Purpose = Purpose.LATENCY
    repeat: int = 0
    board: str | None = None


@dataclass
class Outcome:
    """A job's result (``result``) or why there is none (``error``); ``board``: whose it is."""

    job: Job
    result: HarnessResult | None = None
    error: str | None = None
    board: str | None = None
    recorded: bool = False  # from the records: nothing was measured now
    outputs: dict[str, Any] | None = None
    measured_at: tuple[float, float] | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.result is not None


@dataclass
class Counts:
    """Measurements by purpose: ``new`` ones taken on a board, ``recorded`` ones read from the records."""

    new: dict[str, int] = field(default_factory=dict)
    recorded: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0  # wall time spent measuring (batches, transfers and waiting for a board's lock)

    def add(self, purpose: Purpose, recorded: bool) -> None:
        counter = self.recorded if recorded else self.new
        counter[str(purpose)] = counter.get(str(purpose), 0) + 1

    def to_dict(self) -> dict[str, Any]:
        return {"new": sum(self.new.values()), "cached": sum(self.recorded.values()),
                "seconds": round(self.seconds, 3),
                "by_purpose": {str(p): {"new": self.new.get(str(p), 0), "cached": self.recorded.get(str(p), 0)}
                               for p in Purpose}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Counts:
        by = data.get("by_purpose") or {}
        return cls({p: n["new"] for p, n in by.items() if n.get("new")},
                   {p: n["cached"] for p, n in by.items() if n.get("cached")}, float(data.get("seconds") or 0.0))


class Measurer:
    def __init__(self, runners: list[Runner], records: Records, profile_name: str,
                 say: Callable[[str], None] = lambda _: None, judge: Judge | None = None) -> None:
        if not runners:
            raise ValueError("a Measurer needs at least one board")
        self.boards: dict[str, Runner] = {r.label: r for r in runners}  # the boards still in the pool
        self.all_boards = dict(self.boards)
        self.profile_name = profile_name
        self.identities: dict[str, str] = {}  # board -> profile@host key: what its records are keyed by
        self.records, self.say = records, say
        self.judge = judge or Judge()  # when a timing is unstable (throttled, under-clocked, spread)
        self.counts = Counts()
        self.dropped: dict[str, str] = {}  # board -> why it was dropped
        self.environments: dict[str, dict[str, Any]] = {}  # board -> what the harness said of it
        self.set_aside: list[str] = []  # emulated boards left out of a pool that has real ones
        self._lock = threading.Lock()
        self.drop_unreachable()

    def drop_unreachable(self) -> None:
        """Ask every board for its identity, all at once. A board that cannot be reached now (refused,
        timed out, lost: ``BoardUnreachable``) is dropped like one lost later, said once; the user's own
        errors (a host key, an identity file, a login) still end the build. None left: ``NoBoardLeft``."""
        unreachable: dict[str, str] = {}

        def ask(board: str, runner: Runner) -> None:
            try:
                self.identities[board] = f"{self.profile_name}@{runner.identity()}"
            except BoardUnreachable as exc:
                unreachable[board] = exc.problem.removeprefix(f"{board}: ")

        in_parallel([lambda b=b, r=r: ask(b, r) for b, r in self.boards.items()])
        for board in [b for b in self.boards if b in unreachable]:  # in the order given
            self.boards.pop(board)
            self.all_boards.pop(board)
            self.dropped[board] = unreachable[board]
        if not self.boards:
            raise NoBoardLeft("no board could be reached: " + "; ".join(f"{b} ({why})" for b, why in
                                                                       self.dropped.items()),
                              "check the host names and ports, and that sshd runs on each board")
        if self.dropped:
            self.say(f"board(s) {'; '.join(f'{b} ({why})' for b, why in self.dropped.items())} cannot be reached: "
                     f"dropped, measuring on {', '.join(self.boards)}")

    @property
    def where(self) -> str:
        labels = ", ".join(f"{b} ({EMULATED})" if self.is_emulated(b) else b
                           for b in self.all_boards if b not in self.set_aside)
        return "local (this machine, not a board)" if self.here else labels

    @property
    def here(self) -> bool:
        """The only "board" is this machine (the local runner): a check on it ran here, not on a device."""
        return list(self.all_boards) == [LocalRunner.LABEL]

    def is_emulated(self, board: str) -> bool:
        return Environment.from_dict(self.environments.get(board)).emulated

    @property
    def emulated(self) -> bool:
        """Every board left is emulated: no figure of speed can be measured."""
        return bool(self.boards) and all(self.is_emulated(b) for b in self.boards)

    @property
    def can_time(self) -> bool:
        """A board of the pool can time a model: not only emulated ones (whose timings are an emulator's)."""
        return not self.emulated

    @property
    def environment(self) -> dict[str, Any]:
        """What the harness said of the first board of the pool."""
        return self.environments.get(next(iter(self.boards)), {}) if self.boards else {}

    @property
    def op_profile_unavailable(self) -> str | None:
        """Why the pool's boards give no per-op times of their own; None: they do."""
        if self.emulated:
            return "the board is emulated: per-op times would be the emulator's"
        return next((why for r in self.boards.values() if (why := r.op_profile_unavailable) is not None), None)

    def set_aside_emulated(self) -> None:
        """Ask every board what it is (``harness.py --describe``); emulated boards leave a pool that has
        real ones, said once."""
        found: dict[str, HarnessResult] = {}
        in_parallel([lambda b=b, r=r: found.__setitem__(b, r.describe()) for b, r in self.boards.items()])
        self.environments = {b: r.environment for b, r in found.items()}
        emulated = [b for b in self.boards if self.is_emulated(b)]
        if emulated and len(emulated) < len(self.boards):
            for board in emulated:
                self.boards.pop(board)
            self.set_aside = emulated
            self.say(f"board(s) {', '.join(emulated)} are emulated: left out, measuring on {', '.join(self.boards)}")

    @property
    def width(self) -> int:
        """How many measurements the pool takes at once."""
        return max(1, len(self.boards))

    # -- the records ----------------------------------------------------------------------------------
    def key(self, job: Job, board: str) -> RecordKey:
        from edgepack.runners.harness import HARNESS_VERSION

        fmt = ArtifactFormat.of_path(job.request.model)
        runtime = fmt.runtime if fmt else job.request.runtime
        return RecordKey(job.sha256, self.identities[board], runtime, job.request.threads, HARNESS_VERSION,
                         job.repeat, str(job.purpose))

    def lookup(self, job: Job) -> tuple[str, dict[str, Any]] | None:
        """(board, what was recorded) for this job on its board, or on any board of the pool."""
        for board in [job.board] if job.board else [b for b in self.all_boards if b not in self.set_aside]:
            found = self.records.get(self.key(job, board))
            if found is not None and not HarnessResult.parse(found).unstable:  # unstable: measured again
                with self._lock:
                    self.counts.add(job.purpose, recorded=True)
                return board, found
        return None

    def store(self, job: Job, board: str, data: dict[str, Any]) -> None:
        self.records.add(self.key(job, board), data)

    # -- a batch --------------------------------------------------------------------------------------
    def measure(self, jobs: list[Job], *, use_records: bool = True) -> list[Outcome]:
        """Every job's outcome, in order. Latency and op-profile results go to the records; an accuracy
        job's outputs are the caller's to score and store."""
        start = time.perf_counter()
        outcomes: list[Outcome | None] = [None] * len(jobs)
        todo: deque[int] = deque()
        for i, job in enumerate(jobs):
            found = self.lookup(job) if use_records else None
            if found is None:
                todo.append(i)
            else:
                outcomes[i] = Outcome(job, HarnessResult.parse(found[1]), board=found[0], recorded=True)
        if todo:
            try:
                self._drain(jobs, todo, outcomes)
            finally:
                self.counts.seconds += time.perf_counter() - start
        for i, job in enumerate(jobs):
            if outcomes[i] is None:
                gone = job.board if job.board in self.dropped else ", ".join(self.dropped)
                outcomes[i] = Outcome(job, error=f"not measured: board {gone} was lost")
        if not self.boards:
            raise NoBoardLeft("every board was lost: " + "; ".join(f"{b} ({why})" for b, why in self.dropped.items()),
                              "check the boards and their network, then build again (measurements so far are "
                              "in the records)")
        return [o for o in outcomes if o is not None]

    def _drain(self, jobs: list[Job], todo: deque[int], outcomes: list[Outcome | None]) -> None:
        """One thread per board takes jobs until none is left for it; a lost board's job goes back in
        the queue, and another round starts while a board that may take it remains."""

        def take(board: str) -> int | None:
            with self._lock:
                index = next((i for i in todo if jobs[i].board in (None, board)), None)
                if index is not None:
                    todo.remove(index)
                return index

        def work(board: str) -> None:
            while board in self.boards and (index := take(board)) is not None:
                if not self._run(board, jobs[index], outcomes, index):
                    with self._lock:
                        todo.appendleft(index)
                    return

        # a user error in a board's thread (host key, setup) is re-raised here by in_parallel
        while any(jobs[i].board in (None, *self.boards) for i in todo) and self.boards:
            in_parallel([lambda b=b: work(b) for b in list(self.boards)])

    def _run(self, board: str, job: Job, outcomes: list[Outcome | None], index: int) -> bool:
        """Measure one job on ``board``; False when the board was lost (the job is not done)."""
        runner = self.boards[board]
        if job.purpose is Purpose.ACCURACY:
            measurement = runner.run([job.request])[0]
        else:
            measurement = measure_steady(runner, job.request, self.judge, self.say)
        if measurement.board_lost and not self._still_there(board, measurement.error or "connection lost"):
            return False
        problem = outputs_problem(measurement.outputs, job.request.expected_outputs) if measurement.ok else None
        if problem:
            measurement.error = f"board {board} returned {problem}"
        with self._lock:
            self.counts.add(job.purpose, recorded=False)
        outcome = Outcome(job, measurement.result if measurement.ok else None, measurement.error, board,
                          outputs=measurement.outputs, measured_at=measurement.measured_at)
        if outcome.ok and job.purpose is not Purpose.ACCURACY:
            data = dict(measurement.result.raw)
            if measurement.measured_at:
                data["measured_at"] = list(measurement.measured_at)
            self.store(job, board, data)
        outcomes[index] = outcome
        return True

    def _still_there(self, board: str, why: str) -> bool:
        """After a lost connection: one reconnect. A board that answers as itself stays in the pool."""
        runner = self.boards[board]
        try:
            if f"{self.profile_name}@{runner.identity()}" == self.identities[board]:
                return True
            why = "it answered with another host key"
        except EdgepackError as exc:
            why = f"{why}; reconnecting: {exc}"
        with self._lock:
            self.boards.pop(board, None)
            self.dropped[board] = why
        left = ", ".join(self.boards) or "none"
        self.say(f"board {board} lost ({why}): dropped; its work goes to the others (left: {left})")
        return False

    def close(self) -> None:
        for runner in self.all_boards.values():
            runner.close()
