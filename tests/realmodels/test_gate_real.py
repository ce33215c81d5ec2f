"""The fidelity gate on real trained models with real inputs: an int8 artifact that exits 0 keeps what
its source does (checked here with ONNX Runtime directly, not from edgepack's printout); one that does
not is refused in one line naming the output and the figure, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgepack.examples.real_models import by_name, fetch, real_inputs

pytestmark = pytest.mark.realmodels


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("real-inputs")


def _images(name: str, root: Path) -> Path:
    return real_inputs(by_name(name), root / name)


def _run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [np.stack(o) for o in zip(*[session.run(None, {name: x[i:i + 1]}) for i in range(len(x))], strict=True)]


def test_a_detector_whose_int8_loses_its_class_scores_is_refused(cli, one_line_error, data_root, tmp_path):
    """YOLOv8n: one [1, 22, 2100] head joins pixel boxes and class probabilities. Its int8 weakens the
    class scores where they fire; the gate reads the output as values and compares each channel on its
    strong values, so the loss is named, not averaged away; nothing is written. With --allow-drift the
    file is written, and the check here agrees with edgepack's figure that it is past the bound."""
    model, data = fetch("yolov8n_nudenet"), _images("yolov8n_nudenet", data_root)
    argv = ("quantize", model, "--input-shape", "1,3,320,320", "--calib", data, "--format", "onnx")
    line = one_line_error(cli(*argv, "-o", tmp_path / "y.onnx"), "refused", "output0", "of its channel's peak",
                          "--allow-drift")
    assert not (tmp_path / "y.onnx").exists() and list(tmp_path.iterdir()) == []
    figure = float(line.split("RMS error on its strong values is ")[1].split()[0])
    code, out, err = cli(*argv, "-o", tmp_path / "y.onnx", "--allow-drift", "--json")
    assert code == 0 and "WARNING: WRITTEN DESPITE FAILING ITS CHECK" in err
    meta = json.loads((tmp_path / "y.onnx.edgepack.json").read_text())
    assert any("--allow-drift" in n for n in meta["notes"])
    # independently: the class rows on the held-out images, where the source fires
    from edgepack.data import load_dataset
    from edgepack.model import load_model

    handle = load_model(model, input_shape="1,3,320,320")
    x = load_dataset(data, handle.inputs).inputs["images"][-10:]
    ref, got = _run(model, x)[0][:, 0], _run(tmp_path / "y.onnx", x)[0][:, 0]
    worst = 0.0
    for c in range(ref.shape[1]):
        peak = max(np.abs(ref[:, c]).max(), 1e-3 * np.abs(ref).max())
        strong = (np.abs(ref[:, c]) >= peak / 2) | (np.abs(got[:, c]) >= peak / 2)
        if strong.any():
            worst = max(worst, float(np.sqrt(np.mean((ref[:, c][strong] - got[:, c][strong]) ** 2)) / peak))
    assert worst > 0.1 and abs(worst - json.loads(out)["fidelity"]["outputs"][0]["channel_error_rel"]) < 1e-6
    assert figure > 0.1


def test_int8_of_an_old_opset_classifier_is_never_an_invalid_graph(cli, data_root, tmp_path):
    """PP-OCRv5's text-orientation classifier is opset < 13, where per-channel DequantizeLinear has no axis:
    it is upgraded first (or kept per-tensor). Whatever the outcome, it is exit 0 with an artifact whose
    top-1 agreement with the source holds on the held-out images, or exit 2 naming the output."""
    model, data = fetch("ppocrv5_cls"), _images("ppocrv5_cls", data_root)
    code, _out, err = cli("quantize", model, "--input-shape", "1,3,80,160", "--calib", data, "--mean", "0.5,0.5,0.5",
                         "--std", "0.5,0.5,0.5", "--format", "onnx", "-o", tmp_path / "cls.onnx",
                         "--max-accuracy-drop", "20")
    assert "Traceback" not in err and "invalid" not in err.lower()
    if code == 2:
        assert "softmax_0.tmp_0" in err and not (tmp_path / "cls.onnx").exists()
        return
    assert code == 0, err
    from edgepack.data import ImagePreprocessing, load_dataset
    from edgepack.model import load_model

    handle = load_model(model, input_shape="1,3,80,160")
    x = load_dataset(data, handle.inputs, preprocessing=ImagePreprocessing((0.5,) * 3, (0.5,) * 3)).inputs[
        handle.inputs[0].name][-10:]
    ref, got = _run(model, x)[0], _run(tmp_path / "cls.onnx", x)[0]
    agreement = float(np.mean(ref.reshape(10, -1).argmax(1) == got.reshape(10, -1).argmax(1)))
    assert agreement >= 0.8


def test_output_kinds_are_read_from_real_outputs():
    """No names, no labels: the kind of each real output comes from what the source computes on real
    inputs — a softmax classifier, a CTC sequence, a probability map, a detector head, landmarks."""
    from edgepack.fidelity import infer_kind

    rng = np.random.default_rng(0)
    probs = rng.random((8, 1, 40, 6625))
    probs /= probs.sum(-1, keepdims=True)
    assert infer_kind("fetch_name_0", probs) == "sequence"
    classes = rng.random((8, 1, 4))
    assert infer_kind("x", classes / classes.sum(-1, keepdims=True)) == "scores"
    assert infer_kind("fetch_name_0", rng.random((8, 1, 1, 64, 64))) == "map"
    assert infer_kind("output0", rng.random((8, 1, 22, 2100)) * 320) == "values"
    assert infer_kind("Identity", rng.random((8, 1, 63)) * 200) == "values"


def test_a_graph_ort_quantizes_into_something_it_cannot_run_is_refused_not_shipped(cli, one_line_error, tmp_path):
    """Magika (a byte-level classifier exported from JAX): ONNX Runtime's quantizer fails on its Gemm bias,
    then writes per-channel scales its own runtime cannot run. edgepack retries without those steps, checks
    that what it wrote runs, and refuses in one line with the figure when int8 loses the classes."""
    model, data = fetch("magika"), real_inputs(by_name("magika"), tmp_path / "data")
    code, _, err = cli("quantize", model, "--input-shape", "1,2048", "--calib", data, "-o", tmp_path / "out" / "m.onnx")
    assert "Traceback" not in err and "ONNXRuntimeError" not in err
    if code == 2:
        one_line_error((code, "", err), "top-1 agreement drops")
        assert not (tmp_path / "out").exists()
    else:
        assert code == 0 and ort.InferenceSession(str(tmp_path / "out" / "m.onnx"))


def test_an_already_quantized_graph_is_refused_by_name(cli, one_line_error, tmp_path):
    """ddddocr's model ships dynamically quantized (ConvInteger, DynamicQuantizeLinear): ORT's quantizer
    failed on it with a bare KeyError; edgepack names what the graph already is."""
    model = fetch("ddddocr_common_old")
    np.save(tmp_path / "lines.npy", np.random.default_rng(0).random((24, 1, 64, 256), np.float32))
    one_line_error(cli("quantize", model, "--input-shape", "1,1,64,256", "--calib", tmp_path / "lines.npy",
                       "-o", tmp_path / "out" / "d.onnx"), "already quantized", "ConvInteger")
