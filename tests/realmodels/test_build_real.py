"""A build of a real MediaPipe TFLite model ends in a package whose model keeps what the source does:
checked here with LiteRT (the source) and ONNX Runtime (the packaged model) on real images, not from
edgepack's own figures."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from edgepack.examples.real_models import by_name, fetch, real_inputs

pytestmark = pytest.mark.realmodels


def test_a_mediapipe_landmark_model_builds_into_a_package_that_keeps_its_outputs(cli, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from edgepack.data import load_dataset
    from edgepack.model import load_model

    model = fetch("hand_landmark_lite")
    data = real_inputs(by_name("hand_landmark_lite"), tmp_path / "data", count=32)
    code, out, err = cli("build", model, "--device", "host", "--calib", data, "--formats", "onnx",
                         "--precisions", "fp32,int8", "--prune", "0", "--max-measurements", "2", "--runs", "10",
                         "-o", tmp_path / "dist", "--cache", tmp_path / "cache", "--json")
    assert code == 0, err
    result = json.loads(out)
    package = tmp_path / "dist" / result["package"].rsplit("/", 1)[-1]
    manifest = json.loads((package / "manifest.json").read_text())
    session = ort.InferenceSession(str(package / manifest["model_file"]), providers=["CPUExecutionProvider"])
    source = Interpreter(model_path=str(model))
    source.allocate_tensors()
    handle = load_model(model)
    x = load_dataset(data, handle.inputs).inputs[handle.inputs[0].name][-6:]
    names = {o["name"]: o["source_name"] for o in manifest["outputs"]}
    for sample in x:
        source.set_tensor(source.get_input_details()[0]["index"], sample[None])
        source.invoke()
        want = {d["name"]: source.get_tensor(d["index"]) for d in source.get_output_details()}
        got = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {session.get_inputs()[0].name: sample[None]}), strict=True))
        assert len(got) == len(want) == 4
        for name, value in got.items():
            ref = want[names[name]]
            # landmarks within a few pixels of 224, the presence and handedness scores within 0.1
            assert np.abs(ref - value.reshape(ref.shape)).max() <= max(0.1, 0.05 * np.abs(ref).max())
