"""``edgepack inspect``: MACs and parameters of real exported/converted models against sums done by hand,
and the ops a device (or ONNX Runtime itself) cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from edgepack.analysis.onnx_graph import summarize_onnx
from edgepack.analysis.tflite_graph import summarize_tflite
from edgepack.inspection import inspect_model
from edgepack.model import load_model
from edgepack.profiles import ProfileRegistry

# digits CNN, input 1x1x8x8 (see edgepack/examples/digits.py):
#   conv1 1->16 3x3 pad 1: out 16*8*8 = 1024 elems * (1*3*3)  =   9,216 MACs;  16*9 + 16    =    160 params
#   conv2 16->32 3x3 pad 1: out 32*8*8 = 2048 elems * (16*3*3) = 294,912 MACs;  32*144 + 32  =  4,640 params
#   fc1 512->128:                                128 * 512  =  65,536 MACs;  65536 + 128  = 65,664 params
#   fc2 128->10:                                  10 * 128  =   1,280 MACs;  1280 + 10    =  1,290 params
DIGITS_MACS = 9_216 + 294_912 + 65_536 + 1_280
DIGITS_PARAMS = 160 + 4_640 + 65_664 + 1_290


def test_digits_onnx_counts(digits_onnx: Path):
    summary = summarize_onnx(onnx.load(str(digits_onnx)))
    assert summary.macs == DIGITS_MACS == 370_944
    assert summary.params == DIGITS_PARAMS == 71_754
    assert sorted(layer.macs for layer in summary.layers if layer.op == "Conv") == [9_216, 294_912]
    assert summary.weight_bytes == DIGITS_PARAMS * 4
    # largest live set: the second ReLU reads conv2's output (32x8x8 fp32 = 8 KiB) and writes 8 KiB
    assert summary.peak_activation_bytes == 16 * 1024


@pytest.mark.slow
def test_digits_tflite_counts_match_onnx(digits_tflite: Path):
    summary = summarize_tflite(digits_tflite)
    assert summary.macs == DIGITS_MACS
    assert summary.params == DIGITS_PARAMS
    ops = summary.op_histogram
    assert ops["CONV_2D"] == 2 and ops["FULLY_CONNECTED"] == 2
    assert "DELEGATE" not in ops  # analysed as written, not as XNNPACK rewrote it


def test_depthwise_and_residual_counts(tmp_path: Path):
    import torch
    from torch import nn

    from edgepack.convert.torch_to_onnx import export_to_onnx

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.expand = nn.Conv2d(8, 16, 1)
            self.depthwise = nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.project = nn.Conv2d(16, 8, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.project(torch.relu(self.depthwise(torch.relu(self.expand(x)))))

    path = export_to_onnx(Block().eval(), (torch.zeros(1, 8, 10, 10),), tmp_path / "block.onnx").path
    summary = summarize_onnx(onnx.load(str(path)))
    # expand: 16*10*10 * 8 = 12,800; depthwise: 16*10*10 * 9 = 14,400; project: 8*10*10 * 16 = 12,800
    assert summary.macs == 12_800 + 14_400 + 12_800
    # params: 16*8+16 = 144; 16*9+16 = 160; 8*16 = 128
    assert summary.params == 144 + 160 + 128
    assert summary.op_histogram.get("Add") == 1


def test_inspect_dynamic_batch_is_taken_as_one(tmp_path: Path):
    import torch
    from torch import nn

    path = tmp_path / "dyn.onnx"
    torch.onnx.export(nn.Linear(4, 3).eval(), (torch.zeros(2, 4),), str(path), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    handle = load_model(path)
    assert handle.inputs[0].shape == ("batch", 4)
    result = inspect_model(handle, ProfileRegistry.discover().get("rpi4"))
    assert result.summary.macs == 12
    assert any("taken as 1" in note for note in result.summary.notes)
    assert result.estimate is not None and result.estimate.latency_ms > 0


def test_compatibility_flags_ops_the_npu_lacks(tmp_path: Path):
    import torch
    from torch import nn

    from edgepack.convert.torch_to_onnx import export_to_onnx

    class Odd(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.sin(x) + torch.relu(x)

    path = export_to_onnx(Odd(), (torch.zeros(1, 4),), tmp_path / "odd.onnx").path
    registry = ProfileRegistry.discover()
    coral = inspect_model(load_model(path), registry.get("coral-edgetpu")).compatibility
    assert coral is not None and not coral.compatible
    sin = next(issue for issue in coral.issues if issue.op == "Sin")
    assert sin.status == "unsupported" and "SIN" in sin.reason and "coral" in sin.reason
    assert any("int8" in note for note in coral.precision_notes)
    rpi = inspect_model(load_model(path), registry.get("rpi4")).compatibility
    assert rpi is not None and rpi.compatible and not rpi.issues


def save_model(path: Path, inputs: list, outputs: list, nodes: list, initializers: list = (),
               opsets: tuple = (("", 13),)) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    onnx.save(model, path)
    return path


def test_inspect_says_onnxruntime_cannot_load_a_custom_op(cli, tmp_path: Path):
    model = save_model(tmp_path / "custom.onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                       [helper.make_node("Relu", ["x"], ["h"]),
                        helper.make_node("FancyActivation", ["h"], ["y"], domain="com.example.ops")],
                       opsets=(("", 13), ("com.example.ops", 1)))
    code, out, _ = cli("inspect", model, "--device", "rpi4", "--json")
    assert code == 0
    compat = json.loads(out)["compatibility"]
    assert not compat["compatible"]
    assert [(i["op"], i["status"]) for i in compat["issues"]] == [("FancyActivation", "unsupported")]
    assert "com.example.ops" in compat["issues"][0]["reason"]
    code, out, _ = cli("inspect", model, "--device", "rpi4")
    assert "all ops supported" not in out and "FancyActivation" in out
