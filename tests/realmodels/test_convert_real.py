"""Conversions of real models that failed for a fixable reason are fixed, then verified here with the
runtimes themselves (LiteRT for the source, ONNX Runtime for the result) on real inputs."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from edgepack.examples.real_models import by_name, fetch, real_inputs

pytestmark = pytest.mark.realmodels


def test_sparse_tflite_weights_are_made_dense_before_tf2onnx(cli, tmp_path):
    """MediaPipe's face_detection_full_range_sparse stores weights sparse (DENSIFY ops), which tf2onnx
    reads as dense and fails on; TFLite runs the DENSIFY ops once and the result converts."""
    from ai_edge_litert.interpreter import Interpreter

    from edgepack.data import load_dataset
    from edgepack.model import load_model

    model = fetch("face_detection_full_range_sparse")
    code, out, err = cli("convert", model, "--to", "onnx", "-o", tmp_path / "face.onnx", "--json")
    assert code == 0, err
    assert any("DENSIFY" in n for n in json.loads(out)["artifact"]["notes"])
    handle = load_model(model)
    x = load_dataset(real_inputs(by_name("face_detection_full_range_sparse"), tmp_path / "data"),
                     handle.inputs).inputs[handle.inputs[0].name][:4]
    source = Interpreter(model_path=str(model))
    source.allocate_tensors()
    session = ort.InferenceSession(str(tmp_path / "face.onnx"), providers=["CPUExecutionProvider"])
    for sample in x:
        source.set_tensor(source.get_input_details()[0]["index"], sample[None])
        source.invoke()
        want = {tuple(d["shape"]): source.get_tensor(d["index"]) for d in source.get_output_details()}
        got = session.run(None, {session.get_inputs()[0].name: sample[None]})
        for value in got:
            ref = want[tuple(value.shape)]
            assert np.abs(ref - value).max() <= 1e-3 * np.abs(ref).max()
