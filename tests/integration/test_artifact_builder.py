"""The one builder (edgepack/compress/builder.py): each plan built once, checked against the original,
and a plan that cannot be built stays unbuildable; the pruning probe rules out the ratios not worth
building, by what their fp32 models actually lose."""

from __future__ import annotations

from pathlib import Path

from edgepack.compress.builder import ArtifactBuilder, BuildFailed, BuiltArtifact
from edgepack.compress.plan import CompressionPlan
from edgepack.convert.validate import ValidationReport
from edgepack.data import Dataset
from edgepack.model import load_model
from edgepack.profiles import ProfileRegistry


def builder(digits, digits_onnx: Path, cache: Path, *, calibrated: bool = True, say=lambda _: None) -> ArtifactBuilder:
    handle = load_model(digits_onnx)
    return ArtifactBuilder(handle, ProfileRegistry.discover().get("host"), Dataset({"image": digits.x_train[:120]}),
                           Dataset({"image": digits.x_test[:80]}, digits.y_test[:80]), cache, calibrated=calibrated,
                           max_accuracy_drop=1.0, distill_epochs=2, say=say)


def test_each_plan_is_built_once_and_checked_against_the_original(digits, digits_onnx: Path, tmp_path: Path):
    plans = [CompressionPlan("onnx", "fp32", 0.0, 1), CompressionPlan("onnx", "int8", 0.0, 1),
             CompressionPlan("onnx", "int8", 0.0, 2)]  # two thread counts: one artifact
    first = builder(digits, digits_onnx, tmp_path)
    built = first.build(plans)
    assert len(built) == 2 and all(isinstance(b, BuiltArtifact) for b in built.values())
    fp32, int8 = (built[p.artifact] for p in plans[:2])
    assert isinstance(int8.fidelity, ValidationReport) and int8.fidelity.accuracy is not None
    assert fp32.accuracy_drop == 0.0 and int8.details["quantization"]["mode"] == "int8"
    said: list[str] = []
    again = builder(digits, digits_onnx, tmp_path, say=said.append).build(plans)  # a new builder, the same cache
    assert {k: b.artifact.sha256 for k, b in again.items()} == {k: b.artifact.sha256 for k, b in built.items()}
    assert again[plans[1].artifact].fidelity == int8.fidelity  # read back from the cache as it was checked
    assert not any("FAILED" in line for line in said)


def test_a_plan_that_cannot_be_built_stays_unbuildable(digits, digits_onnx: Path, tmp_path: Path):
    plan = CompressionPlan("onnx", "fp32", 0.3)
    failed = builder(digits, digits_onnx, tmp_path, calibrated=False).build([plan])[plan.artifact]
    assert isinstance(failed, BuildFailed) and "needs --calib" in str(failed)
    said: list[str] = []
    again = builder(digits, digits_onnx, tmp_path, calibrated=False, say=said.append).build([plan])[plan.artifact]
    assert str(again) == str(failed) and said == [f"build  onnx fp32 pruned 30%: FAILED: {failed}"]


def test_the_probe_rules_out_the_ratios_whose_pruning_alone_loses_too_much(digits, digits_onnx: Path,
                                                                            tmp_path: Path):
    b = builder(digits, digits_onnx, tmp_path)
    ratios = [0.3, 0.6]
    probes = b.build([CompressionPlan("onnx", "fp32", r) for r in ratios])
    drops = {r: probes[("onnx", "fp32", r)].accuracy_drop for r in ratios}
    limit = min(d for d in drops.values() if d is not None)
    ruled_out = b.probe(ratios, limit)
    for r in ratios:
        if drops[r] is not None and drops[r] > limit:
            assert f"pruning {r:.0%} alone loses" in ruled_out[r]
        else:
            assert r not in ruled_out or "gives the same model" in ruled_out[r]
    assert b.probe(ratios, None) == {r: why for r, why in ruled_out.items() if "same model" in why}
