"""What a build is asked for (``BuildOptions``) and what it found (``BuildResult``): the candidates with
their figures, the chosen one, its check on the board and everything the package is written from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.compress.distill import DISTILL_EPOCHS
from edgepack.compress.plan_builder import BuiltArtifact
from edgepack.compress.quantize import Check
from edgepack.device_accuracy import DeviceAccuracy
from edgepack.latency import LatencySource
from edgepack.measurer import Counts
from edgepack.predict import Predictor
from edgepack.profiles import DeviceProfile
from edgepack.search.space import PRUNE_RATIOS, Constraints
from edgepack.search.strategy import Candidate


@dataclass
class BuildOptions:
    constraints: Constraints = field(default_factory=Constraints)
    objective: str = "latency"  # or "size"
    max_measurements: int = 12
    formats: list[str] | None = None
    precisions: list[str] | None = None
    threads: list[int] | None = None
    prune_ratios: tuple[float, ...] = PRUNE_RATIOS
    runs: int | None = None
    warmup: int | None = None
    timeout_s: float = 300.0
    output_dir: Path = Path("dist")
    cache_dir: Path | None = None
    distill_epochs: int = DISTILL_EPOCHS
    preprocessing: dict[str, Any] | None = None  # how image files became the calibration data
    confirm_rounds: int = 2  # the closest contenders are measured this many more times, on one board
    check: Check = field(default_factory=Check)  # output kinds, --metric, the value-error bound
    jobs: int = 1  # artifacts built side by side (worker processes)
    skip_device_check: bool = False  # package without running the held-out samples on the board


@dataclass(frozen=True)
class SourceModel:
    """The user's model as the package names it."""

    name: str  # e.g. "digits_cnn"
    source: str  # the file (or module) it came from
    sha256: str
    input_names: list[str]


def toolchain_figures(raw: dict[str, Any]) -> dict[str, Any]:
    """A microcontroller's figures from its toolchains: TFLM's arena, SRAM and flash, Vela's estimate."""
    return {k: raw[k] for k in ("arena_bytes", "sram_kb", "flash_kb", "vela", "latency_source") if k in raw}


@dataclass
class BuildResult:
    device: DeviceProfile
    where: str  # the boards, or "local (this machine, not a board)"
    candidates: list[Candidate]
    chosen: Candidate | None
    built: dict[tuple[str, str, float], BuiltArtifact]
    constraints: Constraints
    objective: str
    source: SourceModel
    counts: Counts = field(default_factory=Counts)
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pareto: set[str] = field(default_factory=set)  # plan keys on the measured Pareto front
    blockers: dict[str, list[str]] = field(default_factory=dict)  # plan key -> what rules it out
    predictor: Predictor | None = None  # as fitted at the end
    device_accuracy: DeviceAccuracy | None = None  # the chosen one, checked on the board itself
    op_profile: dict[str, Any] | None = None  # the chosen one's per-op breakdown, from the board
    environment: dict[str, Any] | None = None  # the board's, when no latency was measured (emulated)
    sample: np.ndarray | None = None  # one held-out sample for the package's smoke test (single input)
    preprocessing: dict[str, Any] | None = None
    package: Path | None = None  # once written (edgepack.bundle)

    @property
    def predictor_errors(self) -> list[float]:
        """Relative error of each latency prediction made just before the measurement that checked it."""
        return [abs(c.predicted_ms - c.latency_ms) / c.latency_ms for c in self.candidates
                if c.latency_measured and c.predicted_ms is not None and c.latency_ms]

    @property
    def emulated(self) -> bool:
        """Every latency is the predictor's: the only board was emulated."""
        return any(c.latency_source is LatencySource.PREDICTED for c in self.candidates)

    def row(self, c: Candidate) -> dict[str, Any]:
        built = self.built.get(c.plan.artifact)
        status = "estimated" if c.latency_estimated else "unstable" if c.latency_measured and c.unstable else \
            "measured" if c.latency_measured else \
            "failed" if c.error else "skipped" if c.skipped else \
            "predicted" if c.built else "not built"
        return {"plan": c.plan.to_dict(), "label": c.plan.label, "size_mb": c.size_mb if c.built else None,
                "latency_ms": c.latency_ms if c.latency_measured else None, "p90_ms": c.p90_ms,
                "predicted_ms": c.predicted_ms,
                "latency_source": c.latency_label if c.latency_measured else LatencySource.PREDICTED.value,
                "peak_rss_mb": c.peak_rss_mb, "accuracy_drop": c.accuracy_drop, "unstable": c.unstable,
                "accuracy": (built.fidelity.get("accuracy") if built else None),
                "feasible": c.built and not c.error and not self.blockers.get(c.plan.key),
                "blocked_by": self.blockers.get(c.plan.key, []) or ([c.skipped] if c.skipped else []),
                "status": status, "error": c.error, "board": c.board,
                "pareto": c.plan.key in self.pareto, "chosen": self.chosen is c,
                **({"toolchain": toolchain_figures(c.measurement.raw)}
                   if c.measurement and "arena_bytes" in c.measurement.raw else {})}

    def to_dict(self) -> dict[str, Any]:
        errors = self.predictor_errors
        chosen = self.row(self.chosen) if self.chosen else None
        return {
            "package": str(self.package) if self.package else None,
            "device": self.device.name, "measured_on": self.where, "objective": self.objective,
            "constraints": self.constraints.__dict__,
            "chosen": chosen,
            "candidates": [self.row(c) for c in self.candidates],
            "measurements": self.counts.to_dict(),
            "checked_on_device": self.device_accuracy.to_dict() if self.device_accuracy else None,
            "predictor": {"measured_candidates": len(errors),
                          "median_error": sorted(errors)[len(errors) // 2] if errors else None,
                          "within_10pct": sum(e <= 0.10 for e in errors) / len(errors) if errors else None},
            "findings": self.findings, "notes": self.notes,
        }
