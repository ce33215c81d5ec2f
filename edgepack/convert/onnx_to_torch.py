"""ONNX -> PyTorch: an ``nn.Module`` whose Conv/Linear/BatchNorm layers are real torch layers.

Why not onnx2torch: it imports torchvision, and PyPI's torchvision does not import beside the torch
CPU wheel edgepack installs; it also failed on a real exported MobileNetV3 (a weight fed by a node,
not an initializer). This module covers the ops of the CNNs edgepack prunes, as layers Torch-Pruning
can follow (Flatten-like Reshapes become ``torch.flatten`` so they survive channel pruning). Any
other op is a :class:`ConversionError` naming it and its node.
"""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.convert.errors import ConversionError

ROUTE = "onnx->torch"


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _key(name: str, used: set[str]) -> str:
    key = re.sub(r"\W", "_", name) or "node"
    if key[0].isdigit():
        key = f"n_{key}"
    base, i = key, 1
    while key in used:
        key, i = f"{base}_{i}", i + 1
    used.add(key)
    return key


def torch_module_from_onnx(model: Any) -> Any:
    """An eval-mode ``nn.Module`` computing what the ``onnx.ModelProto`` computes."""
    import torch
    from onnx import numpy_helper
    from torch import nn

    class OnnxGraphModule(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleDict()
            # (layer key or None, function or None, data inputs, outputs): no closure over self, so
            # copy.deepcopy (which pruning and distillation use) gives an independent module.
            self.steps: list[tuple[str | None, Callable[..., Any] | None, list[str], list[str]]] = []
            self.constant_keys: dict[str, str] = {}
            initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
            self.input_names = [v.name for v in model.graph.input if v.name not in initializers]
            self.output_names = [v.name for v in model.graph.output]
            self.consts: dict[str, np.ndarray] = dict(initializers)
            self._used: set[str] = set()
            # tensors whose channel count the graph relies on: outputs, and what a Reshape (other
            # than a flatten), Slice, Gather or uneven Split reads with fixed sizes
            self.channel_contracts: list[str] = list(self.output_names)
            for node in model.graph.node:
                if node.op_type == "Constant":
                    value = _attrs(node).get("value")
                    if value is None:
                        raise ConversionError(ROUTE, f"Constant node '{node.name}' without a tensor value")
                    self.consts[node.output[0]] = numpy_helper.to_array(value)
                    continue
                self._add(node)

        # -- building ----------------------------------------------------------------------------
        def _const(self, name: str) -> np.ndarray | None:
            return self.consts.get(name)

        def _buffer(self, name: str) -> str:
            if name not in self.constant_keys:
                key = _key("c_" + name, self._used)
                array = self.consts[name]
                self.register_buffer(key, torch.from_numpy(np.array(array)), persistent=True)
                self.constant_keys[name] = key
            return self.constant_keys[name]

        def _layer(self, node: Any, layer: nn.Module, data: str) -> None:
            key = _key(node.name or node.op_type, self._used)
            self.layers[key] = layer
            self.steps.append((key, None, [data], [node.output[0]]))

        def _add(self, node: Any) -> None:
            op, a = node.op_type, _attrs(node)
            ins, outs = list(node.input), list(node.output)
            if op == "Conv" and self._const(ins[1]) is not None:
                self._conv(node, a)
            elif op == "ConvTranspose" and self._const(ins[1]) is not None:
                self._conv_transpose(node, a)
            elif op in ("Gemm", "MatMul") and self._const(ins[1]) is not None and self._const(ins[1]).ndim == 2:
                self._linear(node, a)
            elif op == "BatchNormalization":
                self._batchnorm(node, a)
            elif op == "PRelu" and _channel_slope(self._const(ins[1])) is not None:
                prelu = nn.PReLU(int(self.consts[ins[1]].size))  # a layer, so pruning trims its slopes
                prelu.weight.data = torch.from_numpy(np.array(_channel_slope(self.consts[ins[1]])))
                self._layer(node, prelu, ins[0])
            elif op == "Split":
                fn = _split(a, [self._const(n) if n else None for n in ins], len(outs))
                if len(_ints(self._const(ins[1]) if len(ins) > 1 and ins[1] else None, a.get("split"))) > 1:
                    self.channel_contracts.append(ins[0])
                self.steps.append((None, fn, ins[:1], outs))
            elif op in simple_ops():
                fn = simple_ops()[op](a, [self._const(n) if n else None for n in ins])
                if op in ("Slice", "Gather", "DepthToSpace") or (op == "Reshape" and self._const(ins[1]) is not None
                                                 and self.consts[ins[1]].size != 2):
                    self.channel_contracts.append(ins[0])
                # data inputs: both operands of a binary op and every input of a variadic one
                # (constants are read from buffers); for the rest, the first input (the others are
                # attributes, read above).
                data = list(ins[:2]) if op in _BINARY else [n for n in ins if n] if op in _VARIADIC \
                    else ins[:1]
                self.steps.append((None, fn, data, outs[:1]))
            else:
                raise ConversionError(ROUTE, f"op {op} (node '{node.name}') is not supported",
                                      "edgepack converts the ops of common CNNs; simplify the model")

        def _conv(self, node: Any, a: dict[str, Any]) -> None:
            weight = self.consts[node.input[1]]
            bias = self._const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            dims = weight.ndim - 2
            conv_cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
            groups = int(a.get("group", 1))
            pads = list(a.get("pads", [0] * 2 * dims))
            if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
                raise ConversionError(ROUTE, f"Conv '{node.name}' uses auto_pad SAME; export with explicit pads")
            symmetric = pads[:dims] == pads[dims:]
            conv = conv_cls(weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]),
                            stride=tuple(a.get("strides", [1] * dims)),
                            padding=tuple(pads[:dims]) if symmetric else 0,
                            dilation=tuple(a.get("dilations", [1] * dims)), groups=groups,
                            bias=bias is not None)
            conv.weight.data = torch.from_numpy(np.array(weight))
            if bias is not None:
                conv.bias.data = torch.from_numpy(np.array(bias))
            layer: nn.Module = conv
            if not symmetric:
                torch_pads = [p for i in reversed(range(dims)) for p in (pads[i], pads[i + dims])]
                layer = nn.Sequential(nn.ConstantPad2d(tuple(torch_pads), 0.0) if dims == 2 else
                                      nn.ConstantPad1d(tuple(torch_pads), 0.0), conv)
            self._layer(node, layer, node.input[0])

        def _conv_transpose(self, node: Any, a: dict[str, Any]) -> None:
            weight = self.consts[node.input[1]]
            bias = self._const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            if weight.ndim != 4:
                raise ConversionError(ROUTE, f"ConvTranspose '{node.name}' is not 2-D")
            groups = int(a.get("group", 1))
            pads = list(a.get("pads", [0, 0, 0, 0]))
            if pads[:2] != pads[2:]:
                raise ConversionError(ROUTE, f"ConvTranspose '{node.name}' has asymmetric pads")
            conv = nn.ConvTranspose2d(weight.shape[0], weight.shape[1] * groups, tuple(weight.shape[2:]),
                                      stride=tuple(a.get("strides", [1, 1])), padding=tuple(pads[:2]),
                                      output_padding=tuple(a.get("output_padding", [0, 0])),
                                      dilation=tuple(a.get("dilations", [1, 1])), groups=groups,
                                      bias=bias is not None)
            conv.weight.data = torch.from_numpy(np.array(weight))
            if bias is not None:
                conv.bias.data = torch.from_numpy(np.array(bias))
            self._layer(node, conv, node.input[0])

        def _linear(self, node: Any, a: dict[str, Any]) -> None:
            b = self.consts[node.input[1]].astype(np.float32)
            if node.op_type == "Gemm":
                if a.get("transA", 0):
                    raise ConversionError(ROUTE, f"Gemm '{node.name}' with transA is not supported")
                weight = b if a.get("transB", 0) else b.T
                weight = weight * float(a.get("alpha", 1.0))
                c = self._const(node.input[2]) if len(node.input) > 2 and node.input[2] else None
                if c is not None and c.size not in (1, weight.shape[0]):
                    raise ConversionError(ROUTE, f"Gemm '{node.name}' adds a bias of shape {list(c.shape)}, "
                                          "not one per output")
                bias = None if c is None else np.broadcast_to(c.reshape(-1) * float(a.get("beta", 1.0)),
                                                              (weight.shape[0],))
            else:
                weight, bias = b.T, None
            linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
            linear.weight.data = torch.from_numpy(np.ascontiguousarray(weight))
            if bias is not None:
                linear.bias.data = torch.from_numpy(np.array(bias, dtype=np.float32))
            self._layer(node, linear, node.input[0])

        def _batchnorm(self, node: Any, a: dict[str, Any]) -> None:
            scale, bias, mean, var = (self._const(n) for n in node.input[1:5])
            if any(v is None for v in (scale, bias, mean, var)):
                raise ConversionError(ROUTE, f"BatchNormalization '{node.name}' has non-constant statistics")
            bn = nn.BatchNorm2d(len(scale), eps=float(a.get("epsilon", 1e-5)))
            for attr, value in (("weight", scale), ("bias", bias), ("running_mean", mean), ("running_var", var)):
                getattr(bn, attr).data = torch.from_numpy(np.array(value, dtype=np.float32))
            self._layer(node, bn, node.input[0])

        def head_layers(self) -> list[nn.Module]:
            """The Conv/Linear layers nearest to each channel contract (walking back through
            channel-wise ops): their output channels are fixed, pruning must keep them."""
            producer = {out: step for step in self.steps for out in step[3]}
            heads: list[nn.Module] = []
            seen: set[str] = set()
            todo = list(self.channel_contracts)
            while todo:
                name = todo.pop()
                if name in seen or name not in producer:
                    continue
                seen.add(name)
                key, _fn, data, _outs = producer[name]
                layer = self.layers[key] if key is not None else None
                core = layer[-1] if isinstance(layer, nn.Sequential) else layer
                if isinstance(core, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.ConvTranspose2d | nn.Linear):
                    heads.append(core)
                else:
                    todo.extend(data)
            return heads

        # -- running -----------------------------------------------------------------------------
        def forward(self, *inputs: Any) -> Any:
            env: dict[str, Any] = dict(zip(self.input_names, inputs, strict=True))
            for name, key in self.constant_keys.items():
                env[name] = getattr(self, key)
            for key, fn, data, outs in self.steps:
                args = [env[n] if n in env else self._tensor(n) for n in data]
                result = self.layers[key](*args) if key is not None else fn(*args)  # type: ignore[misc]
                if len(outs) > 1:
                    env.update(zip(outs, result, strict=True))
                else:
                    env[outs[0]] = result
            results = [env[n] for n in self.output_names]
            return results[0] if len(results) == 1 else tuple(results)

        def _tensor(self, name: str) -> Any:
            return getattr(self, self._buffer(name))

    module = OnnxGraphModule()
    # Binary ops read constants through buffers; register them now so state_dict has them.
    for _layer_key, _fn, data, _outs in module.steps:
        for name in data:
            if name in module.consts:
                module._buffer(name)
    return module.eval()


def _channel_slope(slope: np.ndarray | None) -> np.ndarray | None:
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


def _ints(value: np.ndarray | None, fallback: Any) -> list[int]:
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
    target = _ints(consts[1], [])

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
        starts, ends = _ints(c[1], []), _ints(c[2], [])
        axes = _ints(c[3], []) if len(c) > 3 and c[3] is not None else None
        steps = _ints(c[4], []) if len(c) > 4 and c[4] is not None else None
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


def _split(a: dict[str, Any], c: list[np.ndarray | None], outputs: int) -> Callable[..., Any]:
    import torch

    axis = int(a.get("axis", 0))
    sizes = _ints(c[1] if len(c) > 1 else None, a.get("split"))
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
            return _ints(consts[1], [])
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
        pads = _ints(c[1] if len(c) > 1 else None, a.get("pads"))
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


_BINARY = {"Add", "Sub", "Mul", "Div", "Pow", "PRelu", "Equal", "MatMul"}
_VARIADIC = {"Concat", "Max", "Min", "Sum", "Where"}


def convert_onnx_to_torch(onnx_path: Path, out_dir: Path, example: list[np.ndarray]) -> tuple[Any, Path]:
    """Build the module, then save ``model.pt`` (TorchScript, traced) and ``state_dict.pt`` in out_dir."""
    import onnx
    import torch

    module = torch_module_from_onnx(onnx.load(str(onnx_path)))
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about shape checks that are constant here
        traced = torch.jit.trace(module, tuple(torch.from_numpy(x) for x in example), check_trace=False)
    torch.jit.save(traced, str(out_dir / "model.pt"))
    torch.save(module.state_dict(), out_dir / "state_dict.pt")
    return module, out_dir
