"""Inputs that are not samples (a rank-0 sample rate, a recurrent state [2, 1, 16]): never given a
made-up value, fed whole rather than sliced on their first axis, and given by --input-value."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgepack.errors import UsageError
from edgepack.model import TensorSpec


@pytest.fixture(scope="module")
def vad(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A small voice-activity model shaped like Silero VAD's: (x [1, 64], state [2, 1, 16], sr int64
    scalar) -> (speech [1, 1], state_out [2, 1, 16]); its output scales with the sample rate."""
    import torch
    from torch import nn

    class Vad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin, self.head = nn.Linear(64, 16), nn.Linear(16, 1)

        def forward(self, x: torch.Tensor, state: torch.Tensor, sr: torch.Tensor) -> tuple[torch.Tensor, ...]:
            h = torch.tanh(self.lin(x) + state.sum(0))
            return torch.sigmoid(self.head(h)) * (sr.float() / 16000.0), torch.stack([h, h])

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("vad")
    torch.onnx.export(Vad().eval(), (torch.zeros(1, 64), torch.zeros(2, 1, 16), torch.tensor(16000)),
                      str(root / "vad.onnx"), input_names=["x", "state", "sr"],
                      output_names=["speech", "state_out"], dynamo=False, opset_version=17)
    np.savez(root / "calib.npz", x=np.random.default_rng(0).standard_normal((32, 64)).astype(np.float32))
    return root / "vad.onnx", root / "calib.npz"


def test_an_input_without_a_value_is_refused_not_made_up(cli, one_line_error, vad, tmp_path):
    model, calib = vad
    one_line_error(cli("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx"),
                   "input 'state' has a fixed first axis of 2", "not a sample input", "--input-value")
    one_line_error(cli("profile", model, "--runs", "3"), "not a sample input", "--input-value")
    one_line_error(cli("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx", "--input-value",
                       "state=zeros"), "input 'sr'", "a single value")
    assert list(tmp_path.iterdir()) == []


def test_given_values_are_fed_whole_to_every_sample(cli, vad, tmp_path):
    """int8 with sr=8000 and a zero state: the result, run here with ONNX Runtime on those values,
    matches the source on them (and the output really depends on sr: half of what 16000 gives)."""
    model, calib = vad
    values = "sr=8000;state=zeros"
    code, _, err = cli("quantize", model, "--calib", calib, "-o", tmp_path / "q.onnx", "--input-value", values,
                       "--format", "onnx", "--json")
    assert code == 0, err
    x = np.load(calib)["x"][:8]
    feeds = [{"x": x[i:i + 1], "state": np.zeros((2, 1, 16), np.float32), "sr": np.array(8000)} for i in range(8)]
    source = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    result = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"])
    ref = np.concatenate([source.run(["speech"], f)[0] for f in feeds])
    got = np.concatenate([result.run(["speech"], f)[0] for f in feeds])
    assert np.abs(ref - got).max() < 0.05 * np.abs(ref).max()
    at_16k = np.concatenate([source.run(["speech"], {**f, "sr": np.array(16000)})[0] for f in feeds])
    assert np.allclose(at_16k, 2 * ref, rtol=1e-5)
    code, out, err = cli("profile", model, "--runs", "3", "--warmup", "1", "--input-value", values, "--json")
    assert code == 0, err
    assert json.loads(out)["latency_ms"]["p50"] > 0


def test_profile_takes_input_shape_for_dynamic_dimensions(cli, one_line_error, tmp_path):
    import torch

    from edgepack.convert.torch_to_onnx import export_to_onnx

    conv = torch.nn.Conv2d(3, 4, 3)
    path = tmp_path / "dyn.onnx"
    torch.onnx.export(conv, (torch.zeros(1, 3, 16, 16),), str(path), input_names=["image"], dynamo=False,
                      dynamic_axes={"image": {2: "h", 3: "w"}}, opset_version=17)
    assert export_to_onnx  # the same exporter edgepack uses elsewhere; this graph is dynamic on purpose
    one_line_error(cli("profile", path, "--runs", "3"), "dynamic dimensions", "--input-shape image:1,3,N,N")
    code, _, err = cli("profile", path, "--runs", "3", "--warmup", "1", "--input-shape", "1,3,40,24", "--json")
    assert code == 0, err


@pytest.mark.parametrize(("text", "fragment"), [
    ("sr", "not NAME=VALUE"), ("rate=1", "names no input 'rate'"), ("sr=fast", "not a number"),
    ("sr=1.5", "fractional"), ("state=3", None)])
def test_input_value_parsing(text: str, fragment: str | None):
    from edgepack.input_values import parse_input_values

    specs = [TensorSpec("x", (1, 64), "float32", "NC"), TensorSpec("state", (2, 1, 16), "float32", "NCW"),
             TensorSpec("sr", (), "int64", "?")]
    assert [s.is_sample for s in specs] == [True, False, False]
    if fragment is None:
        assert parse_input_values(text, specs)["state"].shape == (2, 1, 16)
        return
    with pytest.raises(UsageError, match=fragment):
        parse_input_values(text, specs)


@pytest.fixture(scope="module")
def silero_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A voice-activity model shaped like Silero VAD's, built with onnx.helper: input [1, 512] float, sr int64
    scalar, state [2, 1, 128] float -> output [1, 1], stateN [2, 1, 128]. An If on sr picks the 16 kHz branch
    (frames of 512 samples) or the 8 kHz one (frames of 256); each runs an LSTM from the state. The branches'
    outputs differ in rank, so ONNX shape inference stops at the If and the graph must be run to size it."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng, hidden = np.random.default_rng(0), 128

    def const(name: str, array: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(np.asarray(array), name)

    def branch(name: str, frame: int) -> onnx.GraphProto:
        nodes = [
            helper.make_node("Gather", ["state", "zero"], [f"{name}_h0"], axis=0),
            helper.make_node("Gather", ["state", "one"], [f"{name}_c0"], axis=0),
            helper.make_node("Reshape", ["input", f"{name}_frames"], [f"{name}_x"]),
            helper.make_node("LSTM", [f"{name}_x", f"{name}_W", f"{name}_R", "", "", f"{name}_h0", f"{name}_c0"],
                             [f"{name}_y", f"{name}_yh", f"{name}_yc"], hidden_size=hidden),
            helper.make_node("Concat", [f"{name}_yh", f"{name}_yc"], [f"{name}_state"], axis=0),
            helper.make_node("ReduceMean", [f"{name}_yh"], [f"{name}_mean"], axes=[2] if frame == 512 else [1, 2],
                             keepdims=0),
            helper.make_node("Sigmoid", [f"{name}_mean"], [f"{name}_p"]),
        ]
        weights = [const(f"{name}_frames", np.array([1, 1, frame], np.int64)),
                   const(f"{name}_W", (rng.standard_normal((1, 4 * hidden, frame)) * 0.05).astype(np.float32)),
                   const(f"{name}_R", (rng.standard_normal((1, 4 * hidden, hidden)) * 0.05).astype(np.float32))]
        return helper.make_graph(nodes, name, [], [
            helper.make_tensor_value_info(f"{name}_p", TensorProto.FLOAT, ["p0", "p1"]),
            helper.make_tensor_value_info(f"{name}_state", TensorProto.FLOAT, ["s0", "s1", "s2"])], weights)

    graph = helper.make_graph(
        [helper.make_node("Equal", ["sr", "k16000"], ["is16k"]),
         helper.make_node("If", ["is16k"], ["output", "stateN"], then_branch=branch("k16", 512),
                          else_branch=branch("k8", 256))],
        "vad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 512]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, []),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, 1, hidden])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["p0", "p1"]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, ["s0", "s1", "s2"])],
        [const("k16000", np.array(16000, np.int64)), const("zero", np.array([0], np.int64)),
         const("one", np.array([1], np.int64))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path_factory.mktemp("silero_like") / "vad.onnx"
    onnx.save(model, str(path))
    return path


def test_a_recurrent_vad_given_its_values_is_summarised_and_profiled(cli, one_line_error, silero_like: Path):
    """Given exactly what the refusal asks for, inspect and profile run: the graph is sized by running it
    on the given sr (the 16 kHz branch), not on zeros (the 8 kHz branch, which cannot take 512 samples and
    was an ONNX Runtime traceback from the graph summary)."""
    given = ["--input-value", "sr=16000;state=zeros", "--input-shape", "input:1,512;state:2,1,128"]
    code, out, err = cli("inspect", silero_like, *given, "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["input_shapes"] == {"input": [1, 512], "sr": [], "state": [2, 1, 128]}
    branch = next(layer for layer in summary["layers"] if layer["op"] == "If")
    assert branch["output_bytes"] == 4 * (1 + 2 * 128)  # output [1, 1] and stateN [2, 1, 128], float32
    code, out, err = cli("profile", silero_like, *given, "--runs", "3", "--warmup", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["latency_ms"]["p50"] > 0
    one_line_error(cli("inspect", silero_like, "--input-value", "sr=8000;state=zeros"),
                   "does not run with zeros for input, to find its shapes", "cannot be reshaped", "--input-value")
    one_line_error(cli("inspect", silero_like), "does not run with zeros for input, sr, state")


def save_model(path: Path, inputs: list, outputs: list, nodes: list, initializers: list = (),
               opsets: tuple = (("", 13),)) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    onnx.save(model, path)
    return path


def test_fixed_batch_and_huge_inputs_are_refused_in_one_line(cli, one_line_error, tmp_path: Path):
    weight = helper.make_tensor("w", TensorProto.FLOAT, [16, 4], np.ones(64, np.float32))
    batch8 = save_model(tmp_path / "batch8.onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16])],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 4])],
                        [helper.make_node("MatMul", ["x", "w"], ["y"])], [weight])
    np.save(tmp_path / "rows.npy", np.random.default_rng(0).random((64, 16), np.float32))
    # a first axis fixed at 8 is not a batch axis: the input is fed whole, so it needs a value or data
    # holding [N, 8, 16], never rows cut from the user's data or random numbers
    one_line_error(cli("convert", batch8, "--to", "tflite", "-o", tmp_path / "out.tflite"),
                   "input 'x' has a fixed first axis of 8", "--input-value", "batch 1")
    for argv in (["quantize", batch8, "--calib", tmp_path / "rows.npy", "--format", "onnx", "-o", tmp_path / "q.onnx"],
                 ["build", batch8, "--device", "host", "--calib", tmp_path / "rows.npy", "--cache", tmp_path / "c",
                  "-o", tmp_path / "dist"]):
        one_line_error(cli(*argv), "input 'x' expects samples of shape Nx8x16", "given 64x16")
    huge = save_model(tmp_path / "huge.onnx",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 100000, 100000])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 100000, 100000])],
                      [helper.make_node("Relu", ["x"], ["y"])])
    one_line_error(cli("convert", huge, "--to", "tflite", "-o", tmp_path / "huge.tflite"), "111.8 GiB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch8.onnx", "huge.onnx", "rows.npy"]
