"""What a build is asked for: ``BuildOptions``, made once (by the CLI from its flags, or by a script)
and checked when made, so a number out of its range is refused before any work, naming the argument."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepack.arguments import checked, checked_list
from edgepack.compress.distill import DISTILL_EPOCHS
from edgepack.compress.quantize import Check
from edgepack.errors import UsageError
from edgepack.search.space import PRUNE_RATIOS, Constraints

OBJECTIVES = ("latency", "size")


def _names(name: str, values: Any) -> tuple[str, ...] | None:
    """A list of names (formats, precisions): one str is a list of one."""
    if values is None:
        return None
    items = (values,) if isinstance(values, str) else values
    if not isinstance(items, list | tuple) or not items or not all(isinstance(v, str) and v for v in items):
        raise UsageError(f"{name} must be a list of names, not {values!r}", f"e.g. {name}=['tflite']")
    return tuple(str(v) for v in items)


@dataclass(frozen=True)
class BuildOptions:
    """Everything a build is asked for besides the model, the data, the device and the boards."""

    constraints: Constraints = field(default_factory=Constraints)
    objective: str = "latency"  # or "size"
    max_measurements: int = 12
    budget_minutes: float | None = None  # board time the search may spend; None: no limit but max_measurements
    exhaustive: bool = False  # measure every candidate that passes the fidelity gate (ignores max_measurements)
    formats: tuple[str, ...] | None = None  # narrows the profile's formats
    precisions: tuple[str, ...] | None = None
    threads: tuple[int, ...] | None = None
    prune_ratios: tuple[float, ...] = PRUNE_RATIOS
    runs: int | None = None  # None: the profile's
    warmup: int | None = None
    timeout_s: float = 300.0
    output_dir: Path = Path("dist")
    cache_dir: Path | None = None  # None: edgepack.records.default_cache_dir()
    distill_epochs: int = DISTILL_EPOCHS
    preprocessing: dict[str, Any] | None = None  # how image files became the calibration data
    confirm_rounds: int = 2  # the closest contenders are measured this many more times, on one board
    check: Check = field(default_factory=Check)  # output kinds, --metric, the value-error bound
    jobs: int | None = None  # artifacts built side by side (worker processes); None: this machine's cores
    skip_device_check: bool = False  # package without running the held-out samples on the board

    def __post_init__(self) -> None:
        if not isinstance(self.constraints, Constraints):
            raise UsageError(f"constraints must be a Constraints, not {self.constraints!r}",
                             "e.g. constraints=Constraints(max_accuracy_drop=1.0)")
        if self.objective not in OBJECTIVES:
            raise UsageError(f"objective must be one of {', '.join(OBJECTIVES)}, not {self.objective!r}",
                             "e.g. objective='latency'")
        for name in ("runs", "warmup", "jobs", "max_measurements", "distill_epochs", "timeout_s", "budget_minutes"):
            checked(name, getattr(self, name))
        if not isinstance(self.confirm_rounds, int) or self.confirm_rounds < 0:
            raise UsageError(f"confirm_rounds must be a whole number of at least 0, not {self.confirm_rounds!r}",
                             "e.g. confirm_rounds=2")
        object.__setattr__(self, "formats", _names("formats", self.formats))
        object.__setattr__(self, "precisions", _names("precisions", self.precisions))
        object.__setattr__(self, "threads", checked_list("threads", self.threads))
        object.__setattr__(self, "prune_ratios", checked_list("prune_ratios", self.prune_ratios))
