"""The board's memory across builds (edgepack.search.memory) and the runtime's fusion (analysis.kernels)."""

from __future__ import annotations

from pathlib import Path

from edgepack.analysis.graph import Layer
from edgepack.analysis.kernels import KernelKind, fused, kind_of
from edgepack.predict import Features, Observation
from edgepack.search.memory import BoardMemory


def observation(ms: float, source: str) -> Observation:
    return Observation(Features(1.0, 10, "fp32", 1000, 100, "onnx", 1), ms, source=source)


def test_memory_gives_other_models_on_the_same_board_only(tmp_path: Path):
    memory = BoardMemory(tmp_path)
    memory.add("rpi4@key-a", "model-1", [observation(4.0, "art-1")])
    memory.add("rpi4@key-a", "model-2", [observation(9.0, "art-2")])
    memory.add("rpi4@key-b", "model-3", [observation(1.0, "art-3")])
    (tmp_path / BoardMemory.FILE).open("a").write("not json\n{\"device\": \"rpi4@key-a\"}\n")
    found = memory.load({"rpi4@key-a"}, "model-2")  # a rebuild of model-2 takes its own path again
    assert [o.ms for o in found] == [4.0]
    assert found[0].features == observation(4.0, "art-1").features
    assert memory.load({"rpi4@key-c"}, "model-1") == []


def test_memory_counts_one_artifact_once(tmp_path: Path):
    memory = BoardMemory(tmp_path)
    memory.add("d", "m", [observation(4.0, "art")])
    memory.add("d", "m", [observation(5.0, "art")])  # measured again (another build): the last one
    assert [o.ms for o in memory.load({"d"}, "other")] == [5.0]


def layer(op: str, macs: int = 0, precision: str = "fp32", input_bytes: int = 400) -> Layer:
    return Layer(op.lower(), op, macs, 0, 0, input_bytes, 400, precision)


def test_activations_fold_into_the_product_before_them_and_weight_quantization_runs_at_load():
    layers = [layer("Conv", 90_000), layer("Relu"), layer("DequantizeLinear", input_bytes=0),
              layer("Conv", 90_000, "int8"), layer("QuantizeLinear"), layer("Add"), layer("Transpose"),
              layer("Relu")]
    kept = [x.op for x in fused(layers)]
    # Relu after a Conv: fused; a constant's DequantizeLinear: at load; QuantizeLinear beside an int8 Conv:
    # part of it; an Add (a residual) after a Conv: fused; a Relu after a Transpose stands alone
    assert kept == ["Conv", "Conv", "Transpose", "Relu"]


def test_a_convolution_with_few_macs_per_output_is_depthwise():
    assert kind_of("Conv", macs=9 * 1000, output_bytes=4000) is KernelKind.DEPTHWISE  # 9 per output
    assert kind_of("Conv", macs=288 * 1000, output_bytes=4000) is KernelKind.CONV
    assert kind_of("Transpose") is KernelKind.LAYOUT and kind_of("QuantizeLinear") is KernelKind.QUANT
