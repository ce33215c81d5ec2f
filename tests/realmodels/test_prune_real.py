"""Pruning and distillation on real trained models that are not classifiers: every output is taught
and judged by its kind, the pruned file keeps the source's outputs (checked here with ONNX Runtime
and LiteRT directly), and what pruning cannot follow is one line, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgepack.examples.real_models import by_name, fetch, real_inputs

pytestmark = pytest.mark.realmodels


def test_a_four_output_landmark_model_is_pruned_and_distilled(cli, tmp_path):
    """MediaPipe hand_landmark_lite (TFLite; landmarks, handedness, presence, world landmarks): built
    into PyTorch from its graph, checked against the source, pruned, distilled on all four outputs."""
    model = fetch("hand_landmark_lite")
    data = real_inputs(by_name("hand_landmark_lite"), tmp_path / "data")
    out = tmp_path / "hand_pruned.onnx"
    code, stdout, err = cli("prune", model, "--calib", data, "--ratio", "0.25", "--distill-epochs", "2",
                            "--time-budget", "20", "-o", out, "--json")
    assert code == 0, err
    result = json.loads(stdout)
    stages = {s["name"]: s for s in result["stages"]}
    assert stages["before pruning"]["vs_original"] == "error 0 of peak"
    assert stages["after pruning"]["params"] < 0.8 * stages["before pruning"]["params"]
    assert result["distillation"]["epochs_run"] >= 1
    # independently: the pruned file has the source's four outputs, by name and shape
    from ai_edge_litert.interpreter import Interpreter

    source = Interpreter(model_path=str(model))
    source.allocate_tensors()
    want = sorted(tuple(int(d) for d in o["shape"]) for o in source.get_output_details())
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: np.zeros([int(d) for d in session.get_inputs()[0].shape], np.float32)}
    got = session.run(None, feed)
    assert len(got) == 4 and sorted(tuple(g.shape) for g in got) == want


def test_a_pruning_that_cannot_follow_the_graph_is_one_line(cli, one_line_error, tmp_path):
    """MediaPipe's iris model pads channels (a Pad on the channel axis) before its residual adds:
    Torch-Pruning cannot follow that, and the refusal says so without a traceback or a file."""
    model = fetch("iris_landmark")
    data = real_inputs(by_name("iris_landmark"), tmp_path / "data")
    one_line_error(cli("prune", model, "--calib", data, "--ratio", "0.25", "--distill-epochs", "1",
                       "--time-budget", "10", "-o", tmp_path / "out" / "iris.onnx"), "prun")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_graph_with_computed_shapes_is_simplified_before_pruning(tmp_path: Path):
    """YOLOv8n computes its anchor grid from Shape/Range/Expand chains; with the input shape frozen,
    onnxsim folds them to constants and the graph becomes one edgepack can build in PyTorch."""
    import onnx

    from edgepack.convert.routes import onnx_of
    from edgepack.convert.simplify import SHAPE_OPS, simplify_onnx
    from edgepack.model import load_model

    handle = load_model(fetch("yolov8n_nudenet"), input_shape="1,3,320,320")
    path, _, _ = onnx_of(handle, tmp_path)
    assert SHAPE_OPS & {n.op_type for n in onnx.load(str(path)).graph.node}
    simple, note = simplify_onnx(path, tmp_path / "simple.onnx")
    assert simple != path and "computed shapes folded" in note
    assert not SHAPE_OPS & {n.op_type for n in onnx.load(str(simple)).graph.node}
    x = np.random.default_rng(0).random((1, 3, 320, 320), dtype=np.float32)
    a = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    b = ort.InferenceSession(str(simple), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
    assert np.allclose(a, b, atol=1e-4 * np.abs(a).max())
