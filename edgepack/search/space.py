"""Every compression plan a device profile allows, and the user's constraints on the result."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from edgepack.profiles import DeviceProfile

PRUNE_RATIOS = (0.0, 0.3, 0.5, 0.7)


@dataclass(frozen=True)
class CompressionPlan:
    """A replayable recipe: the same plan on the same source always gives the same artifact."""

    format: str  # tflite | onnx
    precision: str  # fp32 | fp16 | int8 | dynamic
    prune_ratio: float = 0.0
    threads: int = 1

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]

    @property
    def is_baseline(self) -> bool:
        return self.precision == "fp32" and self.prune_ratio == 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}


def formats_for(profile: DeviceProfile) -> list[str]:
    formats = []
    for runtime in profile.runtimes:
        fmt = "onnx" if runtime == "onnxruntime" else "tflite"
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


def plans_for(profile: DeviceProfile, prune_ratios: tuple[float, ...] = PRUNE_RATIOS) -> list[CompressionPlan]:
    """format x precision x pruning x threads, as far as the profile allows (ONNX has no fp16 on CPUs)."""
    precisions = [p for p in profile.precisions.supported
                  if not profile.precisions.required or p in profile.precisions.required]
    plans = []
    for fmt in formats_for(profile):
        for precision in precisions:
            if fmt == "onnx" and precision == "fp16" and profile.device_class == "cpu":
                continue  # ONNX Runtime's CPU provider computes fp16 models in fp32 after a cast
            for ratio in prune_ratios:
                for threads in thread_counts(profile.cores):
                    plans.append(CompressionPlan(fmt, precision, ratio, threads))
    return plans


@dataclass(frozen=True)
class Constraints:
    max_size_mb: float | None = None
    max_ram_mb: float | None = None
    max_latency_ms: float | None = None
    max_accuracy_drop: float | None = None  # percentage points

    def violations(self, size_mb: float, ram_mb: float | None, latency_ms: float | None,
                   accuracy_drop: float | None) -> list[str]:
        """What blocks a candidate, in words; empty when it is feasible."""
        found = []
        if self.max_size_mb is not None and size_mb > self.max_size_mb:
            found.append(f"size {size_mb:.2f} MB > {self.max_size_mb:g} MB")
        if self.max_ram_mb is not None and ram_mb is not None and ram_mb > self.max_ram_mb:
            found.append(f"RAM {ram_mb:.1f} MB > {self.max_ram_mb:g} MB")
        if self.max_latency_ms is not None and latency_ms is not None and latency_ms > self.max_latency_ms:
            found.append(f"p50 {latency_ms:.3f} ms > {self.max_latency_ms:g} ms")
        if self.max_accuracy_drop is not None and accuracy_drop is not None \
                and accuracy_drop > self.max_accuracy_drop:
            found.append(f"accuracy drop {accuracy_drop:.2f} > {self.max_accuracy_drop:g} points")
        return found
