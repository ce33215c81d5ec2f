"""A candidate's features before its artifact exists (from the source's graph), and once built (from
the artifact's own graph): what the predictor works from."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edgepack.analysis.graph import GraphSummary
from edgepack.analysis.kernels import kernel_groups
from edgepack.analysis.roofline import estimate_latency
from edgepack.compress.plan import CompressionPlan, Precision
from edgepack.predict import Features
from edgepack.profiles import DeviceProfile

#: file size against fp32, before building
SIZE_FACTOR = {Precision.FP32: 1.0, Precision.FP16: 0.5, Precision.INT8: 0.27, Precision.DYNAMIC: 0.27}


def estimate(c: CompressionPlan, summary: GraphSummary, profile: DeviceProfile) -> tuple[Features, float]:
    """Features and size (MB) before the artifact exists (kernels costed on one thread: the predictor
    learns what threads do on the board). Channel pruning by r keeps about (1-r)^2 of
    the MACs and weights and (1-r) of the activations; int8 moves a quarter of the activation bytes."""
    keep = (1 - c.prune_ratio) ** 2
    cpu_float = c.precision in (Precision.DYNAMIC, Precision.FP16) and profile.device_class == "cpu"
    arithmetic = Precision.FP32 if cpu_float else c.precision  # computed in fp32 on a CPU
    activations = (1 - c.prune_ratio) * (0.25 if c.precision is Precision.INT8 else 1.0)
    scaled = replace(summary, layers=[replace(layer, macs=int(layer.macs * keep), precision=arithmetic,
                                              weight_bytes=int(layer.weight_bytes * keep * SIZE_FACTOR[c.precision]),
                                              input_bytes=int(layer.input_bytes * activations),
                                              output_bytes=int(layer.output_bytes * activations))
                                      for layer in summary.layers])
    roofline = estimate_latency(scaled, profile, c.threads).latency_ms
    size = summary.weight_bytes * keep * SIZE_FACTOR[c.precision]
    return Features(roofline, len(summary.layers), arithmetic, int(size),
                    int(summary.peak_activation_bytes * activations), c.format, c.threads, c.precision,
                    c.prune_ratio, kernel_groups(scaled, profile, 1)), size / 1e6


def features_of(artifact_path: Path, fmt: str, plan: CompressionPlan, profile: DeviceProfile) -> Features:
    """Features of a built artifact, from its own graph."""
    from edgepack.inspection import summarize_model
    from edgepack.model import load_model

    summary, _ = summarize_model(load_model(artifact_path))
    return Features(estimate_latency(summary, profile, plan.threads).latency_ms, len(summary.layers),
                    summary.precision, summary.weight_bytes, summary.peak_activation_bytes, fmt, plan.threads,
                    plan.precision, plan.prune_ratio, kernel_groups(summary, profile, 1))
