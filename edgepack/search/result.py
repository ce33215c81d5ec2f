"""What a build found (``BuildResult``): one :class:`CandidateRow` per candidate with its figures, the
chosen one, its check on the board and everything the package is written from. Frozen: the loop makes
it once, at its end; the table, the report and the package read its attributes. ``to_dict()`` is the
``--json`` (and the manifest's candidate table); ``from_dict`` reads it back."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepack.compress.plan import CompressionPlan
from edgepack.device_accuracy import DeviceAccuracy
from edgepack.latency import LatencySource
from edgepack.measurer import Counts
from edgepack.profiles import DeviceProfile
from edgepack.runners.base import HarnessResult, OpProfile, ToolchainFigures
from edgepack.search.candidate import Latency, Status
from edgepack.search.options import BuildOptions
from edgepack.search.space import Constraints
from edgepack.stages import StageTime

if TYPE_CHECKING:
    from edgepack.analysis.slower import SlowerExplanation
    from edgepack.compress.builder import BuiltArtifact
    from edgepack.predict import Features, Predictor
    from edgepack.search.strategy import Strategy

__all__ = ["BuildOptions", "BuildResult", "CandidateRow", "SourceModel"]


@dataclass(frozen=True)
class SourceModel:
    """The user's model as the package names it."""

    name: str  # e.g. "digits_cnn"
    source: str  # the file (or module) it came from
    sha256: str
    input_names: tuple[str, ...]


@dataclass(frozen=True)
class CandidateRow:
    """One candidate as the build ends: its plan, its figures and where each came from."""

    plan: CompressionPlan
    label: str  # the plan in words: "tflite int8 pruned 30% x2"
    status: Status
    size_mb: float | None  # None: never built
    latency: Latency | None = None  # the board's (or a toolchain's) figure; the predictor's on an emulated board
    predicted_ms: float | None = None
    peak_rss_mb: float | None = None
    accuracy_drop: float | None = None
    accuracy: float | None = None  # with labels: the artifact's accuracy on the held-out data
    blocked_by: tuple[str, ...] = ()
    error: str | None = None
    board: str | None = None
    pareto: bool = False
    chosen: bool = False
    toolchain: ToolchainFigures | None = None  # a microcontroller's: TFLM's arena, SRAM, flash, Vela's estimate
    runs_ms: tuple[float, ...] = ()
    p50_rounds_ms: tuple[float, ...] = ()
    # not in --json: what the package is written from, and what the benchmarks read
    artifact: BuiltArtifact | None = field(default=None, compare=False)
    measurement: HarnessResult | None = field(default=None, compare=False)
    features: Features | None = field(default=None, compare=False)

    @property
    def measured(self) -> bool:
        """A latency of its own: timed on the board, or a toolchain's estimate."""
        return self.latency is not None and self.latency.source.timed

    @property
    def latency_ms(self) -> float | None:
        return self.latency.ms if self.measured and self.latency else None

    @property
    def p90_ms(self) -> float | None:
        return self.latency.p90_ms if self.latency else None

    @property
    def judged_ms(self) -> float | None:
        return self.latency.judged_ms if self.latency else None

    @property
    def unstable(self) -> tuple[str, ...]:
        return self.latency.unstable if self.latency else ()

    @property
    def latency_source(self) -> LatencySource:
        return self.latency.source if self.measured and self.latency else LatencySource.PREDICTED

    @property
    def latency_label(self) -> str:
        return self.latency.label if self.measured and self.latency else LatencySource.PREDICTED.value

    @property
    def shown_ms(self) -> float | None:
        """The figure a plot places it at: its own latency, else the predictor's."""
        return self.latency.ms if self.latency else self.predicted_ms

    @property
    def feasible(self) -> bool:
        return self.size_mb is not None and self.status is not Status.FAILED and not self.blocked_by

    def to_dict(self) -> dict[str, Any]:
        return {"plan": self.plan.to_dict(), "label": self.label, "size_mb": self.size_mb,
                "latency_ms": self.latency_ms, "p90_ms": self.p90_ms, "predicted_ms": self.predicted_ms,
                "latency_source": self.latency_label, "peak_rss_mb": self.peak_rss_mb,
                "accuracy_drop": self.accuracy_drop, "unstable": list(self.unstable), "accuracy": self.accuracy,
                "feasible": self.feasible, "blocked_by": list(self.blocked_by), "status": self.status.value,
                "error": self.error, "board": self.board, "pareto": self.pareto, "chosen": self.chosen,
                "runs_ms": list(self.runs_ms),
                **({"p50_rounds_ms": list(self.p50_rounds_ms)} if self.p50_rounds_ms else {}),
                **(self._timing() if self.measurement is not None and self.measured else {}),
                **({"toolchain": self.toolchain.to_dict()} if self.toolchain else {})}

    def _timing(self) -> dict[str, Any]:
        """How the board's timing ended: runs done, the median's 95% interval, why it stopped."""
        m = self.measurement
        assert m is not None
        return {"runs_done": m.runs_done, "median_ci_ms": list(m.median_ci_ms) if m.median_ci_ms else None,
                "stopped_by": m.stopped_by.value if m.stopped_by else None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandidateRow:
        plan = {k: v for k, v in data["plan"].items() if k != "key"}
        latency = None
        if data.get("latency_ms") is not None:
            source = LatencySource.of_label(data["latency_source"])
            latency = Latency(data["latency_ms"], source, data["latency_source"], data.get("p90_ms"),
                              tuple(data.get("unstable") or ()))
        toolchain = data.get("toolchain")
        return cls(CompressionPlan(**plan), data["label"], Status(data["status"]), data.get("size_mb"), latency,
                   data.get("predicted_ms"), data.get("peak_rss_mb"), data.get("accuracy_drop"), data.get("accuracy"),
                   tuple(data.get("blocked_by") or ()), data.get("error"), data.get("board"), bool(data.get("pareto")),
                   bool(data.get("chosen")), ToolchainFigures.from_dict(toolchain) if toolchain else None,
                   tuple(data.get("runs_ms") or ()), tuple(data.get("p50_rounds_ms") or ()))


@dataclass(frozen=True)
class PredictorScore:
    """How well the latency predictor did: the relative error of each prediction made just before the
    measurement that checked it."""

    errors: tuple[float, ...] = ()

    @property
    def median_error(self) -> float | None:
        return sorted(self.errors)[len(self.errors) // 2] if self.errors else None

    @property
    def within_10pct(self) -> float | None:
        return sum(e <= 0.10 for e in self.errors) / len(self.errors) if self.errors else None

    def to_dict(self) -> dict[str, Any]:
        return {"measured_candidates": len(self.errors), "median_error": self.median_error,
                "within_10pct": self.within_10pct, "errors": list(self.errors)}


@dataclass(frozen=True)
class BoardTime:
    """Board time the search spent, and about how much measuring every other candidate would have cost
    (each at the mean overhead of a measurement here, plus its runs at its predicted latency)."""

    used_s: float
    measured: int
    unmeasured: int
    saved_s: float  # an estimate

    @classmethod
    def of(cls, strategy: Strategy, used_s: float, runs: int) -> BoardTime:
        measured = [c for c in strategy.candidates if c.latency_measured]
        unmeasured = [c for c in strategy.candidates if c.open and not c.measured]
        running = sum(runs * (c.latency_ms or 0.0) / 1e3 for c in measured)
        overhead = max(used_s - running, 0.0) / len(measured) if measured else 0.0
        saved = sum(overhead + runs * strategy.predicted(c) / 1e3 for c in unmeasured)
        return cls(used_s, len(measured), len(unmeasured), saved)

    def to_dict(self) -> dict[str, Any]:
        return {"used_s": round(self.used_s, 3), "measured": self.measured, "unmeasured": self.unmeasured,
                "saved_s_estimated": round(self.saved_s, 3)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BoardTime:
        return cls(float(data["used_s"]), int(data["measured"]), int(data["unmeasured"]),
                   float(data["saved_s_estimated"]))

    @property
    def sentence(self) -> str:
        if not self.unmeasured:
            return f"board time: {self.used_s:.0f} s measuring {self.measured} candidate(s), every open one"
        return (f"board time: {self.used_s:.0f} s measuring {self.measured} candidate(s); about "
                f"{self.saved_s:.0f} s saved by not measuring the other {self.unmeasured} (estimated)")


@dataclass(frozen=True)
class BuildResult:
    device: DeviceProfile
    where: str  # the boards, or "local (this machine, not a board)"
    rows: tuple[CandidateRow, ...]
    constraints: Constraints
    objective: str
    source: SourceModel
    counts: Counts = field(default_factory=Counts)
    findings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    predictor_score: PredictorScore = field(default_factory=PredictorScore)
    device_accuracy: DeviceAccuracy | None = None  # the chosen one, checked on the board itself
    op_profile: OpProfile | None = None  # the chosen one's per-op breakdown, from the board
    environment: dict[str, Any] | None = None  # the board's, when no latency was measured (emulated)
    package: Path | None = None  # once written (edgepack.bundle)
    stages: tuple[StageTime, ...] = ()  # where the build's wall time went, in order (edgepack.stages)
    board_time: BoardTime | None = None
    slower: tuple[SlowerExplanation, ...] = ()  # why a quantized candidate measured slower than its fp32 twin
    # not in --json
    sample: np.ndarray | None = field(default=None, compare=False)  # one held-out sample, for the smoke test
    preprocessing: dict[str, Any] | None = field(default=None, compare=False)
    predictor: Predictor | None = field(default=None, compare=False)  # as fitted at the end

    @property
    def chosen(self) -> CandidateRow | None:
        return next((r for r in self.rows if r.chosen), None)

    @property
    def candidates(self) -> tuple[CandidateRow, ...]:
        return self.rows

    @property
    def emulated(self) -> bool:
        """Every latency is the predictor's: the only board was emulated."""
        return any(r.latency is not None and r.latency.source is LatencySource.PREDICTED for r in self.rows)

    def packaged(self, path: Path) -> BuildResult:
        return replace(self, package=path)

    def to_dict(self) -> dict[str, Any]:
        chosen = self.chosen
        return {
            "package": str(self.package) if self.package else None,
            "device": self.device.name, "measured_on": self.where, "objective": self.objective,
            "constraints": self.constraints.__dict__,
            "chosen": chosen.to_dict() if chosen else None,
            "candidates": [r.to_dict() for r in self.rows],
            "measurements": self.counts.to_dict(),
            "checked_on_device": self.device_accuracy.to_dict() if self.device_accuracy else None,
            "predictor": self.predictor_score.to_dict(),
            "findings": list(self.findings), "notes": list(self.notes),
            "stages": [t.to_dict() for t in self.stages],
            "board_time": self.board_time.to_dict() if self.board_time else None,
            "slower_than_fp32": [s.to_dict() for s in self.slower],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], device: DeviceProfile, source: SourceModel) -> BuildResult:
        """A build's ``--json`` read back (the device and the model are named there, not described)."""
        rows = tuple(CandidateRow.from_dict(r) for r in data["candidates"])
        checked = data.get("checked_on_device")
        errors = tuple(data["predictor"].get("errors") or ())
        return cls(device, data["measured_on"], rows, Constraints(**data["constraints"]), data["objective"], source,
                   Counts.from_dict(data["measurements"]), tuple(data["findings"]), tuple(data["notes"]),
                   PredictorScore(errors), DeviceAccuracy.from_dict(checked) if checked else None,
                   package=Path(data["package"]) if data.get("package") else None,
                   stages=tuple(StageTime.from_dict(t) for t in data.get("stages") or ()),
                   board_time=BoardTime.from_dict(data["board_time"]) if data.get("board_time") else None)
