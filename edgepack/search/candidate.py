"""One candidate of the search: its plan, what is known of it so far, and its :class:`Status`.

A candidate moves one way, and only through the methods below: not built -> built (its artifact's
real size and accuracy replace the estimates; ``predicted``) -> measured (``measured``, ``estimated``
by a toolchain, or ``unstable``); or it fails (its build or its measurement) or is skipped (ruled out
without building it), and then it is never proposed again. Its latency is a :class:`Latency`: a figure
with where it came from, so a prediction can never pass for a measurement.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from edgepack.compress.plan import CompressionPlan
from edgepack.latency import LatencySource
from edgepack.predict import Features
from edgepack.runners.base import HarnessResult, OpProfile
from edgepack.search.space import Constraints

if TYPE_CHECKING:
    from edgepack.compress.builder import BuiltArtifact


class Status(str, Enum):
    """Where a candidate is, in the words of the table and ``--json``."""

    NOT_BUILT = "not built"  # its figures are estimates from the source's graph
    PREDICTED = "predicted"  # built and checked; its latency is the predictor's
    MEASURED = "measured"  # timed on a board (or this machine, --device host)
    ESTIMATED = "estimated"  # its latency is a toolchain's estimate (Vela's cycles, cycles per MAC)
    UNSTABLE = "unstable"  # timed while the board throttled, ran slow or spread: judged by its p90
    FAILED = "failed"  # its build or its measurement failed
    SKIPPED = "skipped"  # ruled out without building it (the pruning probe)

    def __str__(self) -> str:
        return self.value

    def __hash__(self) -> int:
        return hash(self.value)


@dataclass(frozen=True)
class Latency:
    """A latency and where it came from. ``ms`` is the p50 (the predictor's figure for a prediction);
    ``label`` the words a person reads, the toolchain's name included ("compiler estimate (Vela 5.2.0)")."""

    ms: float
    source: LatencySource
    label: str = ""
    p90_ms: float | None = None
    unstable: tuple[str, ...] = ()  # why the measuring conditions make it unstable; empty: stable

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", self.source.value)

    @classmethod
    def of(cls, result: HarnessResult) -> Latency | None:
        """A board's figures as a Latency; None when the result has no p50."""
        if result.p50_ms is None:
            return None
        return cls(result.p50_ms, result.source, result.latency_source, result.p90_ms, tuple(result.unstable))

    @property
    def judged_ms(self) -> float:
        """What the search compares: the p50, or for an unstable timing its p90, so that noise on the
        board is never the reason a candidate wins or holds a latency bound."""
        if self.unstable and self.p90_ms is not None and self.source.timed:
            return max(self.p90_ms, self.ms)
        return self.ms

    @property
    def status(self) -> Status:
        if not self.source.timed:
            return Status.PREDICTED
        if self.source.estimated:
            return Status.ESTIMATED
        return Status.UNSTABLE if self.unstable else Status.MEASURED


_BUILT = (Status.PREDICTED, Status.MEASURED, Status.ESTIMATED, Status.UNSTABLE)


@dataclass(eq=False)
class Candidate:
    plan: CompressionPlan
    features: Features
    size_mb: float  # an estimate until built
    accuracy_drop: float | None = None  # points against the original, once built and checked
    status: Status = Status.NOT_BUILT
    artifact: BuiltArtifact | None = None
    why: str | None = None  # FAILED or SKIPPED: why, in words
    latency: Latency | None = None
    predicted_ms: float | None = None  # just before it was measured; for the unmeasured, at the end
    peak_rss_mb: float | None = None
    measurement: HarnessResult | None = None  # what the board reported (the median round, once confirmed)
    board: str | None = None  # the board that measured it
    p50_rounds_ms: list[float] = field(default_factory=list)  # confirmation rounds on one board, if any
    op_profile: OpProfile | None = None  # its per-op times on the board, when they were measured

    # -- the ways it moves --------------------------------------------------------------------------
    def built_as(self, artifact: BuiltArtifact, features: Features) -> None:
        self.artifact, self.features, self.status = artifact, features, Status.PREDICTED
        self.size_mb, self.accuracy_drop = artifact.size_mb, artifact.accuracy_drop

    def fail(self, why: str) -> None:
        self.status, self.why = Status.FAILED, why

    def skip(self, why: str) -> None:
        self.status, self.why = Status.SKIPPED, why

    def measured_as(self, latency: Latency, measurement: HarnessResult | None = None, board: str | None = None,
                    peak_rss_mb: float | None = None) -> None:
        """A figure for its latency: the board's, a toolchain's estimate, or (no board can time it) the
        predictor's, which leaves it ``predicted``."""
        self.latency, self.status = latency, latency.status
        if measurement is not None:
            self.measurement = measurement
        self.board = board or self.board
        self.peak_rss_mb = peak_rss_mb if peak_rss_mb is not None else self.peak_rss_mb

    # -- what is known ------------------------------------------------------------------------------
    @property
    def built(self) -> bool:
        return self.status in _BUILT or self.artifact is not None

    @property
    def failed(self) -> bool:
        return self.status is Status.FAILED

    @property
    def open(self) -> bool:
        """Still a candidate: neither failed nor skipped."""
        return self.status not in (Status.FAILED, Status.SKIPPED)

    @property
    def measured(self) -> bool:
        """It has a latency figure (a prediction too, when no board can time it)."""
        return self.latency is not None

    @property
    def latency_measured(self) -> bool:
        """A latency from the board, or from its toolchain's estimate: not the predictor's."""
        return self.latency is not None and self.latency.source.timed

    @property
    def latency_ms(self) -> float | None:
        return self.latency.ms if self.latency else None

    @property
    def judged_ms(self) -> float | None:
        return self.latency.judged_ms if self.latency else None

    @property
    def p90_ms(self) -> float | None:
        return self.latency.p90_ms if self.latency else None

    @property
    def unstable(self) -> tuple[str, ...]:
        return self.latency.unstable if self.latency else ()

    @property
    def attempted(self) -> bool:
        """A measurement was spent on it: it was measured, or built and its measurement failed."""
        return self.measured or (self.failed and self.built)

    def known_blockers(self, constraints: Constraints) -> list[str]:
        """What rules it out before measuring: size and accuracy, once it is built."""
        if not self.built:
            return []
        return constraints.violations(self.size_mb, None, None, self.accuracy_drop)
