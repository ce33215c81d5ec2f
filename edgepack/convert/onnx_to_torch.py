"""ONNX -> PyTorch: an ``nn.Module`` whose Conv/Linear/BatchNorm layers are real torch layers.

Why not onnx2torch: it imports torchvision, and PyPI's torchvision does not import beside the torch
CPU wheel edgepack installs; it also failed on a real exported MobileNetV3 (a weight fed by a node,
not an initializer). This module covers the ops of the CNNs edgepack prunes, as layers Torch-Pruning
can follow (Flatten-like Reshapes become ``torch.flatten`` so they survive channel pruning). Any
other op is a :class:`ConversionError` naming it and its node.

This module builds the module (the layers with weights, the order of the steps, the layers pruning must
keep); the other ops' translations are in ``convert/onnx_torch_ops.py``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.conversion_error import ConversionError
from edgepack.convert.onnx_torch_ops import (
    BINARY_OPS,
    ROUTE,
    VARIADIC_OPS,
    as_ints,
    channel_slope,
    simple_ops,
    split_op,
)


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
            elif op == "PRelu" and channel_slope(self._const(ins[1])) is not None:
                prelu = nn.PReLU(int(self.consts[ins[1]].size))  # a layer, so pruning trims its slopes
                prelu.weight.data = torch.from_numpy(np.array(channel_slope(self.consts[ins[1]])))
                self._layer(node, prelu, ins[0])
            elif op == "Split":
                fn = split_op(a, [self._const(n) if n else None for n in ins], len(outs))
                if len(as_ints(self._const(ins[1]) if len(ins) > 1 and ins[1] else None, a.get("split"))) > 1:
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
                data = list(ins[:2]) if op in BINARY_OPS else [n for n in ins if n] if op in VARIADIC_OPS \
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
