"""A graph as the runtime runs it: its ops fused into kernels the way ONNX Runtime and TFLite fuse them,
grouped by kind and precision, with the roofline cost of each group. What the latency predictor sums over
(nn-Meter's idea: predict per kernel, not per model).

Fusion, as both runtimes do it on a CPU: an activation or batch norm right after a convolution or matrix
product runs inside it; in an ONNX QDQ graph, ONNX Runtime folds the QuantizeLinear/DequantizeLinear next
to an int8 convolution or matrix product into one QLinear kernel; a (de)quantize of a constant weight
runs once, at load. The Q/DQ that stay (around ops left in float) are kernels of their own, kind
``quant``: the usual reason int8 is slower than fp32. A TFLite graph is already fused by its converter.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from edgepack.analysis.graph import GraphSummary, Layer
from edgepack.analysis.roofline import peak_for
from edgepack.profiles import DeviceProfile


class KernelKind(str, Enum):
    CONV = "conv"
    DEPTHWISE = "depthwise"  # a convolution of one channel at a time
    MATMUL = "matmul"
    ELEMENTWISE = "elementwise"
    POOL = "pool"
    RESIZE = "resize"
    LAYOUT = "layout"  # data movement: transpose, reshape, concat, slice, pad, gather
    QUANT = "quant"  # quantize / dequantize left standing
    OTHER = "other"

    def __str__(self) -> str:
        return self.value


_CONV = {"conv", "convinteger", "qlinearconv", "conv_2d", "conv_3d", "convtranspose", "transpose_conv",
         "fusedconv", "nhwcconv", "qlinearconvtranspose"}
_DEPTHWISE = {"depthwise_conv_2d"}
_MATMUL = {"matmul", "gemm", "matmulinteger", "qlinearmatmul", "qgemm", "fully_connected", "batch_matmul",
           "fusedmatmul", "fusedgemm", "dynamicquantizematmul", "matmulintegertofloat"}
_QUANT = {"quantizelinear", "dequantizelinear", "dynamicquantizelinear", "quantize", "dequantize"}
_POOL = {"maxpool", "averagepool", "globalaveragepool", "globalmaxpool", "max_pool_2d", "average_pool_2d",
         "mean", "reducemean", "qlinearglobalaveragepool", "qlinearaveragepool", "l2_pool_2d", "reducemax",
         "reduce_max", "sum", "reducesum"}
_RESIZE = {"resize", "upsample", "resize_bilinear", "resize_nearest_neighbor"}
_LAYOUT = {"transpose", "reshape", "concat", "concatenation", "slice", "strided_slice", "split", "split_v", "pad",
           "padv2", "gather", "gather_nd", "squeeze", "unsqueeze", "flatten", "expand", "tile", "shape", "identity",
           "depthtospace", "spacetodepth", "depth_to_space", "space_to_depth", "pack", "unpack", "cast",
           "reordertonchwc", "reorderinput", "reorderoutput", "qlinearconcat", "constant", "constantofshape"}
#: applied inside the kernel before them (ONNX Runtime's Conv/MatMul activation fusion; folded batch norms)
_FUSES_INTO_PRODUCT = {"relu", "clip", "leakyrelu", "sigmoid", "hardsigmoid", "batchnormalization", "add", "tanh",
                       "hardswish"}


def kind_of(op: str, macs: int = 0, output_bytes: int = 0, precision: str = "fp32") -> KernelKind:
    """The kind of kernel an op runs as. A convolution doing at most 49 multiply-adds per output element
    (a 7x7 window over one channel) is a depthwise one, whichever runtime's name it has."""
    name = op.lower()
    if name in _DEPTHWISE:
        return KernelKind.DEPTHWISE
    if name in _CONV:
        per_output = macs / max(output_bytes / (1 if precision == "int8" else 2 if precision == "fp16" else 4), 1)
        return KernelKind.DEPTHWISE if macs and per_output <= 49 else KernelKind.CONV
    for kinds, kind in ((_MATMUL, KernelKind.MATMUL), (_QUANT, KernelKind.QUANT), (_POOL, KernelKind.POOL),
                        (_RESIZE, KernelKind.RESIZE), (_LAYOUT, KernelKind.LAYOUT)):
        if name in kinds:
            return kind
    if macs:
        return KernelKind.MATMUL
    return KernelKind.ELEMENTWISE if name.isalpha() or "_" in name else KernelKind.OTHER


@dataclass(frozen=True)
class KernelGroup:
    """The kernels of one kind and precision in a graph: how many, their work, and their roofline cost."""

    kind: str  # KernelKind value
    precision: str  # fp32 | fp16 | int8
    count: int
    macs: int
    bytes: int
    cost_ms: float  # roofline time of these kernels at the plan's thread count (compute or memory bound)

    @property
    def cell(self) -> str:
        return f"{self.kind}/{self.precision}"

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KernelGroup:
        return cls(str(data["kind"]), str(data["precision"]), int(data["count"]), int(data["macs"]),
                   int(data["bytes"]), float(data["cost_ms"]))


def fused(layers: list[Layer]) -> list[Layer]:
    """The layers that run as kernels of their own, after the runtime's fusion (see the module's text)."""
    kept: list[Layer] = []
    for index, layer in enumerate(layers):
        name = layer.op.lower()
        before = kept[-1] if kept else None
        product = before is not None and kind_of(before.op, before.macs) in (
            KernelKind.CONV, KernelKind.DEPTHWISE, KernelKind.MATMUL)
        if product and name in _FUSES_INTO_PRODUCT:
            continue
        if name in _QUANT and not layer.input_bytes:  # a constant weight's: done once, when the model loads
            continue
        if name in ("quantizelinear", "dequantizelinear"):
            after = layers[index + 1] if index + 1 < len(layers) else None
            near_int8 = [x for x in (before, after) if x is not None and x.precision == "int8"
                         and kind_of(x.op, x.macs) in (KernelKind.CONV, KernelKind.DEPTHWISE, KernelKind.MATMUL)]
            if near_int8:
                continue
        kept.append(layer)
    return kept


def kernel_groups(summary: GraphSummary, profile: DeviceProfile, threads: int) -> tuple[KernelGroup, ...]:
    """The graph's kernels by kind and precision, with their roofline cost on ``profile`` at ``threads``."""
    bandwidth = profile.roofline.memory_gbps * 1e9
    share = min(threads, profile.cores) / profile.cores if profile.cores > 0 else 1.0
    totals: dict[tuple[str, str], list[float]] = {}
    for layer in fused(summary.layers):
        precision = layer.precision if layer.precision in ("fp32", "fp16", "int8") else "fp32"
        kind = kind_of(layer.op, layer.macs, layer.output_bytes, precision)
        _, peak = peak_for(profile, precision)
        traffic = layer.weight_bytes + layer.input_bytes + layer.output_bytes
        compute_s = 2 * layer.macs / (peak * share * 1e9) if layer.macs and peak > 0 else 0.0
        cost_ms = max(compute_s, traffic / bandwidth if bandwidth > 0 else 0.0) * 1e3
        entry = totals.setdefault((kind.value, precision), [0, 0, 0, 0.0])
        entry[0] += 1
        entry[1] += layer.macs
        entry[2] += traffic
        entry[3] += cost_ms
    return tuple(KernelGroup(kind, precision, int(n), int(macs), int(traffic), float(cost))
                 for (kind, precision), (n, macs, traffic, cost) in sorted(totals.items()))
