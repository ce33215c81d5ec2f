"""ONNX quantization with ONNX Runtime: static QDQ (per-tensor or per-channel weights, calibrated
activations), dynamic (int8 weights) and fp16. Per-channel scales cost about a tenth more file on a
MobileNet; edgepack takes them only when per-tensor loses more accuracy than the user allows.

Activation type follows the target's architecture: on x86 ONNX Runtime's fast int8 kernels take uint8
activations with int8 weights (U8S8); S8S8 falls back to slower paths. On Arm both are served, and
int8 activations are symmetric-friendly, so edgepack uses int8 there.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from edgepack.compress.plan import Precision
from edgepack.compress.quantizer import (
    SENSITIVITY_SAMPLES,
    FloatLayer,
    QuantizeBase,
    Quantizer,
    identity_bindings,
    sensitivity_samples,
)
from edgepack.conversion_error import ConversionError
from edgepack.data import Dataset
from edgepack.engines import Engine
from edgepack.errors import first_line
from edgepack.formats import ArtifactFormat
from edgepack.model import ModelFormat, ModelHandle
from edgepack.profiles import DeviceProfile
from edgepack.stages import StageClock

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def activation_type_for(architecture: str) -> str:
    return "uint8" if architecture == "x86_64" else "int8"


class _Reader:
    """ONNX Runtime's CalibrationDataReader over a list of feeds (re-iterable)."""

    def __init__(self, feeds: list[dict[str, np.ndarray]]) -> None:
        self.feeds = feeds
        self._iter: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:
        self._iter = iter(self.feeds)


PER_CHANNEL_OPSET = 13  # DequantizeLinear takes an axis (per-channel scales) from opset 13


def default_opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def upgrade_opset(src: Path, out: Path, version: int = PER_CHANNEL_OPSET) -> Path | None:
    """The model at ``version`` (ONNX's version converter), checked to load in ONNX Runtime; None when
    the converter cannot take it there."""
    import onnx
    from onnx import version_converter

    try:
        onnx.save(version_converter.convert_version(onnx.load(str(src)), version), str(out))
        from edgepack.engines import OnnxEngine

        OnnxEngine(out)
    except Exception:  # the converter and ORT raise many types; the caller stays per-tensor instead
        return None
    return out


def preprocess(src: Path, out: Path) -> Path:
    """ONNX Runtime's recommended pre-processing (shape inference, graph optimisation) before quantizing.
    Initializers that old exporters also list as graph inputs (IR < 4) are taken off the inputs first
    (the quantizer would otherwise expect them fed as data), and weights or shapes computed at run time
    (ConstantOfShape, Shape chains) are folded to constants."""
    import onnx
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgepack.convert.simplify import SHAPE_OPS, simplify_onnx

    model = onnx.load(str(src))
    weights = {i.name for i in model.graph.initializer}
    if any(i.name in weights for i in model.graph.input):
        kept = [i for i in model.graph.input if i.name not in weights]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        model.ir_version = max(model.ir_version, 4)  # IR 4 is where initializers stopped being inputs
        src = out.with_name(f"inputs_{out.name}")
        onnx.save(model, str(src))
    if any(n.op_type in SHAPE_OPS for n in model.graph.node):  # weights or shapes computed at run time:
        src, _ = simplify_onnx(src, out.with_name(f"folded_{out.name}"))  # constants, as ORT's quantizer needs
    try:
        quant_pre_process(str(src), str(out), skip_symbolic_shape=True)
    except Exception:  # pre-processing is an optimisation; quantize the model as it is if it fails
        return src
    return out


def quantize_onnx_static(src: Path, out: Path, feeds: list[dict[str, np.ndarray]], *, activation_type: str,
                         calibrate_method: str = "minmax", per_channel: bool = False,
                         nodes_to_exclude: list[str] | None = None, nodes_to_quantize: list[str] | None = None,
                         cache: Path | None = None) -> Path:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
              "percentile": CalibrationMethod.Percentile}[calibrate_method]
    options = {"ActivationSymmetric": activation_type == "int8"}

    def run(extra: dict[str, bool]) -> None:
        quantize_static(
            str(src), str(out), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=per_channel,
            activation_type=QuantType.QUInt8 if activation_type == "uint8" else QuantType.QInt8,
            weight_type=QuantType.QInt8, calibrate_method=method, nodes_to_exclude=nodes_to_exclude or [],
            nodes_to_quantize=nodes_to_quantize, calibration_cache_path=cache, extra_options={**options, **extra})

    try:
        run({})
    except Exception as exc:  # ONNX Runtime raises many types here
        first = first_line(exc, 300)
        try:
            # ORT's rescaling of weights for int32 biases fails on some graphs (e.g. a Gemm whose bias is
            # [1, N]); without it the bias may round coarser, which the fidelity check then judges
            run({"QDQDisableWeightAdjustForInt32Bias": True})
        except Exception:  # the same failure, or another: the first reason is the one to report
            raise ConversionError("onnx static quantization", first) from None
    failure = _runs(out, feeds[0])
    if failure and per_channel:  # per-channel scales ORT itself cannot run (a weight behind a Reshape)
        return quantize_onnx_static(src, out, feeds, activation_type=activation_type, calibrate_method=calibrate_method,
                                    per_channel=False, nodes_to_exclude=nodes_to_exclude,
                                    nodes_to_quantize=nodes_to_quantize, cache=cache)
    if failure:
        raise ConversionError("onnx static quantization", f"the quantized graph does not run: {failure}")
    return _drop_value_info(out)


def _runs(path: Path, feed: dict[str, np.ndarray]) -> str | None:
    """None when ONNX Runtime loads the graph and runs it on one sample, else why not."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 4  # the failure is reported in one line, not ORT's own log
    try:
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, feed)
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph/RuntimeException types
        return first_line(exc, 300)
    return None


def _drop_value_info(path: Path) -> Path:
    """Intermediate shape annotations are for tools, not for running: ONNX Runtime infers them again."""
    import onnx

    model = onnx.load(str(path))
    del model.graph.value_info[:]
    onnx.save(model, str(path))
    return path


def quantize_onnx_dynamic(src: Path, out: Path) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(src), str(out), weight_type=QuantType.QInt8)
    return out


def quantize_onnx_fp16(src: Path, out: Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    onnx.save(model, str(out))
    return out


MAX_HEAD_NODES = 64


def output_head(src: Path) -> list[str]:
    """The unweighted nodes between the graph's outputs and the last weighted layers (concats of boxes
    and scores, sigmoids, decoding arithmetic). One int8 scale across a tensor that joins pixel boxes and
    probabilities erases the probabilities; these nodes are the first to keep in float."""
    import onnx

    graph = onnx.load(str(src), load_external_data=False).graph
    producer = {out: node for node in graph.node for out in node.output}
    head: list[str] = []
    seen: set[str] = set()
    stack = [o.name for o in graph.output]
    while stack and len(head) < MAX_HEAD_NODES:
        node = producer.get(stack.pop())
        if node is None or node.name in seen or not node.name:
            continue
        seen.add(node.name)
        if node.op_type in WEIGHTED_OPS:
            continue
        head.append(node.name)
        stack.extend(node.input)
    return head


def layer_sensitivity(src: Path, quantized: Path, probe: list[dict[str, np.ndarray]]) -> list[tuple[str, float]]:
    """Nodes ranked by the quantization noise their output picks up, noisiest first: both models are run
    once on the probe samples with every intermediate tensor saved (ONNX Runtime's QDQ debugging tools),
    and each tensor's noise is 1 / SQNR of its own quantize-dequantize step. Two runs, whatever the size
    of the graph, instead of one quantization per layer."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        compute_weight_error,
        create_activation_matching,
        create_weight_matching,
        modify_model_output_intermediate_tensors,
    )

    ort.set_default_logger_severity(4)  # a run that fails here is handled, not logged in red
    with tempfile.TemporaryDirectory(prefix="edgepack-sens-") as tmp:
        saved = {}
        try:
            for tag, model in (("float", src), ("qdq", quantized)):
                augmented = Path(tmp) / f"{tag}.onnx"
                modify_model_output_intermediate_tensors(str(model), str(augmented))
                saved[tag] = collect_activations(str(augmented), probe)  # type: ignore[arg-type]
            errors = compute_activation_error(create_activation_matching(saved["qdq"], saved["float"]))
        except Exception:  # a graph whose every tensor ORT cannot expose as an output: weights alone rank
            errors = {}
    graph = onnx.load(str(src), load_external_data=False).graph
    producer = {out: node.name for node in graph.node for out in node.output if node.name}
    consumers: dict[str, list[str]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node.name)
    ranked: dict[str, float] = {}

    def note(node: str | None, sqnr: float) -> None:
        if node and np.isfinite(sqnr):
            ranked[node] = max(ranked.get(node, 0.0), 1.0 / max(sqnr, 1e-3))

    for tensor, error in errors.items():  # an activation's own rounding noise
        note(producer.get(tensor), float(error.get("qdq_err", float("inf"))))
    try:  # a weight's rounding noise (an outlier weight stretches its scale), charged to its layer
        weights = compute_weight_error(create_weight_matching(str(src), str(quantized)))
    except Exception:  # the weight matcher is a debugging aid; activations alone still rank
        weights = {}
    for name, sqnr in weights.items():
        for node in consumers.get(name, []):
            note(node, float(sqnr))
    return sorted(ranked.items(), key=lambda item: item[1], reverse=True)


class OnnxQuantizer(Quantizer):
    """ONNX Runtime's quantizer: static int8 (per-tensor first, per-channel as a second try), dynamic, fp16."""

    format = ArtifactFormat.ONNX

    def __init__(self, mode: str, base: QuantizeBase, calib: Dataset, work: Path, io: str,
                 profile: DeviceProfile, calibrate_method: str) -> None:
        super().__init__(mode, base, calib, work, io, profile, calibrate_method)
        self.per_channel_possible = mode is Precision.INT8
        self.prepared = preprocess(base.path, work / "prepared.onnx") if mode is not Precision.FP16 else base.path
        if mode is Precision.INT8:
            self._opset_for_per_channel(work)

    @staticmethod
    def make_base(handle: ModelHandle, work: Path, profile: DeviceProfile, calib: Dataset, clock: StageClock,
                  source: Engine) -> QuantizeBase:
        from edgepack.convert.convert import convert_model, require_static_inputs
        from edgepack.convert.routes import onnx_of
        require_static_inputs(handle)
        if handle.format is ModelFormat.ONNX:
            path, _, _ = onnx_of(handle, work)
            names = [s.name for s in handle.inputs]
            inputs, outputs = identity_bindings(handle, source, calib.batch(names, 0))
            return QuantizeBase(path, inputs, outputs)
        result = convert_model(handle, "onnx", work / "base.onnx", profile, calib, clock=clock,
                               source=source)
        return QuantizeBase(result.artifact.path, result.artifact.inputs, result.artifact.outputs)

    def _opset_for_per_channel(self, work: Path) -> None:
        """Per-channel int8 needs opset 13: an older model is upgraded first, or stays per-tensor."""
        opset = default_opset(self.prepared)
        if opset >= PER_CHANNEL_OPSET:
            return
        upgraded = upgrade_opset(self.prepared, work / "prepared_opset13.onnx")
        if upgraded is not None:
            self.prepared = upgraded
            self.notes.append(f"opset {opset} upgraded to {PER_CHANNEL_OPSET} before quantizing (per-channel "
                              "scales need it)")
        else:
            self.per_channel_possible = False
            self.notes.append(f"opset {opset} could not be upgraded to {PER_CHANNEL_OPSET}: weights stay "
                              "per-tensor")

    def fp32_size(self) -> int:
        return self.base.path.stat().st_size

    def build(self, float_layers: list[str]) -> Path:
        out = self.next_path()
        if self.mode is Precision.DYNAMIC:
            return quantize_onnx_dynamic(self.prepared, out)
        if self.mode is Precision.FP16:
            return quantize_onnx_fp16(self.base.path, out)
        return quantize_onnx_static(self.prepared, out, self.feeds,
                                    activation_type=activation_type_for(self.profile.architecture),
                                    calibrate_method=self.calibrate_method, nodes_to_exclude=float_layers,
                                    per_channel=self.per_channel, cache=self.work / "calibration.cache")

    def ranking(self, held_out: Dataset, quantized: Path) -> list[FloatLayer]:
        """The output head first, then layers by sensitivity."""
        head = output_head(self.prepared)
        first = [FloatLayer(f"output head ({len(head)} nodes)", None, 0, head)] if head else []
        names = [b.source_name for b in self.base.inputs]
        probe = [{b.name: b.from_source(x) for b, x in zip(self.base.inputs, held_out.batch(names, i), strict=True)}
                 for i in range(min(len(held_out), SENSITIVITY_SAMPLES[1]))]
        probe = probe[:sensitivity_samples(probe)]
        ranked = layer_sensitivity(self.prepared, quantized, probe)
        return first + [FloatLayer(n, s, 0) for n, s in ranked if n not in head]

    def activation_type(self) -> str | None:
        return activation_type_for(self.profile.architecture) if self.mode is Precision.INT8 else None
