"""Every compression plan a device profile allows, and the user's constraints on the result."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgepack.arguments import checked
from edgepack.compress.plan import CompressionPlan, Precision
from edgepack.errors import UsageError
from edgepack.formats import ArtifactFormat
from edgepack.profiles import DeviceProfile

PRUNE_RATIOS = (0.0, 0.3, 0.5, 0.7)
def formats_for(profile: DeviceProfile) -> list[str]:
    formats = []
    for runtime in profile.runtimes:
        fmt = ArtifactFormat.for_runtime(runtime).value
        if fmt not in formats:
            formats.append(fmt)
    return formats


def thread_counts(cores: int) -> list[int]:
    counts = [1]
    while counts[-1] * 2 <= cores:
        counts.append(counts[-1] * 2)
    if counts[-1] != cores:
        counts.append(cores)
    return counts


def _narrow(kind: str, allowed: list[Any], wanted: list[Any] | None, profile: DeviceProfile) -> list[Any]:
    if wanted is None:
        return allowed
    unknown = [w for w in wanted if w not in allowed]
    if unknown:
        raise UsageError(f"{profile.name} does not allow {kind} {', '.join(map(str, unknown))}",
                         f"pick from {', '.join(map(str, allowed))}")
    return [a for a in allowed if a in wanted]


def plans_for(profile: DeviceProfile, prune_ratios: tuple[float, ...] = PRUNE_RATIOS, *,
              formats: list[str] | None = None, precisions: list[str] | None = None,
              threads: list[int] | None = None, source: tuple[str, str] | None = None) -> list[CompressionPlan]:
    """format x precision x pruning x threads, as far as the profile allows (ONNX has no fp16 on CPUs);
    ``formats``, ``precisions`` and ``threads`` narrow the space to what the user asked for.

    ``source``: the (format, precision) of a model file the device could run as it is. When the space
    allows that format and precision, the file as given is a plan at each thread count, first. An fp32
    source needs none: the unpruned fp32 plan of its own format already is that file, copied untouched."""
    allowed = [p for p in profile.precisions.supported
               if not profile.precisions.required or p in profile.precisions.required]
    wanted_precisions = _narrow("precision", allowed, precisions, profile)
    wanted_formats = _narrow("format", formats_for(profile), formats, profile)
    if threads is not None and any(t < 1 or t > profile.cores for t in threads):
        raise UsageError(f"{profile.name} has {profile.cores} cores; --threads {threads} is out of range",
                         f"pick thread counts from 1 to {profile.cores}")
    thread_list = sorted(set(threads)) if threads else thread_counts(profile.cores)
    if any(not 0 <= r < 1 for r in prune_ratios):
        raise UsageError(f"prune ratios {list(prune_ratios)} must be in [0, 1)", "e.g. --prune 0,0.3,0.5")
    given = source if source and source[1] != "fp32" and source[0] in wanted_formats \
        and source[1] in wanted_precisions else None
    plans = [CompressionPlan(*given, 0.0, t, as_given=True) for t in thread_list] if given else []
    for fmt in map(ArtifactFormat, wanted_formats):
        for precision in map(Precision, wanted_precisions):
            if fmt is ArtifactFormat.ONNX and precision is Precision.FP16 and profile.device_class == "cpu":
                continue  # ONNX Runtime's CPU provider computes fp16 models in fp32 after a cast
            for ratio in sorted(set(prune_ratios)):
                for threads in thread_list:
                    plans.append(CompressionPlan(fmt, precision, ratio, threads))
    return plans


@dataclass(frozen=True)
class ConstraintCheck:
    """One constraint the user (or the profile) set, against the chosen candidate's figure."""

    name: str  # max_size_mb, max_ram_mb, max_latency_ms, max_accuracy_drop
    limit: float
    value: float | None  # None: no figure (held, as nothing shows it broken)
    source: str | None = None  # where a latency figure came from, when not a stable measurement

    @property
    def held(self) -> bool:
        return self.value is None or self.value <= self.limit

    def to_dict(self) -> dict[str, Any]:
        return {"limit": self.limit, "value": self.value, "held": self.held,
                **({"source": self.source} if self.source else {})}


def pareto_front(points: list[tuple[float, ...]]) -> list[bool]:
    """For tuples to minimise (size, latency, ...): True where no other point is at least as good in every
    figure and better in one."""
    def dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x <= y for x, y in zip(a, b, strict=True)) and any(x < y for x, y in zip(a, b, strict=True))

    return [not any(dominates(other, p) for other in points) for p in points]


@dataclass(frozen=True)
class Constraints:
    max_size_mb: float | None = None
    max_ram_mb: float | None = None
    max_latency_ms: float | None = None
    max_accuracy_drop: float | None = None  # percentage points

    def __post_init__(self) -> None:
        for name in ("max_size_mb", "max_ram_mb", "max_latency_ms", "max_accuracy_drop"):
            checked(name, getattr(self, name))

    def violations(self, size_mb: float, ram_mb: float | None, latency_ms: float | None,
                   accuracy_drop: float | None) -> list[str]:
        """What blocks a candidate, in words; empty when it is feasible."""
        found = []
        if self.max_size_mb is not None and size_mb > self.max_size_mb:
            found.append(f"size {size_mb:.2f} MB > {self.max_size_mb:g} MB")
        if self.max_ram_mb is not None and ram_mb is not None and ram_mb > self.max_ram_mb:
            found.append(f"RAM {ram_mb:.1f} MB > {self.max_ram_mb:g} MB" if self.max_ram_mb >= 4 else
                         f"RAM {ram_mb * 1024:.0f} KB > {self.max_ram_mb * 1024:g} KB")
        if self.max_latency_ms is not None and latency_ms is not None and latency_ms > self.max_latency_ms:
            found.append(f"p50 {latency_ms:.3f} ms > {self.max_latency_ms:g} ms")
        if self.max_accuracy_drop is not None and accuracy_drop is not None \
                and accuracy_drop > self.max_accuracy_drop:
            found.append(f"accuracy drop {accuracy_drop:.2f} > {self.max_accuracy_drop:g} points")
        return found
