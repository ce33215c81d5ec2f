"""Quantization of the digits CNN in every mode, checked with the real runtimes on the test split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import main
from edgepack.compress.quantize import quantize_model
from edgepack.data import DataError, Dataset
from edgepack.examples.digits import INPUT_SHAPE, DigitsData
from edgepack.model import load_model
from edgepack.profiles import ProfileRegistry

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def profiles():
    return ProfileRegistry.discover()


def split(digits: DigitsData) -> tuple[Dataset, Dataset]:
    return (Dataset({"image": digits.x_train[:300]}),
            Dataset({"image": digits.x_test}, digits.y_test))


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_full_int8_is_small_and_accurate(fmt: str, digits_onnx: Path, digits: DigitsData, profiles, tmp_path: Path):
    calib, test = split(digits)
    out = tmp_path / f"d.{fmt}"
    result = quantize_model(load_model(digits_onnx), calib, profiles.get("host"), out, fmt=fmt, mode="int8",
                            eval_data=test)
    assert result.artifact.size_bytes <= 0.3 * result.fp32_size_bytes, (result.artifact.size_bytes,
                                                                         result.fp32_size_bytes)
    assert result.fidelity.samples == len(digits.x_test)  # the whole test split, none of it calibration
    assert result.fidelity.source_accuracy is not None and result.fidelity.source_accuracy >= 0.97
    assert result.accuracy_drop_pts is not None and result.accuracy_drop_pts <= 0.5
    assert result.fidelity.top1_agreement is not None and result.fidelity.top1_agreement >= 0.99
    assert not result.float_layers
    meta = json.loads(Path(f"{out}.edgepack.json").read_text())
    assert meta["precision"] == "int8" and meta["sha256"] == load_model(out).sha256
    if fmt == "onnx":  # QDQ with uint8 activations on this x86 host (ONNX Runtime's fast U8S8 path)
        import onnx

        graph = onnx.load(str(out)).graph
        assert any(n.op_type == "QuantizeLinear" for n in graph.node)
        zero_points = [i for i in graph.initializer
                       if i.name.endswith("_zero_point") and "weight" not in i.name and "bias" not in i.name]
        assert zero_points and all(i.data_type == onnx.TensorProto.UINT8 for i in zero_points)
    else:
        from edgepack.analysis.tflite_graph import summarize_tflite

        summary = summarize_tflite(out)
        assert {layer.precision for layer in summary.layers if layer.macs} == {"int8"}


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
@pytest.mark.parametrize("mode", ["fp16", "dynamic"])
def test_fp16_and_dynamic(fmt: str, mode: str, digits_onnx: Path, digits: DigitsData, profiles, tmp_path: Path):
    calib, test = split(digits)
    result = quantize_model(load_model(digits_onnx), calib, profiles.get("host"), tmp_path / f"d.{fmt}", fmt=fmt,
                            mode=mode, eval_data=test)
    ratio = result.artifact.size_bytes / result.fp32_size_bytes
    assert ratio <= (0.6 if mode == "fp16" else 0.35)
    assert result.accuracy_drop_pts is not None and result.accuracy_drop_pts <= 0.5
    assert result.fidelity.outputs[0].cosine > 0.999


def test_npu_gets_integer_io(digits_onnx: Path, digits: DigitsData, profiles, tmp_path: Path):
    calib, test = split(digits)
    coral = profiles.get("coral-edgetpu")
    result = quantize_model(load_model(digits_onnx), calib, coral, tmp_path / "coral.tflite", eval_data=test)
    from edgepack.model_files import tflite_interpreter

    interpreter = tflite_interpreter(result.artifact.path, delegates=False)
    for detail in [*interpreter.get_input_details(), *interpreter.get_output_details()]:
        assert np.dtype(detail["dtype"]).name in coral.precisions.io_dtypes
    binding = result.artifact.inputs[0]
    assert binding.dtype in ("int8", "uint8") and binding.scale and binding.zero_point is not None
    assert result.accuracy_drop_pts is not None and result.accuracy_drop_pts <= 0.5
    with pytest.raises(Exception, match="requires int8"):
        quantize_model(load_model(digits_onnx), calib, coral, tmp_path / "x.tflite", mode="fp16")


def _outlier_model(digits_model, tmp_path: Path) -> Path:
    """The trained CNN with one channel of conv1 scaled by 300 and conv2's reading of it by 1/300: the same
    function in float (ReLU is positively homogeneous), but a per-tensor activation range that int8 cannot
    hold without crushing every other channel."""
    import copy

    import torch

    from edgepack.convert.torch_to_onnx import export_to_onnx

    model = copy.deepcopy(digits_model)
    conv1, conv2 = model[0], model[2]
    with torch.no_grad():
        conv1.weight[0] *= 300
        conv1.bias[0] *= 300
        conv2.weight[:, 0] /= 300
    return export_to_onnx(model, (torch.zeros(INPUT_SHAPE),), tmp_path / "outlier.onnx", input_names=["image"]).path


@pytest.mark.parametrize("fmt", ["onnx", "tflite"])
def test_accuracy_aware_fallback_keeps_sensitive_layers_in_float(
        fmt: str, digits_model, digits: DigitsData, profiles, tmp_path: Path):
    calib, test = split(digits)
    handle = load_model(_outlier_model(digits_model, tmp_path))
    host = profiles.get("host")
    strict = quantize_model(handle, calib, host, tmp_path / f"f.{fmt}", fmt=fmt, eval_data=test,
                            max_accuracy_drop=100.0)
    assert strict.accuracy_drop_pts is not None and strict.accuracy_drop_pts > 1.0, "the outlier should hurt int8"
    result = quantize_model(handle, calib, host, tmp_path / f"g.{fmt}", fmt=fmt, eval_data=test,
                            max_accuracy_drop=1.0)
    assert result.float_layers, "no layer was kept in float"
    assert result.accuracy_drop_pts is not None and result.accuracy_drop_pts <= 1.0
    assert result.within_bound
    assert result.artifact.size_bytes > strict.artifact.size_bytes
    assert sum(f.size_cost_bytes for f in result.float_layers) == result.artifact.size_bytes - \
        result.all_quantized_size_bytes


def test_bad_calibration_data_is_refused(digits_onnx: Path, digits: DigitsData, tmp_path: Path, capsys):
    def run(*argv: str) -> tuple[int, str]:
        code = main(["quantize", str(digits_onnx), "-o", str(tmp_path / "q.tflite"), *argv])
        return code, capsys.readouterr().err

    wrong_shape = tmp_path / "shape.npy"
    np.save(wrong_shape, np.zeros((50, 3, 8, 8), np.float32))
    code, err = run("--calib", str(wrong_shape))
    assert code == 2 and "expects samples of shape Nx1x8x8 (NCHW), given 50x3x8x8" in err and err.count("\n") == 1
    wrong_dtype = tmp_path / "dtype.npy"
    np.save(wrong_dtype, np.zeros((50, 1, 8, 8), np.int64))
    code, err = run("--calib", str(wrong_dtype))
    assert code == 2 and "expects float32, given int64" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run("--calib", str(empty))
    assert code == 2 and "no .npy, .npz or image files" in err
    few = tmp_path / "few.npy"
    np.save(few, digits.x_train[:3])
    code, err = run("--calib", str(few))
    assert code == 2 and "3 samples; at least 8 are needed" in err
    zero = tmp_path / "zero.npy"
    np.save(zero, np.zeros((0, 1, 8, 8), np.float32))
    code, err = run("--calib", str(zero))
    assert code == 2 and "no samples" in err
    assert not (tmp_path / "q.tflite").exists()
    with pytest.raises(DataError):
        from edgepack.data import load_dataset

        load_dataset(tmp_path / "missing.npy", load_model(digits_onnx).inputs)


def test_quantize_cli_with_images_and_callable(digits_onnx: Path, digits: DigitsData, tmp_path: Path, capsys,
                                               monkeypatch):
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    for i, x in enumerate(digits.x_train[:40]):
        Image.fromarray((x[0] * 255).astype(np.uint8)).resize((32, 32)).save(images / f"{i:03d}.png")
    # 8 held-out images: one disagreement is 12.5 points, so the bound is widened (the gate is tested elsewhere)
    code = main(["quantize", str(digits_onnx), "--calib", str(images), "--format", "onnx",
                 "-o", str(tmp_path / "img.onnx"), "--json", "--max-accuracy-drop", "50"])
    out = capsys.readouterr().out
    assert code == 0
    data = json.loads(out)
    assert data["calibration_samples"] == 32 and data["fidelity"]["samples"] == 8  # 80/20 held out
    module = tmp_path / "calib_source.py"
    module.write_text("import numpy as np\n\ndef samples():\n"
                      "    return [np.full((1, 8, 8), i / 40, np.float32) for i in range(40)]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    code = main(["quantize", str(digits_onnx), "--calib", "calib_source:samples", "--format", "onnx",
                 "-o", str(tmp_path / "fn.onnx"), "--max-accuracy-drop", "50"])
    out = capsys.readouterr().out
    assert code == 0 and "held-out samples (calibrated on 32)" in out
