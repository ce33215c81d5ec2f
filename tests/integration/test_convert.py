"""Every conversion route, run for real, and checked against its source on real inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import main
from edgepack.conversion_error import ConversionError
from edgepack.convert.convert import ConversionResult, convert_model
from edgepack.data import Dataset
from edgepack.errors import InputShapeError
from edgepack.examples.digits import DigitsData
from edgepack.model import ModelFormat, load_model
from edgepack.profiles import ProfileRegistry

pytestmark = pytest.mark.slow
PARITY = 1e-4  # fp32 max abs error relative to the output's scale


@pytest.fixture(scope="module")
def host():
    return ProfileRegistry.discover().get("host")


def digits_test_set(digits: DigitsData, nhwc: bool = False) -> Dataset:
    x = digits.x_test.transpose(0, 2, 3, 1) if nhwc else digits.x_test
    return Dataset({"image": np.ascontiguousarray(x)}, digits.y_test)


def assert_every_route_matches(result: ConversionResult, samples: int | None = None) -> None:
    assert result.attempts, "no route was tried"
    for attempt in result.attempts:
        assert attempt.error is None, f"{attempt.route}: {attempt.error}"
        assert attempt.report is not None and attempt.report.passed, attempt.report.first_failure
        for drift in attempt.report.outputs:
            assert drift.max_abs_error_rel <= PARITY, (attempt.route, drift)
            if drift.top1_agreement is not None:
                assert drift.top1_agreement == 1.0, (attempt.route, drift)
        if samples is not None:
            assert attempt.report.samples == samples


def test_torch_to_onnx_digits(digits_pt2: Path, digits: DigitsData, host, tmp_path: Path):
    handle = load_model(digits_pt2)
    test_set = Dataset({handle.inputs[0].name: digits.x_test}, digits.y_test)
    result = convert_model(handle, "onnx", tmp_path / "d.onnx", host, test_set, max_samples=10_000)
    assert_every_route_matches(result, samples=len(digits.x_test))
    assert result.artifact.route == "torch.onnx"
    assert load_model(tmp_path / "d.onnx").format is ModelFormat.ONNX


def test_torch_to_tflite_every_route(digits_pt2: Path, digits: DigitsData, host, tmp_path: Path):
    handle = load_model(digits_pt2)
    test_set = Dataset({handle.inputs[0].name: digits.x_test}, digits.y_test)
    result = convert_model(handle, "tflite", tmp_path / "d.tflite", host, test_set, max_samples=10_000)
    assert {a.route for a in result.attempts} == {"litert-torch", "torch.onnx + onnx2tf"}
    assert_every_route_matches(result, samples=len(digits.x_test))


def test_onnx_to_tflite_records_layout(digits_onnx: Path, digits: DigitsData, host, tmp_path: Path):
    out = tmp_path / "digits.tflite"
    result = convert_model(load_model(digits_onnx), "tflite", out, host, digits_test_set(digits),
                           max_samples=10_000)
    assert_every_route_matches(result, samples=len(digits.x_test))
    binding = result.artifact.inputs[0]
    assert (binding.layout, binding.source_layout, binding.perm) == ("NHWC", "NCHW", (0, 2, 3, 1))
    assert binding.shape == (1, 8, 8, 1)
    metadata = json.loads(Path(f"{out}.edgepack.json").read_text())
    assert metadata["inputs"][0]["perm"] == [0, 2, 3, 1]
    assert metadata["sha256"] == load_model(out).sha256
    assert metadata["source_sha256"] == load_model(digits_onnx).sha256
    assert metadata["validation"]["passed"] is True


def test_mobilenet_onnx_to_tflite_savedmodel_and_torch(mobilenet_onnx: Path, host, tmp_path: Path):
    handle = load_model(mobilenet_onnx)
    for target, out in (("tflite", tmp_path / "m.tflite"), ("savedmodel", tmp_path / "m_saved"),
                        ("torch", tmp_path / "m_torch")):
        result = convert_model(handle, target, out, host)
        assert_every_route_matches(result)
        assert result.report.data == "random" and result.report.samples == 16
    assert (tmp_path / "m_saved" / "saved_model.pb").exists()
    assert (tmp_path / "m_torch" / "model.pt").exists() and (tmp_path / "m_torch" / "state_dict.pt").exists()
    assert load_model(tmp_path / "m_torch" / "model.pt", input_shape="1,3,32,32").format is ModelFormat.TORCHSCRIPT


def test_mobilenet_torch_to_tflite_every_route(host, tmp_path: Path):
    import torch

    from edgepack.examples.mobilenet import mobilenet_like

    path = tmp_path / "mobilenet.pt2"
    torch.export.save(torch.export.export(mobilenet_like(), (torch.zeros(1, 3, 32, 32),)), str(path))
    result = convert_model(load_model(path), "tflite", tmp_path / "m.tflite", host)
    assert {a.route for a in result.attempts} == {"litert-torch", "torch.onnx + onnx2tf"}
    assert_every_route_matches(result)


def test_onnx_to_torch_digits(digits_onnx: Path, digits: DigitsData, host, tmp_path: Path):
    result = convert_model(load_model(digits_onnx), "torch", tmp_path / "t", host, digits_test_set(digits),
                           max_samples=10_000)
    assert_every_route_matches(result, samples=len(digits.x_test))
    import torch

    state = torch.load(tmp_path / "t" / "state_dict.pt")
    assert sum(v.numel() for k, v in state.items() if ".weight" in k or ".bias" in k) == 71_754


def test_keras_routes(keras_digits: Path, digits: DigitsData, host, tmp_path: Path):
    handle = load_model(keras_digits, input_shape="1,8,8,1")
    data = digits_test_set(digits, nhwc=True)
    data = Dataset({handle.inputs[0].name: data.inputs["image"]}, data.labels)
    tflite = convert_model(handle, "tflite", tmp_path / "k.tflite", host, data, max_samples=10_000)
    assert {a.route for a in tflite.attempts} == {"tflite-converter", "tf2onnx + onnx2tf"}
    assert tflite.artifact.route == "tflite-converter"  # the direct route wins a tie
    assert_every_route_matches(tflite, samples=len(digits.x_test))
    onnx_result = convert_model(handle, "onnx", tmp_path / "k.onnx", host, data, max_samples=10_000)
    assert onnx_result.artifact.route == "tf2onnx"
    assert_every_route_matches(onnx_result)
    assert onnx_result.artifact.inputs[0].layout == "NHWC" and onnx_result.artifact.inputs[0].perm is None


def test_keras_mobilenet_and_savedmodel(host, tmp_path: Path):
    from edgepack.examples.mobilenet import keras_mobilenet_like

    keras_file = tmp_path / "kmb.keras"
    model = keras_mobilenet_like()
    model.save(keras_file)
    result = convert_model(load_model(keras_file), "onnx", tmp_path / "kmb.onnx", host)
    assert_every_route_matches(result)
    saved = tmp_path / "kmb_saved"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    result = convert_model(load_model(saved, input_shape="1,32,32,3"), "tflite", tmp_path / "kmb.tflite", host)
    assert_every_route_matches(result)


def _lppool_model(path: Path) -> Path:
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("LpPool", ["x"], ["y"], kernel_shape=[2, 2], p=2)
    graph = helper.make_graph([node], "lp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3, 3])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))
    return path


def test_op_no_route_supports(tmp_path: Path, host, capsys):
    model = _lppool_model(tmp_path / "lp.onnx")
    with pytest.raises(ConversionError, match="LpPool is not supported by onnx2tf"):
        convert_model(load_model(model), "tflite", tmp_path / "lp.tflite", host)
    code = main(["convert", str(model), "--to", "torch", "-o", str(tmp_path / "lp_torch")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "LpPool" in err and "Traceback" not in err
    assert not (tmp_path / "lp.tflite").exists() and not (tmp_path / "lp_torch").exists()
    assert not list(tmp_path.glob(".edgepack-*"))


def test_dynamic_shape_needs_input_shape(tmp_path: Path, host, capsys):
    import torch
    from torch import nn

    path = tmp_path / "dyn.onnx"
    torch.onnx.export(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval(), (torch.zeros(1, 3, 8, 8),), str(path),
                      dynamo=False, input_names=["x"], dynamic_axes={"x": {0: "batch", 2: "h", 3: "w"}})
    with pytest.raises(InputShapeError, match="dynamic shape"):
        convert_model(load_model(path), "tflite", tmp_path / "o.tflite", host)
    code = main(["convert", str(path), "--to", "tflite", "-o", str(tmp_path / "d.tflite")])
    err = capsys.readouterr().err
    assert code == 2 and "dynamic shape" in err and "--input-shape" in err and err.count("\n") == 1
    result = convert_model(load_model(path, input_shape="1,3,16,16"), "torch", tmp_path / "d_torch", host)
    assert_every_route_matches(result)


def test_convert_cli_json(digits_onnx: Path, digits: DigitsData, tmp_path: Path, capsys):
    calib = tmp_path / "calib.npy"
    np.save(calib, digits.x_test[:20])
    out = tmp_path / "cli.tflite"
    code = main(["convert", str(digits_onnx), "--to", "tflite", "-o", str(out), "--calib", str(calib), "--json"])
    captured = capsys.readouterr()
    assert code == 0
    data = json.loads(captured.out)
    assert data["route"] == "onnx2tf" and data["validation"]["data"] == "calibration"
    assert data["validation"]["samples"] == 20 and out.exists()
    bad = tmp_path / "bad.npy"
    np.save(bad, digits.x_test[:5, :, :4, :4])
    code = main(["convert", str(digits_onnx), "--to", "tflite", "-o", str(tmp_path / "x.tflite"), "--calib", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "expects samples of shape Nx1x8x8" in err and "given 5x1x4x4" in err


def test_json_stdout_stays_clean_for_torch_sources(tmp_path: Path):
    """The dynamo exporter and litert-torch print progress; none of it may reach --json stdout."""
    import subprocess
    import sys

    proc = subprocess.run([str(Path(sys.executable).parent / "edgepack"), "convert", "--torch-module",
                           "edgepack.examples.digits:digits_cnn", "--input-shape", "1,1,8,8", "--to", "tflite",
                           "-o", str(tmp_path / "m.tflite"), "--json"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-500:]
    data = json.loads(proc.stdout)
    assert {a["route"] for a in data["attempts"]} == {"litert-torch", "torch.onnx + onnx2tf"}


def test_drift_past_tolerance_names_route_and_output(digits_onnx: Path, tmp_path: Path, capsys):
    from edgepack.profiles import BUILTIN_DIR

    strict = tmp_path / "strict-host.toml"
    strict.write_text((BUILTIN_DIR / "host.toml").read_text() + "\n[tolerances]\nmax_abs_error_rel = 1e-12\n")
    out = tmp_path / "d_torch"
    code = main(["convert", str(digits_onnx), "--to", "torch", "-o", str(out), "--profile", str(strict),
                 "--device", "strict-host"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "conversion onnx-to-torch failed: drifted past tolerance: output 'linear_1'" in err
    assert "(tolerance 1e-12)" in err and not out.exists()


def test_parity_tolerance_scales_with_depth_and_takes_the_flag(tmp_path: Path, digits_onnx: Path):
    import onnx
    from onnx import TensorProto, helper

    from edgepack.convert.convert import parity_tolerances
    from edgepack.errors import UsageError
    from edgepack.model import load_model
    from edgepack.profiles import ProfileRegistry

    host = ProfileRegistry.discover([]).get("host")
    base = host.tolerances.max_abs_error_rel
    chain = [helper.make_node("Relu", [f"t{i}"], [f"t{i + 1}"]) for i in range(200)]
    graph = helper.make_graph(chain, "deep", [helper.make_tensor_value_info("t0", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("t200", TensorProto.FLOAT, [1, 8])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / "deep.onnx")
    deep = parity_tolerances(load_model(tmp_path / "deep.onnx"), host)
    assert deep.max_abs_error_rel == pytest.approx(base * 2)  # sqrt(200 / 50)
    assert deep.min_cosine == host.tolerances.min_cosine and deep.min_top1_agreement == 1.0
    shallow = load_model(digits_onnx)
    assert parity_tolerances(shallow, host) == host.tolerances
    assert parity_tolerances(shallow, host, 1e-3).max_abs_error_rel == 1e-3
    with pytest.raises(UsageError, match="--tolerance 5 is not a fraction"):
        parity_tolerances(shallow, host, 5.0)


@pytest.mark.slow
def test_tolerance_flag_refuses_drift_past_it(cli, one_line_error, tmp_path: Path, digits_onnx: Path):
    one_line_error(cli("convert", digits_onnx, "--to", "tflite", "--tolerance", "1e-12", "-o", tmp_path / "d.tflite"),
                   "drifted past tolerance", "(tolerance 1e-12)", "pass --tolerance")
    assert not (tmp_path / "d.tflite").exists()
