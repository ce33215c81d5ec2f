"""Summarise an ONNX graph: shapes by ONNX shape inference (ONNX Runtime where inference stops)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgepack.analysis.graph import GraphSummary, Layer, peak_live_bytes
from edgepack.errors import InputShapeError
from edgepack.formats import ArtifactFormat

TensorInfo = tuple[tuple[int, ...], np.dtype]

#: ops that compute in int8 (QOperator and integer ops)
INT8_OPS = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm"})
# Index of the weight input of ops that multiply by a weight matrix or kernel.
_CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3}
_MATMUL_A = {"MatMul": 0, "MatMulInteger": 0, "QLinearMatMul": 0}


def fix_input_shapes(model: Any, shapes: dict[str, tuple[int, ...]]) -> list[str]:
    """Give every graph input a static shape in place: from ``shapes``, or a dynamic batch taken as 1.

    Returns notes on what was assumed. A dynamic dimension other than the first, with no shape given,
    is an :class:`InputShapeError`.
    """
    notes = []
    initializers = {init.name for init in model.graph.initializer}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        given = shapes.get(value.name)
        if given is not None:
            for dim, size in zip(dims, given, strict=False):
                dim.ClearField("dim_param")
                dim.dim_value = size
            continue
        for index, dim in enumerate(dims):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            label = dim.dim_param or "?"
            if index != 0:
                raise InputShapeError(
                    f"input '{value.name}' has dynamic dimension {index} ('{label}')",
                    "pass --input-shape with a size for every dimension, e.g. --input-shape 1,3,224,224")
            dim.ClearField("dim_param")
            dim.dim_value = 1
            notes.append(f"input '{value.name}': dynamic batch dimension '{label}' taken as 1")
    return notes


def summarize_onnx(model: Any, shapes: dict[str, tuple[int, ...]] | None = None,
                   values: dict[str, np.ndarray] | None = None) -> GraphSummary:
    """Layers, parameters, MACs and peak activation memory of an ``onnx.ModelProto``. ``values``: the
    ``--input-value`` of inputs fed whole (a sample rate picks a branch), fed where the graph must be run."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())  # never touch the caller's copy
    notes = fix_input_shapes(model, shapes or {})
    constants = _constants(model)
    infos = _tensor_infos(model, constants, values or {})

    unique_params: dict[str, int] = {}
    producers = {out: node.op_type for node in model.graph.node for out in node.output}
    layers: list[Layer] = []
    steps: list[tuple[list[str], list[str]]] = []
    for index, node in enumerate(model.graph.node):
        weight_names = [n for n in node.input if n in constants]
        params = sum(_elements(infos[n][0]) for n in weight_names if _counts_as_param(infos[n][1]))
        for name in weight_names:
            if _counts_as_param(infos[name][1]):
                unique_params[name] = _elements(infos[name][0])
        activation_inputs = [n for n in node.input if n and n not in constants]
        outputs = [n for n in node.output if n]
        layers.append(Layer(
            name=node.name or f"{node.op_type}_{index}",
            op=node.op_type,
            macs=_macs(node, infos),
            params=params,
            weight_bytes=sum(_nbytes(infos[n]) for n in weight_names),
            input_bytes=sum(_nbytes(infos[n]) for n in activation_inputs if n in infos),
            output_bytes=sum(_nbytes(infos[n]) for n in outputs if n in infos),
            precision=_precision(node, infos, producers),
            domain="" if node.domain in ("", "ai.onnx") else node.domain,
        ))
        steps.append((activation_inputs, outputs))

    sizes = {name: _nbytes(info) for name, info in infos.items() if name not in constants}
    graph_inputs = [v.name for v in model.graph.input if v.name not in constants]
    peak = peak_live_bytes(steps, sizes, graph_inputs, [v.name for v in model.graph.output])
    weight_bytes = sum(_nbytes(infos[n]) for n in unique_params)
    input_shapes = {n: infos[n][0] for n in graph_inputs}
    return GraphSummary(ArtifactFormat.ONNX, layers, sum(unique_params.values()), weight_bytes, peak, input_shapes,
                        notes)


def _constants(model: Any) -> dict[str, Any]:
    from onnx import numpy_helper

    constants: dict[str, Any] = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.output:
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                constants[node.output[0]] = value.t
    return {name: numpy_helper.to_array(t) for name, t in constants.items()}


def _tensor_infos(model: Any, constants: dict[str, np.ndarray], values: dict[str, np.ndarray]) -> dict[str, TensorInfo]:
    """Shape and dtype of every tensor in the graph."""
    import onnx

    infos: dict[str, TensorInfo] = {
        name: (tuple(array.shape), array.dtype) for name, array in constants.items()}
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=True)
    for value in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        info = _value_info(value)
        if info is not None and value.name not in infos:
            infos[value.name] = info
    wanted = {n for node in model.graph.node for n in node.output if n}
    missing = sorted(wanted - set(infos))
    if missing:
        infos.update(_shapes_by_running(model, missing, values))
    return infos


def _value_info(value: Any) -> TensorInfo | None:
    from onnx import helper

    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape") or tensor_type.elem_type == 0:
        return None
    dims = []
    for dim in tensor_type.shape.dim:
        if not dim.HasField("dim_value"):
            return None
        dims.append(int(dim.dim_value))
    return tuple(dims), helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)


def _shapes_by_running(model: Any, names: list[str], values: dict[str, np.ndarray]) -> dict[str, TensorInfo]:
    """Shapes that inference could not tell: run the graph once with ONNX Runtime, on the given values of
    inputs fed whole (``--input-value``) and zeros for the others. A graph that cannot run on them is the
    user's to fix (an InputShapeError naming the inputs fed zeros), not a traceback."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto.FromString(model.SerializeToString())
    present = {v.name for v in probe.graph.output}
    for name in names:
        if name not in present:
            probe.graph.output.append(onnx.ValueInfoProto(name=name))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {}
    for spec in session.get_inputs():
        dtype = _ORT_TYPES.get(spec.type, np.float32)
        given = values.get(spec.name)
        feeds[spec.name] = np.asarray(given, dtype) if given is not None else \
            np.zeros([d if isinstance(d, int) else 1 for d in spec.shape], dtype)
    quiet = ort.RunOptions()
    quiet.log_severity_level = 4  # the failure is said once, below
    try:
        results = session.run(names, feeds, quiet)
    except Exception as exc:  # ONNX Runtime's error types derive from Exception only
        text = " ".join(str(exc).split())
        reason = text if len(text) <= 160 else "..." + text[-160:].split(" ", 1)[-1]
        zeros = [n for n in feeds if n not in values]
        raise InputShapeError(f"the graph does not run with zeros for {', '.join(zeros) or 'its inputs'}, to find its "
                              f"shapes ({reason})",
                              "give the inputs that pick its branches with --input-value (e.g. 'sr=16000') and "
                              "the dynamic sizes with --input-shape") from None
    return {n: (tuple(np.asarray(v).shape), np.asarray(v).dtype) for n, v in zip(names, results, strict=True)}


_ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}


def _elements(shape: tuple[int, ...]) -> int:
    return math.prod(shape) if shape else 1


def _nbytes(info: TensorInfo) -> int:
    return _elements(info[0]) * np.dtype(info[1]).itemsize


def _counts_as_param(dtype: np.dtype) -> bool:
    """Weights and biases count; int64 shape/axes constants do not."""
    return np.dtype(dtype).kind in "fc" or np.dtype(dtype) in (np.int8, np.uint8, np.int16, np.int32)


def _macs(node: Any, infos: dict[str, TensorInfo]) -> int:
    op = node.op_type

    def shape(index: int) -> tuple[int, ...] | None:
        if index >= len(node.input) or node.input[index] not in infos:
            return None
        return infos[node.input[index]][0]

    out = infos.get(node.output[0], ((), None))[0] if node.output else ()
    if op in _CONV_WEIGHT:
        weight = shape(_CONV_WEIGHT[op])
        return _elements(out) * _elements(weight[1:]) if weight and out else 0
    if op == "ConvTranspose":
        data, weight = shape(0), shape(1)
        return _elements(data) * _elements(weight[1:]) if data and weight else 0
    if op in ("Gemm", "QGemm"):
        a = shape(0)
        trans_a = next((a_.i for a_ in node.attribute if a_.name == "transA"), 0)
        if not a or not out:
            return 0
        k = a[0] if trans_a else a[-1]
        return _elements(out) * k
    if op in _MATMUL_A:
        a = shape(_MATMUL_A[op])
        return _elements(out) * a[-1] if a and out else 0
    return 0


def _precision(
    node: Any, infos: dict[str, TensorInfo], producers: dict[str, str]
) -> str:
    if node.op_type in INT8_OPS:
        return "int8"
    if any(producers.get(n) == "DequantizeLinear" for n in node.input) and node.op_type != "QuantizeLinear":
        return "int8"
    dtypes = {np.dtype(infos[n][1]) for n in node.output if n in infos}
    if np.dtype(np.float16) in dtypes:
        return "fp16"
    return "fp32"
