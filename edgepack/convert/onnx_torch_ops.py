"""The ONNX ops edgepack's ONNX -> PyTorch converter (``convert/onnx_to_torch.py``) computes as torch
functions: each op is a function of the node's attributes and constant inputs that returns the callable
computing it. Ops with weights (Conv, Gemm, BatchNormalization, PRelu) become real layers in the builder.

The graph was exported at batch 1: a leading 1 in a Reshape target and a Slice of [0:1] on axis 0 are
the batch axis and run here for any batch. What cannot be translated (a computed shape, bound or index;
a mode torch has no equal of) is a :class:`ConversionError` naming it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from edgepack.conversion_error import ConversionError

ROUTE = "onnx->torch"

#: ops whose two operands are both data (a constant operand is read from the module's buffers)
BINARY_OPS = {"Add", "Sub", "Mul", "Div", "Pow", "PRelu", "Equal", "MatMul"}
#: ops that read every input as data
VARIADIC_OPS = {"Concat", "Max", "Min", "Sum", "Where"}


def channel_slope(slope: np.ndarray | None) -> np.ndarray | None:
    """A PRelu slope that is one value, or one per channel of axis 1 ([C, 1, 1], [1, C, 1, 1], [C])."""
    if slope is None:
        return None
    if slope.size == 1:
        return slope.reshape(1).astype(np.float32)
    shape = list(slope.shape)
    while shape and shape[0] == 1 and len(shape) > 3:
        shape.pop(0)
    if len(shape) in (1, 3) and shape[0] == slope.size:
        return np.ascontiguousarray(slope.reshape(-1), dtype=np.float32)
    return None


def as_ints(value: np.ndarray | None, fallback: Any) -> list[int]:
    return [int(v) for v in value.reshape(-1)] if value is not None else list(fallback or [])


def _pool(kind: str, a: dict[str, Any]) -> Callable[..., Any]:
    import torch.nn.functional as F

    kernel = list(a["kernel_shape"])
    dims = len(kernel)
    pads = list(a.get("pads", [0] * 2 * dims))
    strides = list(a.get("strides", [1] * dims))
    ceil = bool(a.get("ceil_mode", 0))
    if pads[:dims] != pads[dims:]:
        def padded(x: Any) -> Any:
            torch_pads = [p for i in reversed(range(dims)) for p in (pads[i], pads[i + dims])]
            fill = float("-inf") if kind == "max" else 0.0
            x = F.pad(x, torch_pads, value=fill)
            return (F.max_pool2d(x, kernel, strides, 0, ceil_mode=ceil) if kind == "max"
                    else F.avg_pool2d(x, kernel, strides, 0, ceil_mode=ceil))
        return padded
    if kind == "max":
        return lambda x: F.max_pool2d(x, kernel, strides, pads[:dims], ceil_mode=ceil)
    include = bool(a.get("count_include_pad", 0))
    return lambda x: F.avg_pool2d(x, kernel, strides, pads[:dims], ceil_mode=ceil, count_include_pad=include)


def _reshape(a: dict[str, Any], consts: list[np.ndarray | None]) -> Callable[..., Any]:
    import torch

    if consts[1] is None:
        raise ConversionError(ROUTE, "Reshape with a computed shape is not supported",
                              "export with a fixed input shape so shapes are constants")
    target = as_ints(consts[1], [])

    def reshape(x: Any) -> Any:
        # A flatten to [batch, features] (exported at batch 1): keep it a flatten, so that it works for
        # any batch and after channels are pruned.
        # ([1, K] at batch 1 can only be a flatten: K was the per-sample size when it was exported).
        if len(target) == 2 and x.dim() > 2 and (target[0] in (0, 1, x.shape[0])
                                                 or (target[0] == -1 and target[1] == x[0].numel())):
            return torch.flatten(x, 1)
        # exported at batch 1: a leading 1 is the batch axis, which runs here with many samples
        shape = [x.shape[i] if d == 0 or (i == 0 and d == 1) else d for i, d in enumerate(target)]
        return x.reshape(shape)
    return reshape


def _resize(a: dict[str, Any], consts: list[np.ndarray | None]) -> Callable[..., Any]:
    import torch.nn.functional as F

    def text(key: str, default: str) -> str:
        value = a.get(key, default)
        return value.decode() if isinstance(value, bytes) else value

    mode, coords = text("mode", "nearest"), text("coordinate_transformation_mode", "half_pixel")
    scales = consts[2] if len(consts) > 2 else consts[1]  # opset 10: (X, scales)
    sizes = consts[3] if len(consts) > 3 else None
    if (scales is None or not scales.size) and sizes is None:
        raise ConversionError(ROUTE, "Resize with computed scales or sizes is not supported",
                              "give --input-shape so that they fold to constants")
    if mode == "nearest" and coords == "asymmetric" and text("nearest_mode", "round_prefer_floor") == "floor":
        kwargs: dict[str, Any] = {"mode": "nearest"}
    elif mode == "linear" and coords in ("half_pixel", "pytorch_half_pixel", "align_corners"):
        kwargs = {"mode": "bilinear", "align_corners": coords == "align_corners"}
    else:
        raise ConversionError(ROUTE, f"Resize mode {mode} with {coords} coordinates is not supported")
    if sizes is not None and sizes.size:
        size = [int(v) for v in sizes[2:]]
        return lambda x: F.interpolate(x, size=size, **kwargs)
    factors = [float(v) for v in scales[2:]]
    return lambda x: F.interpolate(x, scale_factor=factors, **kwargs)


def _slice(a: dict[str, Any], c: list[np.ndarray | None]) -> Callable[..., Any]:
    if "starts" in a:  # opset < 10: attributes
        starts, ends, axes, steps = list(a["starts"]), list(a["ends"]), a.get("axes"), None
    else:
        if any(v is None for v in c[1:3]) or any(v is None for v in c[3:] if v is not None):
            raise ConversionError(ROUTE, "Slice with computed bounds is not supported",
                                  "give --input-shape so that they fold to constants")
        starts, ends = as_ints(c[1], []), as_ints(c[2], [])
        axes = as_ints(c[3], []) if len(c) > 3 and c[3] is not None else None
        steps = as_ints(c[4], []) if len(c) > 4 and c[4] is not None else None
    axes = list(axes) if axes is not None else list(range(len(starts)))
    steps = steps or [1] * len(starts)
    if any(s < 1 for s in steps):
        raise ConversionError(ROUTE, "Slice with a negative step is not supported")

    def run(x: Any) -> Any:
        index = [slice(None)] * x.dim()
        for axis, start, end, step in zip(axes, starts, ends, steps, strict=True):
            if axis in (0, -x.dim()) and start == 0 and step == 1 and end >= 1:
                continue  # the batch axis, exported at 1: keep every sample
            index[axis] = slice(start, min(end, x.shape[axis]) if end > 0 else end, step)
        return x[tuple(index)]
    return run


def split_op(a: dict[str, Any], c: list[np.ndarray | None], outputs: int) -> Callable[..., Any]:
    import torch

    axis = int(a.get("axis", 0))
    sizes = as_ints(c[1] if len(c) > 1 else None, a.get("split"))
    if sizes and len(set(sizes)) > 1:
        return lambda x: torch.split(x, sizes, dim=axis)
    count = len(sizes) or outputs
    return lambda x: torch.chunk(x, count, dim=axis)  # equal parts: still equal after pruning


def _gather(a: dict[str, Any], c: list[np.ndarray | None]) -> Callable[..., Any]:
    import torch

    if c[1] is None:
        raise ConversionError(ROUTE, "Gather with computed indices is not supported")
    axis, indices = int(a.get("axis", 0)), np.array(c[1], dtype=np.int64)
    if indices.ndim == 0:
        return lambda x: x.select(axis, int(indices))
    flat = torch.from_numpy(indices.reshape(-1))

    def run(x: Any) -> Any:
        picked = torch.index_select(x, axis, torch.where(flat < 0, flat + x.shape[axis], flat))
        return picked.reshape(*x.shape[:axis], *indices.shape, *x.shape[axis + 1:])
    return run


def _depth_to_space(a: dict[str, Any], c: list[np.ndarray | None]) -> Callable[..., Any]:
    import torch.nn.functional as F

    b = int(a["blocksize"])
    mode = a.get("mode", b"DCR")
    if (mode.decode() if isinstance(mode, bytes) else mode) == "CRD":
        return lambda x: F.pixel_shuffle(x, b)

    def dcr(x: Any) -> Any:
        n, channels, h, w = x.shape
        y = x.reshape(n, b, b, channels // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
        return y.reshape(n, channels // (b * b), h * b, w * b)
    return dcr


def _cast(a: dict[str, Any], c: list[np.ndarray | None]) -> Callable[..., Any]:
    import torch
    from onnx import helper

    dtype = torch.from_numpy(np.zeros(0, dtype=helper.tensor_dtype_to_np_dtype(a["to"]))).dtype
    return lambda x: x.to(dtype)


@functools.cache
def simple_ops() -> dict[str, Callable[[dict[str, Any], list[np.ndarray | None]], Callable[..., Any]]]:
    import torch
    import torch.nn.functional as F

    def axes(a: dict[str, Any], consts: list[np.ndarray | None]) -> list[int] | None:
        if len(consts) > 1 and consts[1] is not None:
            return as_ints(consts[1], [])
        return list(a["axes"]) if "axes" in a else None

    def reduce(fn: Callable[..., Any]) -> Callable[[dict[str, Any], list[np.ndarray | None]], Callable[..., Any]]:
        def make(a: dict[str, Any], c: list[np.ndarray | None]) -> Callable[..., Any]:
            dims, keep = axes(a, c), bool(a.get("keepdims", 1))
            return lambda x: fn(x, dim=dims if dims is not None else list(range(x.dim())), keepdim=keep)
        return make

    def clip(a: dict[str, Any], c: list[np.ndarray | None]) -> Callable[..., Any]:
        low = float(c[1]) if len(c) > 1 and c[1] is not None else a.get("min")
        high = float(c[2]) if len(c) > 2 and c[2] is not None else a.get("max")
        return lambda x: torch.clamp(x, low, high)

    def pad(a: dict[str, Any], c: list[np.ndarray | None]) -> Callable[..., Any]:
        pads = as_ints(c[1] if len(c) > 1 else None, a.get("pads"))
        value = float(c[2]) if len(c) > 2 and c[2] is not None else 0.0
        half = len(pads) // 2
        torch_pads = [p for i in reversed(range(half)) for p in (pads[i], pads[i + half])]
        mode = a.get("mode", b"constant")
        mode = mode.decode() if isinstance(mode, bytes) else mode
        return lambda x: F.pad(x, torch_pads, mode=mode, value=value) if mode == "constant" else \
            F.pad(x, torch_pads, mode=mode)

    def squeeze(a: dict[str, Any], c: list[np.ndarray | None]) -> Callable[..., Any]:
        dims = axes(a, c)
        return lambda x: torch.squeeze(x, dim=tuple(dims)) if dims else torch.squeeze(x)

    def unsqueeze(a: dict[str, Any], c: list[np.ndarray | None]) -> Callable[..., Any]:
        dims = sorted(axes(a, c) or [])

        def run(x: Any) -> Any:
            for d in dims:
                x = torch.unsqueeze(x, d)
            return x
        return run

    return {
        "Relu": lambda a, c: F.relu,
        "Sigmoid": lambda a, c: torch.sigmoid,
        "Tanh": lambda a, c: torch.tanh,
        "LeakyRelu": lambda a, c: lambda x: F.leaky_relu(x, a.get("alpha", 0.01)),
        "Elu": lambda a, c: lambda x: F.elu(x, a.get("alpha", 1.0)),
        "HardSigmoid": lambda a, c: lambda x: torch.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1),
        "HardSwish": lambda a, c: F.hardswish,
        "Gelu": lambda a, c: F.gelu,
        "Erf": lambda a, c: torch.erf,
        "Exp": lambda a, c: torch.exp,
        "Log": lambda a, c: torch.log,
        "Sqrt": lambda a, c: torch.sqrt,
        "Neg": lambda a, c: torch.neg,
        "Abs": lambda a, c: torch.abs,
        "Reciprocal": lambda a, c: torch.reciprocal,
        "Softmax": lambda a, c: lambda x: F.softmax(x, dim=a.get("axis", -1)),
        "LogSoftmax": lambda a, c: lambda x: F.log_softmax(x, dim=a.get("axis", -1)),
        "Clip": clip,
        "Identity": lambda a, c: lambda x: x,
        "Dropout": lambda a, c: lambda x: x,
        "Add": lambda a, c: torch.add,
        "Sub": lambda a, c: torch.sub,
        "Mul": lambda a, c: torch.mul,
        "Div": lambda a, c: torch.div,
        "Pow": lambda a, c: torch.pow,
        "MaxPool": lambda a, c: _pool("max", a),
        "AveragePool": lambda a, c: _pool("avg", a),
        "GlobalAveragePool": lambda a, c: lambda x: torch.mean(x, dim=tuple(range(2, x.dim())), keepdim=True),
        "GlobalMaxPool": lambda a, c: lambda x: torch.amax(x, dim=tuple(range(2, x.dim())), keepdim=True),
        "Flatten": lambda a, c: lambda x: torch.flatten(x, a.get("axis", 1)) if a.get("axis", 1) > 0
        else x.reshape(1, -1),
        "Reshape": _reshape,
        "Transpose": lambda a, c: lambda x: x.permute(*(a.get("perm") or reversed(range(x.dim())))),
        "Concat": lambda a, c: lambda *xs: torch.cat(xs, dim=a["axis"]),
        "Squeeze": squeeze,
        "Unsqueeze": unsqueeze,
        "ReduceMean": reduce(torch.mean),
        "ReduceSum": reduce(torch.sum),
        "ReduceMax": reduce(torch.amax),
        "Pad": pad,
        "Resize": _resize,
        "Upsample": _resize,
        "Slice": _slice,
        "Gather": _gather,
        "DepthToSpace": _depth_to_space,
        "Cast": _cast,
        "PRelu": lambda a, c: lambda x, slope: torch.where(x >= 0, x, x * slope),
        "Equal": lambda a, c: torch.eq,
        "MatMul": lambda a, c: torch.matmul,  # of two computed tensors (attention); weights become Linear
        "Max": lambda a, c: lambda *xs: functools.reduce(torch.maximum, xs),
        "Min": lambda a, c: lambda *xs: functools.reduce(torch.minimum, xs),
        "Sum": lambda a, c: lambda *xs: functools.reduce(torch.add, xs),
        "Where": lambda a, c: torch.where,
        "Softplus": lambda a, c: F.softplus,
        "Floor": lambda a, c: torch.floor,
        "Ceil": lambda a, c: torch.ceil,
    }
