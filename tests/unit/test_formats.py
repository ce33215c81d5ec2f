"""The format vocabulary (edgepack/formats.py) and the plan that carries it (edgepack/compress/plan.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from edgepack.compress.plan import AS_GIVEN, CompressionPlan, Precision
from edgepack.formats import FORMATS, ArtifactFormat

ONNX, TFLITE = ArtifactFormat.ONNX, ArtifactFormat.TFLITE


# -- ArtifactFormat ---------------------------------------------------------------------------------------

def test_each_format_knows_its_suffix_runtime_and_engine():
    assert [(f.suffix, f.runtime, f.engine) for f in ArtifactFormat] == [
        (".onnx", "onnxruntime", "ONNX Runtime"), (".tflite", "tflite", "the TFLite interpreter")]
    assert FORMATS == ("onnx", "tflite")


def test_a_format_is_its_string_in_text_comparisons_and_dict_keys():
    assert str(ONNX) == "onnx" and f"{TFLITE}" == "tflite"
    assert ONNX == "onnx" and TFLITE != "onnx"
    assert {"onnx": 1, "tflite": 2}[TFLITE] == 2 and {ONNX: 1}["onnx"] == 1
    assert ArtifactFormat("tflite") is TFLITE
    with pytest.raises(ValueError):
        ArtifactFormat("pt2")


@pytest.mark.parametrize(("path", "expected"), [
    ("model.onnx", ONNX),
    ("dist/Model.ONNX", ONNX),  # the suffix is read case-blind
    (Path("a/b/model.tflite"), TFLITE),
    ("model.onnx.edgepack.json", None),  # the sidecar is not the artifact
    ("model.pt2", None),
    ("model", None),
    ("model.", None),
])
def test_of_path_reads_the_suffix_and_nothing_else(path: str | Path, expected: ArtifactFormat | None):
    assert ArtifactFormat.of_path(path) is expected


def test_for_runtime_maps_a_profiles_runtime_to_the_format_it_runs():
    assert ArtifactFormat.for_runtime("onnxruntime") is ONNX
    for runtime in ("tflite", "tflite-micro", "tflite-gpu", "edgetpu"):
        assert ArtifactFormat.for_runtime(runtime) is TFLITE, runtime
    for fmt in ArtifactFormat:  # the harness's runtime of a format leads back to it
        assert ArtifactFormat.for_runtime(fmt.runtime) is fmt


# -- Precision ----------------------------------------------------------------------------------------------

def test_only_int8_needs_calibration_data():
    assert [p for p in Precision if p.calibrated] == [Precision.INT8]
    assert [str(p) for p in Precision] == ["fp32", "fp16", "int8", "dynamic"]
    assert Precision("dynamic") is Precision.DYNAMIC and {Precision.FP16: 1}["fp16"] == 1
    with pytest.raises(ValueError):
        Precision("int4")


# -- CompressionPlan ----------------------------------------------------------------------------------------

def test_strings_are_read_into_the_enums_so_cli_and_code_plans_are_equal():
    from_text = CompressionPlan("onnx", "int8", 0.25, 2)
    in_code = CompressionPlan(ONNX, Precision.INT8, 0.25, 2)
    assert type(from_text.format) is ArtifactFormat and type(from_text.precision) is Precision
    assert from_text.format is ONNX and from_text.precision is Precision.INT8
    assert from_text == in_code and hash(from_text) == hash(in_code) and from_text.key == in_code.key
    assert len({from_text, in_code}) == 1


@pytest.mark.parametrize(("fmt", "precision"), [("pt2", "fp32"), ("onnx", "int4"), ("ONNX", "fp32")])
def test_a_format_or_precision_outside_the_vocabulary_is_refused(fmt: str, precision: str):
    with pytest.raises(ValueError):
        CompressionPlan(fmt, precision)


def test_a_plan_is_frozen():
    plan = CompressionPlan("tflite", "fp16")
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.threads = 4  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.format = "onnx"  # type: ignore[misc]
    assert plan.threads == 1 and plan.format is TFLITE


def test_the_key_is_what_records_were_keyed_by_before_plans_as_given():
    """Records and cached artifacts are found by this key: a plan not as given keeps the key it always had."""
    plan = CompressionPlan("onnx", "int8", 0.5, 4)
    old = json.dumps({"format": "onnx", "precision": "int8", "prune_ratio": 0.5, "threads": 4}, sort_keys=True)
    assert plan.key == hashlib.sha256(old.encode()).hexdigest()[:16]
    assert CompressionPlan("onnx", "int8", 0.5, 4, as_given=True).key != plan.key


def test_keys_differ_by_every_field():
    plans = [CompressionPlan("onnx", "fp32"), CompressionPlan("tflite", "fp32"), CompressionPlan("onnx", "int8"),
             CompressionPlan("onnx", "fp32", 0.3), CompressionPlan("onnx", "fp32", threads=2),
             CompressionPlan("onnx", "fp32", as_given=True)]
    keys = [p.key for p in plans]
    assert len(set(keys)) == len(plans) and all(len(k) == 16 and int(k, 16) >= 0 for k in keys)


def test_plans_differing_only_in_threads_share_an_artifact():
    one, four = CompressionPlan("tflite", "int8", 0.3, 1), CompressionPlan("tflite", "int8", 0.3, 4)
    assert one.artifact == four.artifact == ("tflite", "int8", 0.3) and one.key != four.key
    assert all(type(part) is not ArtifactFormat and type(part) is not Precision for part in one.artifact)
    assert CompressionPlan("onnx", "int8", 0.3).artifact != one.artifact
    assert CompressionPlan("tflite", "int8", 0.5).artifact != one.artifact


def test_the_source_as_given_is_one_artifact_whatever_its_precision():
    fp32 = CompressionPlan("onnx", "fp32", as_given=True)
    int8 = CompressionPlan("onnx", "int8", as_given=True, threads=2)
    assert fp32.artifact == int8.artifact == ("onnx", AS_GIVEN, 0.0)
    assert fp32.artifact != CompressionPlan("onnx", "fp32").artifact


@pytest.mark.parametrize(("plan", "baseline"), [
    (CompressionPlan("onnx", "fp32"), True),
    (CompressionPlan("tflite", "fp32", threads=4), True),
    (CompressionPlan("onnx", "fp32", 0.1), False),
    (CompressionPlan("onnx", "fp16"), False),
    (CompressionPlan("tflite", "int8"), False),
    (CompressionPlan("tflite", "int8", as_given=True), True),  # the user's model, whatever it is
])
def test_the_baseline_is_the_model_as_the_user_has_it(plan: CompressionPlan, baseline: bool):
    assert plan.is_baseline is baseline


@pytest.mark.parametrize(("plan", "label"), [
    (CompressionPlan("onnx", "fp32"), "onnx fp32 x1"),
    (CompressionPlan("tflite", "int8", 0.3, 2), "tflite int8 pruned 30% x2"),
    (CompressionPlan("onnx", "dynamic", 0.25, 4), "onnx dynamic pruned 25% x4"),
    (CompressionPlan("tflite", "fp16", as_given=True), "tflite fp16 as given x1"),
])
def test_labels_name_the_plan_in_words(plan: CompressionPlan, label: str):
    assert plan.label == label


def test_to_dict_is_plain_json_with_the_key():
    plan = CompressionPlan(TFLITE, Precision.INT8, 0.3, 2)
    data = json.loads(json.dumps(plan.to_dict()))
    assert data == {"format": "tflite", "precision": "int8", "prune_ratio": 0.3, "threads": 2, "as_given": False,
                    "key": plan.key}
    fields = {k: v for k, v in data.items() if k != "key"}
    assert CompressionPlan(**fields) == plan  # replayable: the dict makes the same plan again
