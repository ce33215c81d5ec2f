"""Which of a model's ops a device can run, and why not where it cannot.

ONNX ops are checked against the device's ONNX op list when it runs ONNX Runtime; otherwise they
are mapped to the TFLite builtin op a converter normally lowers them to, and that is checked. An
ONNX op with no known lowering is reported as unknown, not as unsupported: the converter decides.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from edgepack.analysis.graph import GraphSummary
from edgepack.formats import ArtifactFormat
from edgepack.profiles import DeviceProfile

# ONNX op -> the TFLite builtin op(s) it usually becomes (onnx2tf / TFLite converter lowering).
# None: folded away or removed by the converter.
ONNX_TO_TFLITE: dict[str, tuple[str, ...] | None] = {
    "Conv": ("CONV_2D",), "ConvTranspose": ("TRANSPOSE_CONV",), "Gemm": ("FULLY_CONNECTED",),
    "MatMul": ("FULLY_CONNECTED",), "Relu": ("RELU",), "Clip": ("RELU6",), "LeakyRelu": ("LEAKY_RELU",),
    "PRelu": ("PRELU",), "Sigmoid": ("LOGISTIC",), "Tanh": ("TANH",), "Softmax": ("SOFTMAX",),
    "LogSoftmax": ("LOG_SOFTMAX",), "Add": ("ADD",), "Sub": ("SUB",), "Mul": ("MUL",), "Div": ("DIV",),
    "MaxPool": ("MAX_POOL_2D",), "AveragePool": ("AVERAGE_POOL_2D",), "GlobalAveragePool": ("MEAN",),
    "GlobalMaxPool": ("REDUCE_MAX",), "ReduceMean": ("MEAN",), "ReduceMax": ("REDUCE_MAX",),
    "ReduceMin": ("REDUCE_MIN",), "ReduceSum": ("SUM",), "ReduceProd": ("REDUCE_PROD",),
    "Flatten": ("RESHAPE",), "Reshape": ("RESHAPE",), "Squeeze": ("RESHAPE",), "Unsqueeze": ("RESHAPE",),
    "Transpose": ("TRANSPOSE",), "Concat": ("CONCATENATION",), "Split": ("SPLIT",),
    "Slice": ("STRIDED_SLICE",), "Pad": ("PAD",), "Gather": ("GATHER",), "Exp": ("EXP",),
    "Log": ("LOG",), "Sqrt": ("SQRT",), "Pow": ("POW",), "Max": ("MAXIMUM",), "Min": ("MINIMUM",),
    "Abs": ("ABS",), "Neg": ("NEG",), "Floor": ("FLOOR",), "Ceil": ("CEIL",), "Sin": ("SIN",),
    "Cos": ("COS",), "Cast": ("CAST",), "ArgMax": ("ARG_MAX",), "ArgMin": ("ARG_MIN",),
    "TopK": ("TOPK_V2",), "Tile": ("TILE",), "Expand": ("BROADCAST_TO",), "Where": ("SELECT_V2",),
    "Equal": ("EQUAL",), "Greater": ("GREATER",), "Less": ("LESS",), "Not": ("LOGICAL_NOT",),
    "And": ("LOGICAL_AND",), "Or": ("LOGICAL_OR",), "HardSwish": ("HARD_SWISH",),
    "HardSigmoid": ("MUL", "ADD", "RELU6"), "Elu": ("ELU",), "Selu": ("ELU", "MUL"),
    "Softplus": ("EXP", "ADD", "LOG"), "Erf": ("GELU",), "Gelu": ("GELU",),
    "DepthToSpace": ("DEPTH_TO_SPACE",), "SpaceToDepth": ("SPACE_TO_DEPTH",),
    "LSTM": ("UNIDIRECTIONAL_SEQUENCE_LSTM",), "Einsum": ("BATCH_MATMUL",),
    "BatchNormalization": None, "Identity": None, "Dropout": None, "Constant": None, "Shape": None,
    "ConstantOfShape": None, "QuantizeLinear": ("QUANTIZE",), "DequantizeLinear": ("DEQUANTIZE",),
    "Reciprocal": ("DIV",), "Sum": ("ADD",), "Mean": ("ADD", "MUL"), "Range": ("RANGE",),
    "InstanceNormalization": ("MEAN", "SQUARED_DIFFERENCE", "RSQRT", "MUL", "ADD"),
    "LayerNormalization": ("MEAN", "SQUARED_DIFFERENCE", "RSQRT", "MUL", "ADD"),
}


@dataclass(frozen=True)
class OpIssue:
    op: str
    count: int
    status: str  # "unsupported" or "unknown"
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class Compatibility:
    runtime: str  # the device runtime the check was made against
    issues: list[OpIssue]
    precision_notes: list[str]
    checked_by: str = ""  # who spoke: the profile's op list, TFLite's GPU analyzer, Vela

    @property
    def compatible(self) -> bool:
        return not any(issue.status == "unsupported" for issue in self.issues)

    def to_dict(self) -> dict[str, Any]:
        return {"runtime": self.runtime, "compatible": self.compatible, "checked_by": self.checked_by,
                "issues": [i.to_dict() for i in self.issues], "precision_notes": self.precision_notes}


def check_compatibility(summary: GraphSummary, profile: DeviceProfile) -> Compatibility:
    histogram = summary.op_histogram
    ops = profile.ops
    issues: list[OpIssue] = []
    if summary.graph_format is ArtifactFormat.ONNX and "onnxruntime" in profile.runtimes and ops.onnx is not None:
        runtime = "onnxruntime"
        if ops.onnx != "all":
            allowed = set(ops.onnx)
            issues = [OpIssue(op, n, "unsupported", f"not in {profile.name}'s ONNX op list ({ops.source})")
                      for op, n in histogram.items() if op not in allowed]
        issues += _custom_op_issues(summary)
    else:
        runtime = next((r for r in profile.runtimes if r.startswith("tflite")), profile.runtimes[0])
        if ops.tflite is not None and ops.tflite != "all":
            issues = _tflite_issues(summary, histogram, set(ops.tflite), profile)
        elif summary.graph_format is ArtifactFormat.TFLITE:
            found = [_tflite_custom_issue(op, n, summary, profile) for op, n in histogram.items()
                     if is_tflite_custom_op(op)]
            issues = [i for i in found if i is not None]
    return Compatibility(runtime, issues, _precision_notes(summary, profile),
                         f"{profile.name}'s op list ({ops.source})")


def onnxruntime_kernels() -> set[tuple[str, str]] | None:
    """(domain, op) pairs this ONNX Runtime has a CPU kernel for; None when it does not say."""
    try:
        from onnxruntime.capi import _pybind_state

        return {(k.domain, k.op_name) for k in _pybind_state.get_all_opkernel_def()
                if k.provider == "CPUExecutionProvider"}
    except (ImportError, AttributeError):
        return None


def _custom_op_issues(summary: GraphSummary) -> list[OpIssue]:
    """Ops outside the standard ONNX domain load only where a kernel for them is registered."""
    custom = Counter((layer.domain, layer.op) for layer in summary.layers if layer.domain)
    if not custom:
        return []
    kernels = onnxruntime_kernels()
    issues = []
    for (domain, op), count in custom.items():
        if kernels is None:
            issues.append(OpIssue(op, count, "unknown", f"op of domain '{domain}': this ONNX Runtime does not list "
                                                        "its kernels"))
        elif (domain, op) not in kernels:
            issues.append(OpIssue(op, count, "unsupported",
                                  f"custom op of domain '{domain}': ONNX Runtime has no kernel for it and cannot "
                                  "load the model without the library that registers it"))
    return issues


def is_tflite_custom_op(op: str) -> bool:
    """TFLite builtin ops are named in UPPER_SNAKE_CASE (BuiltinOperator); a custom op carries its own name."""
    return op != op.upper()


def _tflite_custom_issue(op: str, count: int, summary: GraphSummary, profile: DeviceProfile) -> OpIssue | None:
    """A device whose TFLite op list is "all": a custom op runs there only if something registers it.
    TFLite's default XNNPACK delegate implements a few (MediaPipe's Convolution2DTransposeBias)."""
    if op in summary.delegate_ops and profile.device_class == "cpu":
        return None  # the summary's notes say that the XNNPACK delegate runs it
    return OpIssue(op, count, "unsupported", "a custom op: no builtin TFLite kernel; the model loads only with "
                                             "the library that registers it")


def _tflite_issues(summary: GraphSummary, histogram: dict[str, int], allowed: set[str],
                   profile: DeviceProfile) -> list[OpIssue]:
    where = f"{profile.name}'s TFLite op list ({profile.ops.source})"
    issues = []
    for op, count in histogram.items():
        if summary.graph_format is ArtifactFormat.TFLITE:
            if op not in allowed:
                issues.append(OpIssue(op, count, "unsupported", f"not in {where}"))
            continue
        if op not in ONNX_TO_TFLITE:
            issues.append(OpIssue(op, count, "unknown",
                                  "no TFLite lowering known to edgepack; the conversion will tell"))
            continue
        lowered = ONNX_TO_TFLITE[op] or ()
        missing = [t for t in lowered if t not in allowed]
        if missing:
            issues.append(OpIssue(op, count, "unsupported",
                                  f"becomes TFLite {', '.join(missing)}, not in {where}"))
    return issues


def _precision_notes(summary: GraphSummary, profile: DeviceProfile) -> list[str]:
    notes = []
    required = profile.precisions.required
    if required and summary.precision not in required:
        notes.append(f"{profile.name} runs only {'/'.join(required)} models and this one is "
                     f"{summary.precision}: quantize it first (edgepack quantize --mode int8)")
    if summary.precision not in profile.precisions.supported and not required:
        notes.append(f"{profile.name} does not list {summary.precision} among its precisions "
                     f"({', '.join(profile.precisions.supported)})")
    if profile.ops.notes:
        notes.append(profile.ops.notes)
    return notes
