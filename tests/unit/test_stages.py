"""Where a build's time goes (edgepack.stages in the builder, the report and the package): every step of
making an artifact is timed, in a worker process too, a cache hit costs next to nothing, and the source
runs once per sample however many candidates are checked against it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepack.compress.builder import ArtifactBuilder, BuiltArtifact
from edgepack.compress.plan import CompressionPlan
from edgepack.compress.quantize import Check
from edgepack.compress.quantizer import FloatLayer
from edgepack.convert.remembered import RememberedEngine
from edgepack.convert.validate import ValidationReport
from edgepack.data import Dataset
from edgepack.engines import OnnxEngine
from edgepack.examples.digits import load_digits_data
from edgepack.latency import LatencySource
from edgepack.model import load_model
from edgepack.profiles import ProfileRegistry, Tolerances
from edgepack.report import render_report, time_section
from edgepack.search.candidate import Latency, Status
from edgepack.search.result import BuildResult, CandidateRow, SourceModel
from edgepack.search.space import Constraints
from edgepack.stages import StageClock, StageTime, totals

DIGITS_ONNX = Path(__file__).resolve().parents[2] / "edgepack" / "examples" / "digits_cnn.onnx"


@pytest.fixture(scope="module")
def data() -> tuple[Dataset, Dataset]:
    digits = load_digits_data()
    return (Dataset({"image": digits.x_train[:64]}),
            Dataset({"image": digits.x_test[:40]}, digits.y_test[:40]))


def builder(data: tuple[Dataset, Dataset], cache: Path, **kwargs: object) -> ArtifactBuilder:
    calib, held_out = data
    return ArtifactBuilder(load_model(DIGITS_ONNX), ProfileRegistry.discover().get("host"), calib, held_out, cache,
                           calibrated=True, max_accuracy_drop=1.0, distill_epochs=1, **kwargs)  # type: ignore[arg-type]


def test_every_step_of_a_build_is_timed_and_a_cache_hit_costs_next_to_nothing(data, tmp_path: Path) -> None:
    clock = StageClock()
    b = builder(data, tmp_path, clock=clock)
    assert b.clock is clock
    plans = [CompressionPlan("onnx", "fp32"), CompressionPlan("onnx", "int8")]
    built = b.build(plans)
    assert all(isinstance(a, BuiltArtifact) for a in built.values())
    steps = {(t.stage, t.detail) for t in clock.times}
    assert ("validate", "onnx fp32 against the original") in steps
    assert ("quantize", "onnx int8") in steps  # the calibration and quantization, apart from its checks
    # quantizing checked the file it wrote against the original on every held-out sample: run once, not twice
    assert ("validate", "onnx int8") in steps and ("validate", "onnx int8 against the original") not in steps
    int8 = built[plans[1].artifact]
    assert isinstance(int8, BuiltArtifact) and int8.fidelity.route == "against the original"
    assert int8.fidelity.samples == 40 and int8.accuracy_drop == int8.fidelity.drop_pts
    assert all(t.seconds >= 0 for t in clock.times)
    assert "cache" not in totals(clock.times)

    again = builder(data, tmp_path)  # its own clock; the same cache
    assert isinstance(again.clock, StageClock) and again.clock is not clock
    again.build(plans)
    assert [t.stage for t in again.clock.times] == ["cache", "cache"]
    assert {t.detail for t in again.clock.times} == {"onnx fp32", "onnx int8"}
    assert sum(t.seconds for t in again.clock.times) < 0.5 * sum(t.seconds for t in clock.times)


def test_stages_timed_in_worker_processes_come_back_to_the_parent(data, tmp_path: Path) -> None:
    b = builder(data, tmp_path, jobs=2)
    assert b.jobs == 2, b.note
    try:
        built = b.build([CompressionPlan("onnx", "fp32"), CompressionPlan("onnx", "dynamic")])
    finally:
        b.close()
    assert all(isinstance(a, BuiltArtifact) for a in built.values())
    checked = {t.detail for t in b.clock.times if t.stage == "validate"}
    assert {"onnx fp32 against the original", "onnx dynamic"} <= checked
    assert ("quantize", "onnx dynamic") in {(t.stage, t.detail) for t in b.clock.times}


def test_the_source_runs_once_per_sample_for_every_check(data) -> None:
    engine = RememberedEngine(OnnxEngine(DIGITS_ONNX))
    _, held_out = data
    samples = [held_out.batch(["image"], i) for i in range(5)]
    first = [engine.run(s) for s in samples]
    second = [engine.run(s) for s in samples]
    assert engine.runs == 5
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
    second[0][0][...] = 7.0  # a caller's change to what it got is not what the next caller gets
    assert not np.array_equal(engine.run(samples[0])[0], second[0][0])
    other = samples[0][0].copy()
    other[0, 0, 0, 0] += 1.0
    engine.run([other])
    assert engine.runs == 6  # a different sample runs


def test_nothing_is_remembered_past_the_memory_bound(data) -> None:
    engine = RememberedEngine(OnnxEngine(DIGITS_ONNX), max_bytes=0)
    sample = data[1].batch(["image"], 0)
    engine.run(sample)
    engine.run(sample)
    assert engine.runs == 2


def result(stages: tuple[StageTime, ...] = ()) -> BuildResult:
    row = CandidateRow(CompressionPlan("onnx", "fp32"), "onnx fp32 x1", Status.MEASURED, 0.3,
                       Latency(2.0, LatencySource.MEASURED), 2.5, 20.0, 0.0, chosen=True)
    return BuildResult(ProfileRegistry.discover().get("host"), "local", (row,), Constraints(), "latency",
                       SourceModel("digits", "digits.onnx", "ab" * 32, ("image",)), stages=stages)


def test_the_report_says_where_the_build_time_went() -> None:
    stages = (StageTime("convert", 40.0, "onnx -> tflite (onnx2tf)"), StageTime("quantize", 12.5, "tflite int8"),
              StageTime("validate", 3.25, "tflite int8 against the original"),
              StageTime("convert", 20.0, "onnx -> savedmodel (onnx2tf)"))
    section = time_section(stages)
    assert "Where the build&#x27;s time went" in section or "Where the build's time went" in section
    assert "<td>convert</td><td>60.0</td><td>79%</td>" in section  # totals, by stage, in first-run order
    assert section.index("<td>convert</td><td>60.0") < section.index("<td>quantize</td><td>12.5")
    assert "tflite int8 against the original</td><td>3.25</td>" in section
    assert time_section(()) == ""
    page = render_report("digits", result(stages))
    assert "id='stages'" in page and "onnx -&gt; tflite (onnx2tf)" in page
    assert "id='stages'" not in render_report("digits", result())


class _Layers:
    """A quantizer stand-in: candidate files whose size grows with the layers kept in float."""

    format, mode = "onnx", "int8"

    def __init__(self, folder: Path) -> None:
        self.folder, self.built = folder, []  # type: ignore[var-annotated]

    def ranking(self, held_out: object, quantized: Path) -> list[FloatLayer]:
        return [FloatLayer(f"layer{i}", 1.0 / (i + 1), 0) for i in range(12)]

    def build(self, nodes: list[str]) -> Path:
        self.built.append(len(nodes))
        path = self.folder / f"c{len(self.built)}.onnx"
        path.write_bytes(b"x" * (1000 + 7 * len(nodes)))
        return path


class _Gate:
    """A judge stand-in: the gate holds once ``enough`` layers are in float (the drop falls with each)."""

    def __init__(self, enough: int) -> None:
        self.enough, self.clock, self.check = enough, StageClock(), Check()

    def __call__(self, candidate: Path, route: str) -> ValidationReport:
        kept = (candidate.stat().st_size - 1000) // 7
        drop = 0.5 if kept >= self.enough else 5.0 - 0.1 * kept
        return ValidationReport(route, 10, "held-out", [], Tolerances(),
                                metric={"name": "m", "source": 1.0, "artifact": 1.0 - drop / 100})


@pytest.mark.parametrize("enough", [1, 3, 5, 12, 13])
def test_the_fewest_float_layers_are_found_in_a_few_candidates(enough: int, tmp_path: Path) -> None:
    from edgepack.compress.quantize import _fallback

    first = tmp_path / "c0.onnx"
    first.write_bytes(b"x" * 1000)
    layers, judge = _Layers(tmp_path), _Gate(enough)
    candidate, report, kept = _fallback(layers, judge, None, first, judge(first, "all int8"))  # type: ignore[arg-type]
    assert len(kept) == min(enough, 12)  # the fewest that hold; all twelve when none do
    assert (report.gate_failure(judge.check.gate) is None) == (enough <= 12)
    assert candidate.stat().st_size == 1000 + 7 * len(kept)
    assert len(layers.built) <= 7  # doubling then halving back, not one candidate per layer (12)
    assert sum(k.size_cost_bytes for k in kept) == 7 * len(kept)  # each layer's share of the growth
    assert [k.name for k in kept] == [f"layer{i}" for i in range(len(kept))]
