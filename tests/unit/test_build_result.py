"""A build's result: its rows keep where each latency came from, and ``--json`` reads back into the same
result (``BuildResult.from_dict(result.to_dict())`` gives the same ``--json``)."""

from __future__ import annotations

import json

from edgepack.compress.plan import CompressionPlan
from edgepack.device_accuracy import DeviceAccuracy, OutputCheck
from edgepack.latency import LatencySource
from edgepack.measurer import Counts
from edgepack.profiles import ProfileRegistry
from edgepack.records import Purpose
from edgepack.runners.base import ToolchainFigures
from edgepack.search.candidate import Latency, Status
from edgepack.search.result import BuildResult, CandidateRow, PredictorScore, SourceModel
from edgepack.search.space import Constraints
from edgepack.strict_json import dumps


def rows() -> tuple[CandidateRow, ...]:
    vela = LatencySource.COMPILER_ESTIMATE.label("Vela 5.2.0")
    return (
        CandidateRow(CompressionPlan("tflite", "int8", 0.3, 2), "tflite int8 pruned 30% x2", Status.MEASURED, 0.08,
                     Latency(1.5, LatencySource.MEASURED, p90_ms=1.7), 1.4, 12.0, 0.4, 0.97, board="pi@a:22",
                     pareto=True, chosen=True, runs_ms=(1.4, 1.5, 1.6), p50_rounds_ms=(1.5, 1.49, 1.52)),
        CandidateRow(CompressionPlan("onnx", "fp32", 0.0, 1), "onnx fp32 x1", Status.UNSTABLE, 0.3,
                     Latency(2.0, LatencySource.MEASURED, p90_ms=3.1, unstable=("throttled (under-voltage)",)),
                     2.5, 20.0, 0.0, blocked_by=("p90 (unstable) 3.100 ms > 3 ms",), board="pi@b:22"),
        CandidateRow(CompressionPlan("tflite", "int8"), "tflite int8 x1", Status.ESTIMATED, 0.07,
                     Latency(0.9, LatencySource.COMPILER_ESTIMATE, vela, p90_ms=0.9), 1.0, 0.3,
                     toolchain=ToolchainFigures(20480, 300.0, 180.0, vela, {"npu_ops": 3})),
        CandidateRow(CompressionPlan("onnx", "int8"), "onnx int8 x1", Status.FAILED, 0.09, predicted_ms=1.1,
                     error="measurement failed: timeout: killed after 300 s"),
        CandidateRow(CompressionPlan("onnx", "fp32", 0.7), "onnx fp32 pruned 70% x1", Status.SKIPPED, None,
                     predicted_ms=0.8,
                     blocked_by=("pruning 70% alone loses 4.20 accuracy points (limit 1): not built",)),
        CandidateRow(CompressionPlan("onnx", "fp16"), "onnx fp16 x1", Status.NOT_BUILT, None, predicted_ms=3.0),
    )


def result() -> BuildResult:
    counts = Counts()
    counts.add(Purpose.LATENCY, recorded=False)
    counts.add(Purpose.ACCURACY, recorded=True)
    return BuildResult(ProfileRegistry.discover().get("rpi4"), "pi@a:22, pi@b:22", rows(),
                       Constraints(max_latency_ms=3.0, max_accuracy_drop=1.0), "latency",
                       SourceModel("digits", "digits.onnx", "ab" * 32, ("x",)), counts, ("int8 onnx was slower",),
                       ("size limit: ...",), PredictorScore((0.05, 0.2, 0.4)),
                       DeviceAccuracy(360, {"y": OutputCheck("scores", 0.99, 0.01, "top-1 agreement 99.00%")},
                                      0.99, 0.97, 0.98, 1.0))


def test_json_reads_back_into_the_same_result() -> None:
    built = result()
    data = json.loads(dumps(built.to_dict()))
    back = BuildResult.from_dict(data, built.device, built.source)
    assert back.to_dict() == built.to_dict()
    assert back.rows == built.rows and back.chosen == built.chosen


def test_a_row_says_where_its_latency_came_from() -> None:
    measured, unstable, estimated, failed, skipped, unbuilt = rows()
    assert measured.latency_source is LatencySource.MEASURED and measured.judged_ms == 1.5
    assert unstable.judged_ms == 3.1 and unstable.to_dict()["status"] == "unstable"  # its p90 is what is judged
    assert estimated.latency_source is LatencySource.COMPILER_ESTIMATE
    assert estimated.to_dict()["latency_source"] == "compiler estimate (Vela 5.2.0)"
    assert failed.latency_ms is None and failed.to_dict()["latency_source"] == "predicted"
    assert not failed.feasible and not skipped.feasible and not unbuilt.feasible and measured.feasible
    assert skipped.to_dict()["size_mb"] is None and unbuilt.to_dict()["status"] == "not built"


def test_a_prediction_never_passes_for_a_measurement() -> None:
    ranked = CandidateRow(CompressionPlan("tflite", "fp32"), "tflite fp32 x1", Status.PREDICTED, 0.3,
                          Latency(4.0, LatencySource.PREDICTED), 4.0)
    assert not ranked.measured and ranked.latency_ms is None and ranked.shown_ms == 4.0
    assert ranked.to_dict()["latency_ms"] is None and ranked.to_dict()["latency_source"] == "predicted"
    assert Latency(4.0, LatencySource.PREDICTED).status is Status.PREDICTED
    assert Latency(4.0, LatencySource.MEASURED, unstable=("spread 40%",)).status is Status.UNSTABLE
