"""Summarise a TFLite flatbuffer through the interpreter's op and tensor tables."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.analysis.graph import GraphSummary, Layer, peak_live_bytes
from edgepack.errors import first_line
from edgepack.formats import ArtifactFormat

# Ops whose constant inputs at these indices are weights or biases (int32 biases count as params).
_WEIGHT_INPUTS = {
    "CONV_2D": (1, 2), "DEPTHWISE_CONV_2D": (1, 2), "FULLY_CONNECTED": (1, 2),
    "TRANSPOSE_CONV": (1, 3), "CONV_3D": (1, 2),
}


def summarize_tflite(path: Path, shapes: dict[str, tuple[int, ...]] | None = None) -> GraphSummary:
    from edgepack.model_files import tflite_interpreter

    interpreter = tflite_interpreter(path, delegates=False)
    notes: list[str] = []
    for detail in interpreter.get_input_details():
        signature = detail.get("shape_signature", detail["shape"])
        wanted = (shapes or {}).get(detail["name"])
        if wanted is None and any(d < 0 for d in signature):
            wanted = tuple(1 if d < 0 else int(d) for d in signature)
            notes.append(f"input '{detail['name']}': dynamic dimensions taken as 1")
        if wanted is not None:
            interpreter.resize_tensor_input(detail["index"], list(wanted))
    delegate_ops: list[str] = []
    try:
        interpreter.allocate_tensors()
    except RuntimeError as exc:  # e.g. a custom op this runtime has no kernel for: the tables are still there
        from edgepack.analysis.compat import is_tflite_custom_op

        custom = sorted({op["op_name"] for op in interpreter._get_ops_details() if is_tflite_custom_op(op["op_name"])})
        if custom and _loads_with_default_delegate(path):
            delegate_ops = custom
            notes.append(f"custom op(s) {', '.join(custom)}: no builtin kernel; TFLite's default XNNPACK delegate "
                         "runs them (tensor shapes as declared in the file)")
        else:
            notes.append(f"not allocated ({first_line(exc)}): tensor shapes as declared in the file")

    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # the only way the Python API exposes the op table
    produced = {i for op in ops for i in op["outputs"]}
    graph_inputs = [d["index"] for d in interpreter.get_input_details()]
    graph_outputs = [d["index"] for d in interpreter.get_output_details()]
    constants = {i for i in tensors if i not in produced and i not in graph_inputs}
    stored = _stored_weights(ops, constants)  # weights unpacked at load: DEQUANTIZE (fp16) and DENSIFY (sparse)
    storage = sorted({kind for kind, _ in stored.values()})
    if storage:
        notes.append("weights stored as " + " and ".join(
            f"{kind} ({sum(k == kind for k, _ in stored.values())} tensors, "
            f"{'DEQUANTIZE' if kind == 'fp16' else 'DENSIFY'} at load)" for kind in storage))

    def nbytes(index: int) -> int:
        tensor = tensors[index]
        return math.prod(int(d) for d in tensor["shape"]) * np.dtype(tensor["dtype"]).itemsize

    unique_params: dict[int, int] = {}
    layers: list[Layer] = []
    steps: list[tuple[list[str], list[str]]] = []
    for op in ops:
        name = op["op_name"]
        inputs = [i for i in op["inputs"] if i >= 0]
        weights = [i for i in inputs if i in constants]
        params = 0
        for position, index in enumerate(op["inputs"]):
            if index in constants and _is_param(name, position, tensors[index]):
                count = math.prod(int(d) for d in tensors[index]["shape"])
                params += count
                unique_params[index] = count
        activations = [i for i in inputs if i not in constants and i not in stored]
        weights += [i for i in inputs if i in stored]
        outputs = [i for i in op["outputs"] if i >= 0]
        layers.append(Layer(
            name=tensors[outputs[0]]["name"] if outputs else f"{name}_{op['index']}",
            op=name,
            macs=_macs(name, op["inputs"], outputs, tensors),
            params=params,
            weight_bytes=sum(nbytes(i) for i in weights),
            input_bytes=sum(nbytes(i) for i in activations),
            output_bytes=sum(nbytes(i) for i in outputs),
            precision=_precision(activations, weights, tensors),
        ))
        steps.append(([str(i) for i in activations], [str(i) for i in outputs]))

    sizes = {str(i): nbytes(i) for i in tensors if i not in constants}
    peak = peak_live_bytes(steps, sizes, [str(i) for i in graph_inputs], [str(i) for i in graph_outputs])
    input_shapes = {tensors[i]["name"]: tuple(int(d) for d in tensors[i]["shape"]) for i in graph_inputs}
    weight_bytes = sum(nbytes(i) for i in unique_params)
    return GraphSummary(ArtifactFormat.TFLITE, layers, sum(unique_params.values()), weight_bytes, peak, input_shapes,
                        notes, delegate_ops, storage)


def _stored_weights(ops: list[dict[str, Any]], constants: set[int]) -> dict[int, tuple[str, int]]:
    """Tensors that are weights unpacked by the runtime: output index -> (storage kind, constant index)."""
    stored: dict[int, tuple[str, int]] = {}
    for op in ops:  # DENSIFY may feed DEQUANTIZE: the file order is the execution order
        name, inputs = op["op_name"], [i for i in op["inputs"] if i >= 0]
        if name not in ("DEQUANTIZE", "DENSIFY") or len(inputs) != 1 or not op["outputs"]:
            continue
        source = inputs[0]
        if source in constants:
            kind = "sparse" if name == "DENSIFY" else "fp16"
        elif source in stored:
            kind = stored[source][0]
        else:
            continue
        stored[op["outputs"][0]] = (kind, source)
    return stored


def _loads_with_default_delegate(path: Path) -> bool:
    """Whether the interpreter with its default delegate (XNNPACK, which implements some MediaPipe custom
    ops such as Convolution2DTransposeBias) can allocate the model."""
    from edgepack.model_files import tflite_interpreter
    from edgepack.quiet import captured_output

    try:
        with captured_output():
            tflite_interpreter(path).allocate_tensors()
    except RuntimeError:
        return False
    return True


def _is_param(op: str, position: int, tensor: dict[str, Any]) -> bool:
    kind = np.dtype(tensor["dtype"])
    if kind.kind in "fc" or kind in (np.int8, np.uint8, np.int16):
        return True
    return position in _WEIGHT_INPUTS.get(op, ())


def _macs(op: str, inputs: list[int], outputs: list[int], tensors: dict[int, dict[str, Any]]) -> int:
    if not outputs:
        return 0

    def shape(index: int) -> tuple[int, ...]:
        return tuple(int(d) for d in tensors[index]["shape"]) if index >= 0 else ()

    out = math.prod(shape(outputs[0]))
    if op in ("CONV_2D", "CONV_3D"):  # filter [Cout, kH, kW, Cin]
        return out * math.prod(shape(inputs[1])[1:])
    if op == "DEPTHWISE_CONV_2D":  # filter [1, kH, kW, Cout]
        kernel = shape(inputs[1])
        return out * kernel[1] * kernel[2]
    if op == "FULLY_CONNECTED":  # weights [units, K]
        return out * shape(inputs[1])[-1]
    if op == "BATCH_MATMUL":
        return out * shape(inputs[0])[-1]
    if op == "TRANSPOSE_CONV":  # inputs: output_shape, filter [Cout, kH, kW, Cin], data
        kernel = shape(inputs[1])
        return math.prod(shape(inputs[2])) * kernel[0] * kernel[1] * kernel[2]
    return 0


def _precision(activations: list[int], weights: list[int], tensors: dict[int, dict[str, Any]]) -> str:
    activation_types = {np.dtype(tensors[i]["dtype"]) for i in activations}
    weight_types = {np.dtype(tensors[i]["dtype"]) for i in weights}
    if activation_types & {np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16)}:
        return "int8"
    if np.dtype(np.float16) in activation_types | weight_types:
        return "fp16"
    if weight_types & {np.dtype(np.int8), np.dtype(np.uint8)}:
        return "dynamic"
    return "fp32"
