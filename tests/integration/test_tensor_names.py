"""A model whose tensor names onnx2tf cannot take (``<``, ``"``, spaces, non-ASCII) converts with the real
onnx2tf, is validated, and keeps the user's names in the TFLite file, its metadata and an MCU package."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgepack.convert.tensor_names import NAMES_FILE

INPUT, OUTPUT = "image <1>", 'prob"é'


@pytest.fixture(scope="module")
def odd_names(tmp_path_factory: pytest.TempPathFactory, digits) -> tuple[Path, Path]:
    """(a small conv net on the digits' 1x8x8 input with odd names everywhere, its calibration data)."""
    root = tmp_path_factory.mktemp("names")
    rng = np.random.default_rng(0)
    init = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "conv weight <w>"),
            numpy_helper.from_array(rng.standard_normal(4).astype(np.float32) + 0.1, "conv bias"),
            numpy_helper.from_array(rng.standard_normal((256, 10)).astype(np.float32) * 0.1, "fc.w"),
            numpy_helper.from_array(np.array([1, -1], np.int64), "shape")]
    nodes = [helper.make_node("Conv", [INPUT, "conv weight <w>", "conv bias"], ["conv out ü"], pads=[1, 1, 1, 1],
                              name="conv 1"),
             helper.make_node("Relu", ["conv out ü"], ["relu:0"], name="relu"),
             helper.make_node("Reshape", ["relu:0", "shape"], ["flat"], name="flatten"),
             helper.make_node("MatMul", ["flat", "fc.w"], ['logits "x"'], name="fc"),
             helper.make_node("Softmax", ['logits "x"'], [OUTPUT], axis=1, name="softmax")]
    graph = helper.make_graph(nodes, "odd names",
                              [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, 10])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, root / "odd.onnx")
    np.save(root / "calib.npy", digits.x_train[:48].astype(np.float32))
    return root / "odd.onnx", root / "calib.npy"


def test_onnx2tf_takes_odd_names_and_the_tflite_gets_them_back(odd_names, tmp_path: Path) -> None:
    import onnxruntime as ort

    from edgepack.convert.onnx_to_tflite import convert_onnx_to_tflite
    from edgepack.model_files import tflite_interpreter

    model, calib_path = odd_names
    calib = np.load(calib_path)
    outputs = convert_onnx_to_tflite(model, tmp_path / "out", calib=calib)
    interpreter = tflite_interpreter(outputs.float32, num_threads=1)
    interpreter.allocate_tensors()
    (given,), (result,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert given["name"] == INPUT
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for sample in calib[:8]:
        interpreter.set_tensor(given["index"], sample[None].transpose(0, 2, 3, 1))  # onnx2tf's NHWC
        interpreter.invoke()
        expected = session.run(None, {INPUT: sample[None]})[0]
        np.testing.assert_allclose(interpreter.get_tensor(result["index"]), expected, atol=1e-5)
    assert outputs.saved_model is not None
    assert json.loads((outputs.saved_model / NAMES_FILE).read_text(encoding="utf-8"))["tensors"]["image__1_"] == INPUT


def test_convert_goes_through_onnx2tf_and_its_metadata_keeps_the_names(cli, odd_names, tmp_path: Path) -> None:
    model, calib = odd_names
    out = tmp_path / "odd.tflite"
    code, stdout, err = cli("convert", model, "--to", "tflite", "-o", out, "--calib", calib, "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["route"] == "onnx2tf" and result["validation"]["samples"] > 0
    sidecar = json.loads(Path(f"{out}.edgepack.json").read_text(encoding="utf-8"))
    assert [(b["name"], b["source_name"]) for b in sidecar["inputs"]] == [(INPUT, INPUT)]
    assert [b["source_name"] for b in sidecar["outputs"]] == [OUTPUT]


@pytest.mark.slow
def test_an_mcu_build_of_odd_names_builds_and_keeps_them(cli, odd_names, tmp_path: Path) -> None:
    """The int8 TFLite is quantized from onnx2tf's SavedModel (safe names) and renamed back."""
    model, calib = odd_names
    code, _, err = cli("build", model, "--device", "stm32h7", "--calib", calib, "--prune", "0",
                       "--cache", tmp_path / "cache", "-o", tmp_path / "dist", "--json")
    assert code == 0, err
    manifest = json.loads((tmp_path / "dist" / "odd-stm32h7" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["format"] == "tflite"
    assert [b["source_name"] for b in manifest["inputs"]] == [INPUT]
    assert INPUT in manifest["inputs"][0]["name"]  # "serving_default_image <1>:0", the converter's form
    assert [b["source_name"] for b in manifest["outputs"]] == [OUTPUT]
