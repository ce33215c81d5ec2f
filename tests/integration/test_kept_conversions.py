"""One onnx2tf run serves every candidate of a build that starts from the same graph (convert/reuse.py):
the fp32 TFLite file and the SavedModel that fp16, int8 and dynamic quantize from; a failure is kept
too; outside a build nothing is kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepack.compress.builder import ArtifactBuilder, BuiltArtifact
from edgepack.compress.plan import CompressionPlan
from edgepack.conversion_error import ConversionError
from edgepack.convert import reuse
from edgepack.convert.onnx_to_tflite import convert_onnx_to_tflite
from edgepack.data import Dataset
from edgepack.examples.digits import load_digits_data
from edgepack.model import load_model
from edgepack.profiles import ProfileRegistry

DIGITS_ONNX = Path(__file__).resolve().parents[2] / "edgepack" / "examples" / "digits_cnn.onnx"


def test_the_same_graph_is_converted_once_and_its_failure_kept(tmp_path: Path) -> None:
    kept = tmp_path / "kept"
    assert reuse.kept_folder() is None
    with reuse.conversions_kept_in(kept):
        assert reuse.kept_folder() == kept
        convert_onnx_to_tflite(DIGITS_ONNX, tmp_path / "a")
        [made] = kept.glob("onnx2tf-*/out")
        (made / "model_float32.tflite").write_bytes((made / "model_float32.tflite").read_bytes() + b"kept")
        second = convert_onnx_to_tflite(DIGITS_ONNX, tmp_path / "b")  # copied from the kept run
        assert second.float32.read_bytes().endswith(b"kept")
        assert second.saved_model is not None and (second.saved_model / "saved_model.pb").is_file()
        (made.parent / "failed.txt").write_text("op Foo is not supported")
        with pytest.raises(ConversionError, match=r"op Foo is not supported \(kept from an earlier try"):
            convert_onnx_to_tflite(DIGITS_ONNX, tmp_path / "c")
    assert reuse.kept_folder() is None


def test_a_build_runs_onnx2tf_once_for_every_tflite_precision(tmp_path: Path) -> None:
    digits = load_digits_data()
    builder = ArtifactBuilder(load_model(DIGITS_ONNX), ProfileRegistry.discover().get("host"),
                              Dataset({"image": digits.x_train[:64]}),
                              Dataset({"image": digits.x_test[:40]}, digits.y_test[:40]), tmp_path,
                              calibrated=True, max_accuracy_drop=1.0)
    plans = [CompressionPlan("tflite", "fp32"), CompressionPlan("tflite", "fp16"), CompressionPlan("tflite", "dynamic")]
    built = builder.build(plans)
    assert all(isinstance(b, BuiltArtifact) for b in built.values()), built
    assert len(list((tmp_path / "artifacts" / "conversions").glob("onnx2tf-*/out"))) == 1
    converted = [t.detail for t in builder.clock.times if t.stage == "convert"]
    assert "onnx -> tflite (onnx2tf)" in converted and "onnx -> savedmodel (onnx2tf)" in converted
    # the SavedModel fp16 quantized from, verified once, is the one dynamic quantizes from
    assert converted.count("onnx -> savedmodel (onnx2tf)") == 1
    assert "onnx -> savedmodel (made and verified earlier in this build)" in converted
    checked = [t.detail for t in builder.clock.times if t.stage == "validate"]
    assert checked.count("onnx -> savedmodel (onnx2tf)") == 1
    assert "tflite fp32 against the original" in checked
    assert "tflite fp16" in checked and "tflite dynamic" in checked  # quantize's check of the written file
    for plan in plans:  # every artifact checked against the original on every held-out sample
        assert built[plan.artifact].fidelity.samples == 40
        assert built[plan.artifact].fidelity.route == "against the original"
