"""Why a quantized artifact (int8, fp16) is slower than its fp32 twin on the same board (issue 27).

From the two artifacts' per-op profiles (ONNX Runtime's profiler, node by node; TFLite's benchmark_model)
time is grouped by op type, the quantized model's kernels matched to the fp32 ones they replace
(``QLinearConv`` and ``ConvInteger`` for ``Conv``, ``QLinearMul`` for ``Mul``; ONNX Runtime's own
``FusedConv`` is a ``Conv``), and each type's difference is put in one of these kinds:

- **conversions**: QuantizeLinear/DequantizeLinear (QUANTIZE/DEQUANTIZE, fp16's Cast) that stay around
  ops left in float: pure cost, every run;
- **layout**: Transpose, Reshape and ONNX Runtime's NCHWc reorders (an int8 model runs NHWC: its
  Transposes appear, the fp32 model's ReorderInput/ReorderOutput go);
- **quantized kernels**: the op ran on quantized data (a QLinear type, or a profiled node whose output is
  uint8/int8/float16) against the fp32 kernel: slower where the runtime has no fast int8 kernel for it
  (ConvInteger, an int8 Resize);
- **left in float**: the same float kernel in both (its difference is the board's noise, or caches);
- **only in fp32**: a type the quantized model no longer runs.

Without a per-op profile on either side (TFLite on a board without benchmark_model) the graphs alone
are read: the conversions the quantized graph adds and the ops it leaves in float, counted, never timed,
and the finding says so.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from edgepack.analysis.onnx_graph import INT8_OPS
from edgepack.formats import ArtifactFormat

#: ops that only change a tensor's number type (an int8 or fp16 model's cost of mixing precisions)
CONVERSION_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "Cast",
                            "QUANTIZE", "DEQUANTIZE", "CAST"})
#: ops that only move data (ReorderInput/ReorderOutput: ONNX Runtime's NCHWc layout for float Conv)
LAYOUT_OPS = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Flatten", "Identity", "DepthToSpace",
                        "SpaceToDepth", "ReorderInput", "ReorderOutput", "TRANSPOSE", "RESHAPE", "SQUEEZE",
                        "EXPAND_DIMS", "PACK", "UNPACK", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH"})
#: quantized kernels of ONNX (Runtime) not named QLinear<op>, and the fp32 op each replaces
QUANTIZED_TWINS = {"QGemm": "Gemm", "ConvInteger": "Conv", "MatMulInteger": "MatMul", "MatMulIntegerToFloat": "MatMul",
                   "DynamicQuantizeMatMul": "MatMul", "QAttention": "Attention", "NhwcMaxPool": "MaxPool"}
#: ONNX Runtime's fused float kernels, and the op each is
FLOAT_TWINS = {"FusedConv": "Conv", "FusedGemm": "Gemm", "FusedMatMul": "MatMul", "NhwcConv": "Conv",
               "NhwcFusedConv": "Conv"}
#: ops ONNX Runtime's CPU provider runs on int8 data when a QDQ graph has them between DequantizeLinear and
#: QuantizeLinear (fused into a QLinear kernel, or its Q/DQ pair dropped); other ops stay in float there
ORT_INT8_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Add", "Mul", "Concat", "AveragePool",
                          "GlobalAveragePool", "MaxPool", "Sigmoid", "LeakyRelu", "Softmax", "Resize", "Gather",
                          "Where", "Split", "Slice", "Pad", "ArgMax", "Relu", "Clip", "Transpose", "Reshape",
                          "Squeeze", "Unsqueeze", "Flatten", "DepthToSpace", "SpaceToDepth"})
QUANTIZED_DTYPES = frozenset({"uint8", "int8", "int16", "float16"})
NOT_QUANTIZED = frozenset({"fp32", "float32", "float"})
SAME_SPEED = 0.03  # within 3% of each other the two are "about as fast"
MENTIONED = 3  # causes a finding names at most


class OpTime(Protocol):
    """One op's time per run, as edgepack.runners.base.OpTime has it (analysis does not import runners,
    which import analysis: the profile is handed in)."""

    @property
    def type(self) -> str: ...
    @property
    def ms(self) -> float: ...
    @property
    def dtype(self) -> str | None: ...


class OpProfile(Protocol):
    """Per-op times of a model on a board, or why there are none (edgepack.runners.base.OpProfile)."""

    @property
    def ops(self) -> Sequence[OpTime]: ...
    @property
    def unavailable(self) -> str | None: ...


@dataclass(frozen=True)
class GraphOps:
    """What a graph file says of its ops: how many of each type, the precisions each type runs in, the
    ops left in float (compute ops, not conversions or layout), and the model's precision in words."""

    counts: Counter[str]
    precisions: dict[str, set[str]]
    float_ops: Counter[str]
    precision: str


class DeltaKind(str, Enum):
    CONVERSION = "conversion"
    LAYOUT = "layout"
    QUANTIZED_KERNEL = "quantized kernel"
    FLOAT = "left in float"
    GONE = "only in fp32"

    def __str__(self) -> str:
        return self.value


def fp32_type(op_type: str) -> tuple[str, bool]:
    """(the fp32 op a runtime's op type stands for, whether its kernel is a quantized one)."""
    if op_type in QUANTIZED_TWINS:
        return QUANTIZED_TWINS[op_type], True
    if op_type.startswith("QLinear") and len(op_type) > len("QLinear"):
        return op_type[len("QLinear"):], True
    return FLOAT_TWINS.get(op_type, op_type), op_type in INT8_OPS


@dataclass(frozen=True)
class OpDelta:
    """One op type in both models. ``op_type``: the fp32 model's name for it (``Conv``), or the quantized
    model's when only it has the type (``QuantizeLinear``); ``quantized_type``: what ran in the quantized
    model (``QLinearConv``, ``QLinearConv/Conv`` when some stayed float; "" when none). Times are ms per
    run from the per-op profiles, None when read from the graphs; ``count``: ops of the type in the
    quantized model, ``float_count`` of them in float."""

    op_type: str
    quantized_type: str
    fp32_ms: float | None
    quantized_ms: float | None
    count: int
    fp32_count: int
    kind: DeltaKind
    float_count: int = 0

    @property
    def delta_ms(self) -> float | None:
        """What the quantized model loses on this type (negative: gains); None: not timed."""
        if self.fp32_ms is None or self.quantized_ms is None:
            return None
        return self.quantized_ms - self.fp32_ms

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "kind": self.kind.value, "delta_ms": self.delta_ms}


@dataclass(frozen=True)
class ProfiledArtifact:
    """An artifact as measured on the board: its file (the graph), its per-op profile and its p50 (None
    when there is none). From a Measurement ``m``: ``ProfiledArtifact(m.request.model,
    m.result.op_profile, m.p50_ms)``."""

    path: Path
    op_profile: OpProfile | None = None
    p50_ms: float | None = None

    @property
    def timed_ops(self) -> bool:
        return self.op_profile is not None and bool(self.op_profile.ops)


@dataclass(frozen=True)
class SlowerExplanation:
    """Why ``precision`` is slower (or not) than fp32 on one board, op type by op type.

    ``fp32_ms``/``quantized_ms``: the measured p50s, else the sums of the per-op times (None: not timed).
    ``deltas``: the op types, the largest loss first (from the graphs: the most ops added first).
    ``timed``: the deltas are per-op times; False: counts from the graphs, and ``untimed_why`` says why.
    ``float_ops``: the op types the quantized model runs in float, with how many, the slowest (or most) first.
    """

    precision: str
    graph_format: ArtifactFormat
    fp32_ms: float | None
    quantized_ms: float | None
    deltas: tuple[OpDelta, ...]
    timed: bool
    float_ops: tuple[tuple[str, int], ...] = ()
    untimed_why: str | None = None

    @property
    def ratio(self) -> float | None:
        """quantized / fp32 latency (1.5: 1.5x slower); None without both."""
        if not self.fp32_ms or self.quantized_ms is None:
            return None
        return self.quantized_ms / self.fp32_ms

    def of_kind(self, kind: DeltaKind) -> tuple[OpDelta, ...]:
        return tuple(d for d in self.deltas if d.kind is kind)

    def sentence(self) -> str:
        """The finding in one line: how much slower, and the op types that account for it."""
        head = f"{self.precision} {self.graph_format.value}"
        ratio = self.ratio
        if ratio is not None:
            speed = ("about as fast as fp32" if abs(ratio - 1) <= SAME_SPEED else
                     f"{ratio:.2f}x slower than fp32" if ratio > 1 else f"{1 / ratio:.2f}x faster than fp32")
            head += f" is {speed} ({self.quantized_ms:.3g} ms vs {self.fp32_ms:.3g} ms)"
        if not self.timed:
            return f"{head}; from the graphs, not timed ({self.untimed_why}): {self._graph_causes()}"
        costs, savings = self._timed_causes()
        if ratio is not None and ratio < 1 - SAME_SPEED:
            found = f"{head}: {savings[0]}" if savings else head
            return f"{found}; still, {'; '.join(costs)}" if costs else found
        if not costs:
            return f"{head}: no op type is slower in the per-op profiles"
        return f"{head}: {'; '.join(costs)}"

    def _floats(self) -> str:
        return ", ".join(t for t, _ in self.float_ops[:MENTIONED]) if self.float_ops else "none left in float"

    def _timed_causes(self) -> tuple[list[str], list[str]]:
        """(what costs time, slowest first; what saves time, most first), each as words."""
        causes: list[tuple[float, str]] = []
        conversions = self.of_kind(DeltaKind.CONVERSION)
        added = sum(d.delta_ms or 0.0 for d in conversions)
        if added > 0:
            names = "/".join(d.op_type for d in sorted(conversions, key=_quantize_first) if d.count)
            causes.append((added, f"{sum(d.count for d in conversions)} {names} add {added:.3g} ms around ops "
                                  f"left in float ({self._floats()})"))
        layout = [d for d in self.of_kind(DeltaKind.LAYOUT) if (d.delta_ms or 0.0) > 0]
        moved = sum(d.delta_ms or 0.0 for d in self.of_kind(DeltaKind.LAYOUT))
        if layout and moved > 0:
            causes.append((moved, f"{sum(d.count for d in layout)} {'/'.join(d.op_type for d in layout)} "
                                  f"add {moved:.3g} ms of layout changes"))
        savings: list[tuple[float, str]] = []
        data = "fp16" if self.precision == "fp16" else "int8"
        for d in self.deltas:
            delta = d.delta_ms or 0.0
            ops = f"{d.count} ops" if d.count == d.fp32_count else f"{d.count} ops against {d.fp32_count}"
            ops += f", {d.float_count} of them in float" if d.float_count else ""
            name, twin = ((f"{d.op_type} on {data} data", f"{d.op_type} in fp32") if d.quantized_type == d.op_type
                          else (d.quantized_type, d.op_type))
            if d.kind is DeltaKind.QUANTIZED_KERNEL and delta > 0:
                causes.append((delta, f"{name} is {delta:.3g} ms slower than {twin}"
                                      f" ({ops}, {d.quantized_ms:.3g} vs {d.fp32_ms:.3g} ms)"))
            elif d.kind is DeltaKind.FLOAT and delta > 0:
                causes.append((delta, f"{d.op_type}, in float in both ({ops}), is {delta:.3g} ms slower"))
            elif d.kind is DeltaKind.QUANTIZED_KERNEL and delta < 0:
                savings.append((-delta, f"{name} saves {-delta:.3g} ms against {twin} ({ops})"))
        if not self.of_kind(DeltaKind.QUANTIZED_KERNEL) and self.precision != "fp32":
            causes.append((float("inf"), f"the runtime ran every op in float: no {data} kernel ran"))
        floor = 0.02 * max(self.fp32_ms or 0.0, self.quantized_ms or 0.0)  # smaller is the board's noise
        return ([words for ms, words in sorted(causes, key=lambda c: -c[0]) if ms >= floor][:MENTIONED],
                [words for _, words in sorted(savings, key=lambda c: -c[0])])

    def _graph_causes(self) -> str:
        conversions = sorted((d for d in self.of_kind(DeltaKind.CONVERSION) if d.count > d.fp32_count),
                             key=_quantize_first)
        floats = sum(n for _, n in self.float_ops)
        around = (f"{floats} op(s) left in float ({', '.join(f'{t} x{n}' for t, n in self.float_ops[:4])})"
                  if floats else "no op left in float")
        words = [f"{sum(d.count - d.fp32_count for d in conversions)} {'/'.join(d.op_type for d in conversions)} "
                 f"added around {around}" if conversions else around]
        layout = [d for d in self.of_kind(DeltaKind.LAYOUT) if d.count > d.fp32_count]
        if layout:
            words.append(f"{sum(d.count - d.fp32_count for d in layout)} {'/'.join(d.op_type for d in layout)} added")
        return ", ".join(words)

    def to_dict(self) -> dict[str, Any]:
        return {"precision": self.precision, "format": self.graph_format.value, "fp32_ms": self.fp32_ms,
                "quantized_ms": self.quantized_ms, "ratio": self.ratio, "timed": self.timed,
                "untimed_why": self.untimed_why, "float_ops": [list(f) for f in self.float_ops],
                "deltas": [d.to_dict() for d in self.deltas], "sentence": self.sentence()}


def _quantize_first(delta: OpDelta) -> tuple[bool, bool, str]:
    """QuantizeLinear before DequantizeLinear, Cast last."""
    name = delta.op_type.lower()
    return name.startswith("de"), name == "cast", delta.op_type


def explain_slower(fp32: ProfiledArtifact, quantized: ProfiledArtifact) -> SlowerExplanation:
    """The op types that make ``quantized`` slower than ``fp32`` (both measured on the same board, with
    the same runtime and threads: the caller's to see to). Per-op profiles on both sides give times;
    otherwise the graphs give counts, and the explanation says it was not timed and why."""
    fmt = ArtifactFormat.of_path(quantized.path) or ArtifactFormat.ONNX
    graph = graph_ops(quantized.path)
    if fp32.timed_ops and quantized.timed_ops:
        assert fp32.op_profile is not None and quantized.op_profile is not None
        deltas, floats = _timed_deltas(fp32.op_profile, quantized.op_profile, graph.precisions)
        return SlowerExplanation(graph.precision, fmt,
                                 fp32.p50_ms or sum(o.ms for o in fp32.op_profile.ops),
                                 quantized.p50_ms or sum(o.ms for o in quantized.op_profile.ops),
                                 deltas, True, floats)
    why = next((side.op_profile.unavailable for side in (quantized, fp32)
                if side.op_profile is not None and side.op_profile.unavailable), None)
    missing = " and ".join(name for name, side in (("fp32", fp32), (graph.precision, quantized)) if not side.timed_ops)
    return SlowerExplanation(graph.precision, fmt, fp32.p50_ms, quantized.p50_ms,
                             _graph_deltas(graph_ops(fp32.path).counts, graph), False,
                             tuple(graph.float_ops.most_common()), why or f"no per-op profile of the {missing} model")


@dataclass
class _Group:
    """One op type's ops in one profile, summed."""

    ms: float = 0.0
    count: int = 0
    floats: int = 0  # of them run in float
    quantized: bool = False  # any of them ran a quantized kernel
    types: dict[str, float] = field(default_factory=dict)  # the runtime's names for them, with their ms

    def add(self, op: OpTime) -> None:
        self.ms += op.ms
        self.count += 1
        self.types[op.type] = self.types.get(op.type, 0.0) + op.ms


def _timed_deltas(fp32: OpProfile, quantized: OpProfile,
                  precisions: dict[str, set[str]]) -> tuple[tuple[OpDelta, ...], tuple[tuple[str, int], ...]]:
    before: dict[str, _Group] = {}
    for op in fp32.ops:
        before.setdefault(fp32_type(op.type)[0], _Group()).add(op)
    after: dict[str, _Group] = {}
    floats: Counter[str] = Counter()
    float_ms: dict[str, float] = {}
    for op in quantized.ops:
        base, quantized_kernel = fp32_type(op.type)
        group = after.setdefault(base, _Group())
        group.add(op)
        if base in CONVERSION_OPS or base in LAYOUT_OPS:
            continue
        ran_quantized = quantized_kernel or (op.dtype in QUANTIZED_DTYPES if op.dtype is not None else
                                             bool(precisions.get(op.type)) and not precisions[op.type] & NOT_QUANTIZED)
        group.quantized |= ran_quantized
        if not ran_quantized:
            group.floats += 1
            floats[op.type] += 1
            float_ms[op.type] = float_ms.get(op.type, 0.0) + op.ms
    deltas = []
    for base in sorted(set(before) | set(after)):
        was, now = before.get(base, _Group()), after.get(base, _Group())
        kind = (DeltaKind.CONVERSION if base in CONVERSION_OPS else DeltaKind.LAYOUT if base in LAYOUT_OPS else
                DeltaKind.GONE if not now.count else
                DeltaKind.QUANTIZED_KERNEL if now.quantized else DeltaKind.FLOAT)
        deltas.append(OpDelta(base, "/".join(sorted(now.types, key=lambda t: -now.types[t])), was.ms, now.ms, now.count,
                              was.count, kind, now.floats if kind is DeltaKind.QUANTIZED_KERNEL else 0))
    deltas.sort(key=lambda d: -(d.delta_ms or 0.0))
    return tuple(deltas), tuple((t, floats[t]) for t in sorted(float_ms, key=lambda t: -float_ms[t]))


def _graph_deltas(fp32_counts: Counter[str], graph: GraphOps) -> tuple[OpDelta, ...]:
    """The op types (matched as in the profiles) whose count differs between the graphs, or that the
    quantized one runs in float."""
    before: Counter[str] = Counter()
    for op_type, n in fp32_counts.items():
        before[fp32_type(op_type)[0]] += n
    after: dict[str, Counter[str]] = {}
    for op_type, n in graph.counts.items():
        after.setdefault(fp32_type(op_type)[0], Counter())[op_type] += n
    deltas = []
    for base in sorted(set(before) | set(after)):
        types = after.get(base, Counter())
        count, floats = sum(types.values()), sum(graph.float_ops.get(t, 0) for t in types)
        if count == before[base] and not floats and set(types) <= {base}:
            continue
        kind = (DeltaKind.CONVERSION if base in CONVERSION_OPS else DeltaKind.LAYOUT if base in LAYOUT_OPS else
                DeltaKind.GONE if not count else DeltaKind.FLOAT if floats == count else DeltaKind.QUANTIZED_KERNEL)
        deltas.append(OpDelta(base, "/".join(t for t, _ in types.most_common()), None, None, count, before[base],
                              kind, floats if kind is DeltaKind.QUANTIZED_KERNEL else 0))
    deltas.sort(key=lambda d: -(d.count - d.fp32_count))
    return tuple(deltas)


def graph_ops(path: Path) -> GraphOps:
    """The ops of an .onnx or .tflite file (see :class:`GraphOps`)."""
    if ArtifactFormat.of_path(path) is ArtifactFormat.TFLITE:
        return _tflite_ops(path)
    return _onnx_ops(path)


def _tflite_ops(path: Path) -> GraphOps:
    from edgepack.analysis.tflite_graph import summarize_tflite

    summary = summarize_tflite(path)
    counts: Counter[str] = Counter()
    floats: Counter[str] = Counter()
    precisions: dict[str, set[str]] = {}
    for layer in summary.layers:
        counts[layer.op] += 1
        if layer.op in CONVERSION_OPS or layer.op in LAYOUT_OPS:
            continue
        precisions.setdefault(layer.op, set()).add(layer.precision)
        floats[layer.op] += layer.precision == "fp32"
    precision = "dynamic int8" if summary.precision == "dynamic" else summary.precision
    return GraphOps(counts, precisions, +floats, precision)


FLOAT16 = 10  # onnx.TensorProto.FLOAT16


def _onnx_ops(path: Path) -> GraphOps:
    """An ONNX graph's ops. A node of ORT_INT8_OPS between DequantizeLinear (on every input) and
    QuantizeLinear (on every reader) runs on int8 data (ONNX Runtime fuses it into its QLinear kernel, or
    drops the pair); a node with a float16 output runs in fp16; any other compute node runs in float (with
    its Q/DQ pairs as the cost of it). The profile, where there is one, says what really ran."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    with contextlib.suppress(Exception):  # a graph ONNX cannot infer: its fp16 ops go uncounted, the rest stands
        model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    elem = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.output, *g.value_info]}
    elem.update({i.name: i.data_type for i in g.initializer})
    weights = {i.name for i in g.initializer}
    producers = {out: node.op_type for node in g.node for out in node.output}
    readers: dict[str, list[str]] = {}
    for node in g.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    counts: Counter[str] = Counter()
    floats: Counter[str] = Counter()
    precisions: dict[str, set[str]] = {}
    for node in g.node:
        op = node.op_type
        if op == "Constant":
            continue
        counts[op] += 1
        if op in CONVERSION_OPS or op in LAYOUT_OPS:
            continue
        inputs = [n for n in node.input if n and n not in weights]
        outputs = [n for n in node.output if n]
        fed = bool(inputs) and all(producers.get(n) == "DequantizeLinear" for n in inputs)
        sandwiched = op in ORT_INT8_OPS and fed and all(
            readers.get(n) and all(r == "QuantizeLinear" for r in readers[n]) for n in outputs)
        precision = ("int8" if fp32_type(op)[1] or sandwiched else
                     "fp16" if any(elem.get(n) == FLOAT16 for n in outputs) else "fp32")
        precisions.setdefault(op, set()).add(precision)
        floats[op] += precision == "fp32"
    if counts["DynamicQuantizeLinear"] and not counts["QuantizeLinear"]:
        precision = "dynamic int8"
    elif any(counts[op] for op in ("QuantizeLinear", "DequantizeLinear")) or any(fp32_type(op)[1] for op in counts):
        precision = "int8"
    elif FLOAT16 in elem.values():
        precision = "fp16"
    else:
        precision = "fp32"
    return GraphOps(+counts, precisions, +floats, precision)
