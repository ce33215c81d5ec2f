"""Why an int8 twin is slower than fp32 (edgepack.analysis.slower), on small real graphs quantized by ONNX
Runtime's own quantizer and profiled by the real harness; TFLite without benchmark_model from its graphs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgepack.analysis.slower import (
    DeltaKind,
    ProfiledArtifact,
    explain_slower,
    fp32_type,
    graph_ops,
)
from edgepack.runners.base import Measurement, OpProfile, OpTime, RunRequest
from edgepack.runners.local import LocalRunner

SHAPE = (1, 3, 32, 32)


def artifact(measurement: Measurement) -> ProfiledArtifact:
    return ProfiledArtifact(measurement.request.model, measurement.result.op_profile, measurement.p50_ms)


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32: Conv, Relu, Softplus, Conv, Relu; its static QDQ twin (uint8 activations, int8 weights: ORT
    has no int8 Softplus, so it stays in float between a DequantizeLinear and a QuantizeLinear); its dynamic
    twin (ConvInteger)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )

    folder = tmp_path_factory.mktemp("slower")
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(0.3 * rng.standard_normal(shape).astype(np.float32), name)
               for name, shape in (("w1", (8, 3, 3, 3)), ("w2", (8, 8, 3, 3)))]
    pads = [1, 1, 1, 1]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=pads), helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Softplus", ["b"], ["c"]), helper.make_node("Conv", ["c", "w2"], ["d"], pads=pads),
             helper.make_node("Relu", ["d"], ["y"])]
    graph = helper.make_graph(nodes, "twins", [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 8, 32, 32))], weights)
    paths = {name: folder / f"{name}.onnx" for name in ("fp32", "int8", "dynamic")}
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(paths["fp32"]))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.feeds = iter([{"x": rng.random(SHAPE, dtype=np.float32)} for _ in range(4)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.feeds, None)

    quantize_static(str(paths["fp32"]), str(paths["int8"]), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    quantize_dynamic(str(paths["fp32"]), str(paths["dynamic"]), weight_type=QuantType.QInt8)
    return paths


@pytest.fixture(scope="module")
def profiled(twins: dict[str, Path]) -> dict[str, ProfiledArtifact]:
    """Both twins as the real harness measures and profiles them on this machine."""
    found = LocalRunner().run([RunRequest(twins[name], runs=30, op_profile=True) for name in ("fp32", "int8")])
    assert all(m.ok for m in found), [m.error for m in found]
    return {name: artifact(m) for name, m in zip(("fp32", "int8"), found, strict=True)}


@pytest.mark.parametrize(("op", "base", "quantized"), [
    ("QLinearConv", "Conv", True), ("ConvInteger", "Conv", True), ("QGemm", "Gemm", True),
    ("QLinearGlobalAveragePool", "GlobalAveragePool", True), ("FusedConv", "Conv", False),
    ("Conv", "Conv", False), ("QuantizeLinear", "QuantizeLinear", False), ("CONV_2D", "CONV_2D", False)])
def test_each_runtime_kernel_is_matched_to_the_fp32_op_it_replaces(op: str, base: str, quantized: bool) -> None:
    assert fp32_type(op) == (base, quantized)


def test_the_graph_says_which_ops_stay_in_float(twins: dict[str, Path]) -> None:
    int8 = graph_ops(twins["int8"])
    assert int8.precision == "int8" and int8.counts["QuantizeLinear"] >= 3 and int8.counts["DequantizeLinear"] >= 3
    assert int8.precisions["Conv"] == {"int8"} and int8.float_ops == {"Softplus": 1}  # no int8 Softplus in ORT
    dynamic = graph_ops(twins["dynamic"])
    assert dynamic.precision == "dynamic int8" and dynamic.counts["ConvInteger"] == 2
    fp32 = graph_ops(twins["fp32"])
    assert fp32.precision == "fp32" and fp32.float_ops == {"Conv": 2, "Relu": 2, "Softplus": 1}


def test_real_profiles_name_the_conversions_and_the_op_left_in_float(profiled: dict[str, ProfiledArtifact]) -> None:
    quantized = profiled["int8"].op_profile
    assert quantized is not None and all(o.dtype for o in quantized.ops)  # the profiler says what each produced
    assert {o.dtype for o in quantized.ops if o.type == "QLinearConv"} == {"uint8"}
    found = explain_slower(profiled["fp32"], profiled["int8"])
    assert found.timed and found.precision == "int8" and found.graph_format.value == "onnx"
    assert found.fp32_ms == profiled["fp32"].p50_ms and found.quantized_ms == profiled["int8"].p50_ms
    rows = {d.op_type: d for d in found.deltas}
    for name in ("QuantizeLinear", "DequantizeLinear"):
        assert rows[name].kind is DeltaKind.CONVERSION and rows[name].fp32_ms == 0.0
        assert rows[name].count >= 1 and (rows[name].quantized_ms or 0.0) > 0
    conv = rows["Conv"]
    assert conv.kind is DeltaKind.QUANTIZED_KERNEL and conv.quantized_type == "QLinearConv"
    assert conv.count == conv.fp32_count == 2 and conv.float_count == 0
    assert rows["Softplus"].kind is DeltaKind.FLOAT and found.float_ops == (("Softplus", 1),)
    assert [d.delta_ms for d in found.deltas] == sorted((d.delta_ms for d in found.deltas), reverse=True)
    # ORT's NCHWc reorders of the float Convs are gone; the int8 model's Transposes to NHWC are added
    assert all(d.kind is DeltaKind.LAYOUT for d in found.deltas if d.op_type.startswith(("Reorder", "Transpose")))
    sentence = found.sentence()
    assert sentence.startswith("int8 onnx is ") and "QuantizeLinear/DequantizeLinear add " in sentence, sentence
    assert "around ops left in float (Softplus)" in sentence, sentence
    data = json.loads(json.dumps(found.to_dict()))
    assert data["sentence"] == sentence and data["deltas"][0]["kind"] in {k.value for k in DeltaKind}


def test_the_finding_names_what_costs_and_what_saves(twins: dict[str, Path]) -> None:
    fp32 = OpProfile((OpTime("c1", "Conv", 1.0, "float"), OpTime("c2", "Conv", 1.0, "float"),
                      OpTime("s", "Softplus", 0.5, "float"), OpTime("r", "ReorderInput", 0.2, "float")))
    slow = OpProfile((OpTime("c1", "QLinearConv", 1.5, "uint8"), OpTime("c2", "QLinearConv", 1.5, "uint8"),
                      OpTime("s", "Softplus", 0.5, "float"), OpTime("q", "QuantizeLinear", 0.4, "uint8"),
                      OpTime("d", "DequantizeLinear", 0.3, "float"), OpTime("t", "Transpose", 0.1, "uint8")))
    found = explain_slower(ProfiledArtifact(twins["fp32"], fp32, 2.5), ProfiledArtifact(twins["int8"], slow, 4.0))
    assert found.sentence() == (
        "int8 onnx is 1.60x slower than fp32 (4 ms vs 2.5 ms): QLinearConv is 1 ms slower than Conv (2 ops, "
        "3 vs 2 ms); 2 QuantizeLinear/DequantizeLinear add 0.7 ms around ops left in float (Softplus)")
    assert [(d.op_type, d.kind, d.delta_ms) for d in found.deltas][-1] == ("ReorderInput", DeltaKind.LAYOUT, -0.2)
    fast = OpProfile((OpTime("c1", "QLinearConv", 0.5, "uint8"), OpTime("c2", "QLinearConv", 0.5, "uint8"),
                      OpTime("s", "Softplus", 0.5, "float"), OpTime("q", "QuantizeLinear", 0.2, "uint8")))
    assert explain_slower(ProfiledArtifact(twins["fp32"], fp32, 2.5), ProfiledArtifact(twins["int8"], fast, 1.6)
                          ).sentence() == (
        "int8 onnx is 1.56x faster than fp32 (1.6 ms vs 2.5 ms): QLinearConv saves 1 ms against Conv (2 ops); "
        "still, 1 QuantizeLinear add 0.2 ms around ops left in float (Softplus)")
    floats = OpProfile((OpTime("c1", "Conv", 1.0, "float"), OpTime("c2", "Conv", 1.0, "float"),
                        OpTime("s", "Softplus", 0.5, "float"), OpTime("k", "Cast", 0.01, "float")))
    assert explain_slower(ProfiledArtifact(twins["fp32"], fp32, 2.5), ProfiledArtifact(twins["int8"], floats, 2.52)
                          ).sentence().startswith("int8 onnx is about as fast as fp32 (2.52 ms vs 2.5 ms): "
                                                  "the runtime ran every op in float: no int8 kernel ran")


def test_without_per_op_times_the_graphs_are_read_and_said_so(twins: dict[str, Path]) -> None:
    found = explain_slower(ProfiledArtifact(twins["fp32"]), ProfiledArtifact(twins["dynamic"], None, None))
    assert not found.timed and found.fp32_ms is None and found.ratio is None
    assert found.untimed_why == "no per-op profile of the fp32 and dynamic int8 model"
    rows = {d.op_type: d for d in found.deltas}
    assert rows["Conv"].kind is DeltaKind.QUANTIZED_KERNEL and rows["Conv"].quantized_type == "ConvInteger"
    assert rows["DynamicQuantizeLinear"].kind is DeltaKind.CONVERSION and rows["DynamicQuantizeLinear"].delta_ms is None
    assert found.sentence().startswith("dynamic int8 onnx; from the graphs, not timed (no per-op profile of the "
                                       "fp32 and dynamic int8 model): "), found.sentence()


@pytest.mark.skipif(shutil.which("benchmark_model") is not None, reason="benchmark_model here gives TFLite op times")
def test_tflite_without_benchmark_model_is_explained_from_its_graphs(tmp_path: Path) -> None:
    """A Keras model whose SIN has no int8 kernel: the int8 twin keeps it in float, between QUANTIZE and
    DEQUANTIZE; the harness gives no per-op times for TFLite here, and the finding says why."""
    import tensorflow as tf

    inputs = tf.keras.Input((16, 16, 3), batch_size=1)
    hidden = tf.keras.layers.Lambda(tf.sin)(tf.keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inputs))
    model = tf.keras.Model(inputs, tf.keras.layers.Conv2D(8, 3, padding="same")(hidden))
    rng = np.random.default_rng(0)
    paths = {name: tmp_path / f"{name}.tflite" for name in ("fp32", "int8")}
    for name, path in paths.items():
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        if name == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            samples = [[rng.random((1, 16, 16, 3), dtype=np.float32)] for _ in range(8)]
            converter.representative_dataset = lambda samples=samples: iter(samples)
        path.write_bytes(converter.convert())
    measured = LocalRunner().run([RunRequest(paths[name], runs=20, op_profile=True) for name in ("fp32", "int8")])
    assert all(m.ok for m in measured), [m.error for m in measured]
    fp32, int8 = (artifact(m) for m in measured)
    found = explain_slower(fp32, int8)
    assert not found.timed and found.precision == "int8" and found.float_ops == (("SIN", 1),)
    assert found.quantized_ms == int8.p50_ms and found.ratio is not None  # the p50s are still the board's
    assert found.untimed_why is not None and "benchmark_model" in found.untimed_why
    assert {d.op_type: d.count - d.fp32_count for d in found.deltas if d.kind is DeltaKind.CONVERSION} == {
        "QUANTIZE": 2, "DEQUANTIZE": 2}
    assert "; from the graphs, not timed (TFLite per-op profiling needs the benchmark_model binary" in found.sentence()
    assert found.sentence().endswith("4 QUANTIZE/DEQUANTIZE added around 1 op(s) left in float (SIN x1)")
