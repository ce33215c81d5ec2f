"""Roofline latency estimate: each layer is bound by compute or by memory traffic, whichever is slower.

A lower bound under ideal kernels, never a measurement: real latency on the board is higher (launch
overheads, cache misses, unfused elementwise ops). ``edgepack profile`` measures it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgepack.analysis.graph import GraphSummary
from edgepack.profiles import DeviceProfile


@dataclass(frozen=True)
class RooflineEstimate:
    latency_ms: float
    compute_bound_layers: int
    memory_bound_layers: int
    assumed_precision: str
    peak_gops: float
    memory_gbps: float

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["kind"] = "estimate (roofline lower bound, not measured)"
        return data


def peak_for(profile: DeviceProfile, precision: str) -> tuple[str, float]:
    """The precision the device would compute in, and its peak in GOP/s."""
    roof = profile.roofline
    if profile.precisions.required and precision not in profile.precisions.required:
        precision = profile.precisions.required[0]
    if precision == "int8":
        return precision, roof.int8_gops
    if precision == "fp16":
        return precision, roof.fp16_gflops or roof.fp32_gflops
    return "fp32" if precision == "dynamic" else precision, roof.fp32_gflops


def estimate_latency(summary: GraphSummary, profile: DeviceProfile, threads: int | None = None) -> RooflineEstimate:
    """``threads``: the compute peak scales with the share of the cores used (default: all of them)."""
    precision, peak_gops = peak_for(profile, summary.precision)
    if threads is not None and profile.cores > 0:
        peak_gops *= min(threads, profile.cores) / profile.cores
    bandwidth = profile.roofline.memory_gbps * 1e9
    total_s = 0.0
    compute_bound = memory_bound = 0
    for layer in summary.layers:
        compute_s = 2 * layer.macs / (peak_gops * 1e9) if layer.macs and peak_gops > 0 else 0.0
        memory_s = (layer.weight_bytes + layer.input_bytes + layer.output_bytes) / bandwidth
        if layer.macs and peak_gops <= 0:
            compute_s = float("inf")
        if compute_s >= memory_s:
            compute_bound += 1
        else:
            memory_bound += 1
        total_s += max(compute_s, memory_s)
    return RooflineEstimate(total_s * 1e3, compute_bound, memory_bound, precision, peak_gops,
                            profile.roofline.memory_gbps)
