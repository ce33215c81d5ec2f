"""``edgepack quantize``: calibrate on the user's data, prove the result with the real runtime on
held-out samples against a gate that fits each output (:mod:`edgepack.fidelity`), and keep the most
sensitive layers in float until it holds. A result that does not hold is refused (``--allow-drift``
writes it anyway, and says so in its notes and metadata)."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.analysis.onnx_graph import INT8_OPS
from edgepack.artifact import Artifact, Binding, install, staging_dir
from edgepack.convert.validate import Gate, Metric, ValidationReport, bind, compare
from edgepack.data import DataError, Dataset
from edgepack.engines import Engine, engine_for, engine_for_file
from edgepack.errors import EdgepackError, UsageError
from edgepack.formats import FORMATS, ArtifactFormat
from edgepack.model import ModelFormat, ModelHandle
from edgepack.profiles import DeviceProfile

MODES = ("int8", "fp16", "dynamic")
MIN_CALIBRATION_SAMPLES = 8
MAX_CALIBRATION_SAMPLES = 200
MAX_FLOAT_LAYERS = 12  # the fallback gives up after keeping this many layers in float


class FidelityError(EdgepackError):
    """A compressed artifact does not keep what its source does on held-out data: refused."""


@dataclass(frozen=True)
class Check:
    """How a quantized candidate is judged: the gate, the user's output kinds and task metric."""

    gate: Gate = field(default_factory=Gate)
    kinds: dict[str, str] = field(default_factory=dict)
    metric: tuple[str, Metric] | None = None
    allow_drift: bool = False


@dataclass
class FloatLayer:
    name: str  # a layer, or "output head (N nodes)"
    sensitivity: float | None  # None: kept first without ranking (the output head)
    size_cost_bytes: int  # how much larger the file is for keeping this layer in float
    nodes: list[str] = field(default_factory=list)  # what was excluded from quantization (default: [name])


@dataclass
class QuantizeResult:
    artifact: Artifact
    mode: str
    fp32_size_bytes: int
    fidelity: ValidationReport
    accuracy_drop_pts: float | None
    max_accuracy_drop_pts: float
    float_layers: list[FloatLayer] = field(default_factory=list)
    calibration_samples: int = 0
    all_quantized_size_bytes: int = 0  # before any layer was kept in float
    notes: list[str] = field(default_factory=list)
    gate_failure: str | None = None  # set only when --allow-drift wrote it anyway
    #: int8: the activations' type ("int8", or "uint8" for ONNX on x86: ORT's fast U8S8 path); weights are int8
    activation_type: str | None = None

    @property
    def within_bound(self) -> bool:
        return self.gate_failure is None

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact.to_dict(), "mode": self.mode, "size_bytes": self.artifact.size_bytes,
                "fp32_size_bytes": self.fp32_size_bytes,
                "size_ratio": self.artifact.size_bytes / self.fp32_size_bytes if self.fp32_size_bytes else None,
                "fidelity": self.fidelity.to_dict(), "accuracy_drop_pts": self.accuracy_drop_pts,
                "max_accuracy_drop_pts": self.max_accuracy_drop_pts, "within_bound": self.within_bound,
                "float_layers": [f.__dict__ for f in self.float_layers],
                "all_quantized_size_bytes": self.all_quantized_size_bytes,
                "calibration_samples": self.calibration_samples, "notes": self.notes,
                "gate_failure": self.gate_failure, "activation_type": self.activation_type}


@dataclass
class _Base:
    """The fp32 model the quantizer starts from, in the target's family, and how its I/O maps."""

    path: Path  # ONNX file or SavedModel directory
    inputs: list[Binding]
    outputs: list[Binding]


def default_format(profile: DeviceProfile) -> str:
    return ArtifactFormat.for_runtime(profile.runtimes[0]).value


def io_dtype_for(profile: DeviceProfile, requested: str | None) -> str:
    if requested:
        if requested not in profile.precisions.io_dtypes:
            raise UsageError(f"{profile.name} takes {'/'.join(profile.precisions.io_dtypes)} input/output, "
                             f"not {requested}", "drop --io-dtype or pick one the device takes")
        return requested
    return "float32" if "float32" in profile.precisions.io_dtypes else profile.precisions.io_dtypes[0]


#: ONNX ops of a graph that is already quantized (ONNX Runtime's dynamic or QDQ/QOperator int8)
QUANTIZED_OPS = INT8_OPS | {"DynamicQuantizeLinear", "DynamicQuantizeLSTM", "QuantizeLinear", "DequantizeLinear"}


def _refuse_quantized(handle: ModelHandle) -> None:
    """Quantizing a quantized graph again: ORT's quantizer fails on it in ways that name nothing."""
    if handle.format is not ModelFormat.ONNX or handle.path is None:
        return
    import onnx

    ops = sorted({n.op_type for n in onnx.load(str(handle.path), load_external_data=False).graph.node}
                 & QUANTIZED_OPS)
    if ops:
        raise UsageError(f"{handle.name} is already quantized ({', '.join(ops)}): quantizing it again is not "
                         "supported", "quantize the float model it came from, or ship it as it is "
                         "(build --precisions fp32 measures it unchanged)")


def quantize_model(handle: ModelHandle, calib: Dataset, profile: DeviceProfile, output: Path, *,
                   fmt: str | None = None, mode: str = "int8", eval_data: Dataset | None = None,
                   max_accuracy_drop: float = 1.0, calibrate_method: str = "minmax",
                   io_dtype: str | None = None, check: Check | None = None) -> QuantizeResult:
    """Quantize, check against the gate on held-out data, keep layers in float until it holds, write.
    Raises :class:`FidelityError` (nothing written) when it cannot hold and ``check.allow_drift`` is off."""
    fmt = fmt or default_format(profile)
    check = check or Check()
    check = replace(check, gate=replace(check.gate, max_drop_pts=max_accuracy_drop))
    _check_request(profile, fmt, mode)
    _refuse_quantized(handle)
    if len(calib) < MIN_CALIBRATION_SAMPLES:
        raise DataError(f"calibration data has {len(calib)} samples; at least {MIN_CALIBRATION_SAMPLES} are needed",
                        "give more samples (100-500 is typical)")
    if eval_data is None:  # fidelity is never measured on calibration samples
        calib, eval_data = calib.holdout(MIN_CALIBRATION_SAMPLES)
    calib, _ = calib.split(MAX_CALIBRATION_SAMPLES)
    io = io_dtype_for(profile, io_dtype) if (fmt == "tflite" and mode == "int8") else "float32"
    source = engine_for(handle)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgepack-quantize-") as tmp:
        work = Path(tmp)
        make_base = _tflite_base if fmt == "tflite" else _onnx_base
        base = make_base(handle, work, profile, calib)
        quantizer = _Quantizer(fmt, mode, base, calib, work, io, profile, calibrate_method)
        judge = _Judge(source, base, eval_data, profile, check)
        fp32_size = quantizer.fp32_size()
        candidate = quantizer.build([])
        report = judge(candidate, f"{fmt} {mode}")
        notes += quantizer.notes
        if fmt == "onnx" and mode == "int8" and quantizer.per_channel_possible and report.gate_failure(check.gate):
            # per-tensor weights first (the smaller file); per-channel scales when that loses too much
            quantizer.per_channel = True
            candidate = quantizer.build([])
            report = judge(candidate, f"{fmt} {mode} per-channel")
        float_layers: list[FloatLayer] = []
        all_quantized_size = candidate.stat().st_size
        if report.gate_failure(check.gate) and mode == "int8":
            if io != "float32" or profile.precisions.required:
                notes.append(f"{profile.name} runs only fully int8 models: no layer can stay in float")
            else:
                candidate, report, float_layers = _fallback(quantizer, judge, eval_data, candidate, report)
        failure = report.gate_failure(check.gate)
        if failure:
            kept = f" with {len(float_layers)} layer(s) kept in float" if float_layers else ""
            if not check.allow_drift:
                raise FidelityError(f"{fmt} {mode} of {handle.name} refused{kept}: {failure}",
                                    "raise --max-accuracy-drop / --tolerance if that is acceptable, try "
                                    "another --format or --mode, or --allow-drift to write it anyway")
            notes.append(f"WRITTEN DESPITE FAILING ITS CHECK (--allow-drift){kept}: {failure}")
        granularity = "per-channel" if quantizer.per_channel else "per-tensor"
        artifact = _install(handle, candidate, fmt, mode, base, report, float_layers, output,
                            f"{calibrate_method} calibration, {granularity} weights", io, failure)
    return QuantizeResult(artifact, mode, fp32_size, report, report.drop_pts, max_accuracy_drop,
                          float_layers=float_layers, calibration_samples=len(calib),
                          all_quantized_size_bytes=all_quantized_size, notes=notes, gate_failure=failure,
                          activation_type=_activation_type(profile, fmt, mode))


def _activation_type(profile: DeviceProfile, fmt: str, mode: str) -> str | None:
    from edgepack.compress.quantize_onnx import activation_type_for

    if mode != "int8":
        return None
    return activation_type_for(profile.architecture) if fmt == "onnx" else "int8"


def _check_request(profile: DeviceProfile, fmt: str, mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"unknown --mode '{mode}'", f"use one of {', '.join(MODES)}")
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format '{fmt}'", f"use one of {', '.join(FORMATS)}")
    if fmt == "onnx" and "onnxruntime" not in profile.runtimes:
        raise UsageError(f"{profile.name} runs no ONNX runtime ({', '.join(profile.runtimes)})", "use --format tflite")
    if fmt == "tflite" and not any(r.startswith("tflite") for r in profile.runtimes):
        raise UsageError(f"{profile.name} runs no TFLite runtime", "use --format onnx")
    if profile.precisions.required and mode not in profile.precisions.required:
        raise UsageError(f"{profile.name} requires {'/'.join(profile.precisions.required)}, not {mode}",
                         "use --mode int8")


# --- the fp32 starting point ------------------------------------------------------------------------

def identity_bindings(handle: ModelHandle, source: Engine, sample: list[np.ndarray]
                       ) -> tuple[list[Binding], list[Binding]]:
    """Bindings for a base that is the source itself (same layout in and out)."""
    from edgepack.convert.convert import source_output_specs

    out_specs = source_output_specs(handle, source.run(sample))
    inputs = bind("identity", handle.inputs, [(tuple(int(d) for d in s.shape), s.dtype, s.name)  # type: ignore[arg-type]
                                              for s in handle.inputs], False)
    outputs = bind("identity", out_specs, [(tuple(int(d) for d in s.shape), s.dtype, s.name)  # type: ignore[arg-type]
                                           for s in out_specs], False)
    return inputs, outputs


def _onnx_base(handle: ModelHandle, work: Path, profile: DeviceProfile, calib: Dataset) -> _Base:
    from edgepack.convert.convert import convert_model, require_static_inputs
    from edgepack.convert.routes import onnx_of

    require_static_inputs(handle)
    if handle.format is ModelFormat.ONNX:
        path, _, _ = onnx_of(handle, work)
        names = [s.name for s in handle.inputs]
        inputs, outputs = identity_bindings(handle, engine_for(handle), calib.batch(names, 0))
        return _Base(path, inputs, outputs)
    result = convert_model(handle, "onnx", work / "base.onnx", profile, calib)
    return _Base(result.artifact.path, result.artifact.inputs, result.artifact.outputs)


def _tflite_base(handle: ModelHandle, work: Path, profile: DeviceProfile, calib: Dataset) -> _Base:
    from edgepack.convert.convert import convert_model, require_static_inputs
    from edgepack.convert.routes import keras_saved_model

    require_static_inputs(handle)
    names = [s.name for s in handle.inputs]
    if handle.format is ModelFormat.SAVEDMODEL:
        assert handle.path is not None
        inputs, outputs = identity_bindings(handle, engine_for(handle), calib.batch(names, 0))
        return _Base(handle.path, inputs, outputs)
    if handle.format is ModelFormat.KERAS:
        assert handle.path is not None
        saved = keras_saved_model(handle.path, work / "keras_saved_model")
        inputs, outputs = identity_bindings(handle, engine_for(handle), calib.batch(names, 0))
        return _Base(saved, inputs, outputs)
    result = convert_model(handle, "savedmodel", work / "base_saved_model", profile, calib)
    return _Base(result.artifact.path, result.artifact.inputs, result.artifact.outputs)


# --- building and measuring candidates --------------------------------------------------------------

class _Quantizer:
    def __init__(self, fmt: str, mode: str, base: _Base, calib: Dataset, work: Path, io: str,
                 profile: DeviceProfile, calibrate_method: str) -> None:
        self.fmt, self.mode, self.base, self.calib, self.work, self.io = fmt, mode, base, calib, work, io
        self.profile, self.calibrate_method = profile, calibrate_method
        self.count = 0
        self.per_channel = fmt == "tflite"  # the TFLite converter quantizes weights per channel
        self.per_channel_possible = True
        self.notes: list[str] = []
        names = [b.source_name for b in base.inputs]
        self.feeds = [{b.name: b.from_source(x) for b, x in zip(base.inputs, calib.batch(names, i), strict=True)}
                      for i in range(len(calib))]
        if fmt == "onnx":
            from edgepack.compress.quantize_onnx import preprocess

            self.prepared = preprocess(base.path, work / "prepared.onnx") if mode != "fp16" else base.path
            if mode == "int8":
                self._opset_for_per_channel(work)
        else:
            from edgepack.compress.quantize_tflite import signature_inputs

            signature = signature_inputs(base.path)
            self.signature_feeds = [self._by_signature(feed, signature) for feed in self.feeds]

    def _opset_for_per_channel(self, work: Path) -> None:
        """Per-channel int8 needs opset 13: an older model is upgraded first, or stays per-tensor."""
        from edgepack.compress import quantize_onnx as q

        opset = q.default_opset(self.prepared)
        if opset >= q.PER_CHANNEL_OPSET:
            return
        upgraded = q.upgrade_opset(self.prepared, work / "prepared_opset13.onnx")
        if upgraded is not None:
            self.prepared = upgraded
            self.notes.append(f"opset {opset} upgraded to {q.PER_CHANNEL_OPSET} before quantizing (per-channel "
                              "scales need it)")
        else:
            self.per_channel_possible = False
            self.notes.append(f"opset {opset} could not be upgraded to {q.PER_CHANNEL_OPSET}: weights stay "
                              "per-tensor")

    @staticmethod
    def _by_signature(feed: dict[str, np.ndarray], signature: list[str]) -> dict[str, np.ndarray]:
        if set(feed) == set(signature):
            return feed
        return dict(zip(signature, feed.values(), strict=True))

    def _feed(self) -> Any:
        yield from self.signature_feeds

    def fp32_size(self) -> int:
        if self.fmt == "onnx":
            return self.base.path.stat().st_size
        from edgepack.compress.quantize_tflite import float_tflite

        return float_tflite(self.base.path, self.work / "fp32.tflite").stat().st_size

    def build(self, float_layers: list[str]) -> Path:
        self.count += 1
        out = self.work / f"candidate{self.count}.{self.fmt}"
        if self.fmt == "tflite":
            from edgepack.compress.quantize_tflite import quantize_tflite

            return quantize_tflite(self.base.path, out, self.mode, self._feed, self.io, float_layers)
        from edgepack.compress import quantize_onnx as q

        if self.mode == "dynamic":
            return q.quantize_onnx_dynamic(self.prepared, out)
        if self.mode == "fp16":
            return q.quantize_onnx_fp16(self.base.path, out)
        return q.quantize_onnx_static(self.prepared, out, self.feeds,
                                      activation_type=q.activation_type_for(self.profile.architecture),
                                      calibrate_method=self.calibrate_method, nodes_to_exclude=float_layers,
                                      per_channel=self.per_channel, cache=self.work / "calibration.cache")

    def ranking(self, held_out: Dataset, quantized: Path) -> list[FloatLayer]:
        """What to keep in float, in order: for ONNX the output head first, then layers by sensitivity."""
        if self.fmt == "tflite":
            from edgepack.compress.quantize_tflite import layer_sensitivity

            return [FloatLayer(n, s, 0) for n, s in layer_sensitivity(self.base.path, self._feed)]
        from edgepack.compress import quantize_onnx as q

        head = q.output_head(self.prepared)
        first = [FloatLayer(f"output head ({len(head)} nodes)", None, 0, head)] if head else []
        names = [b.source_name for b in self.base.inputs]
        probe = [{b.name: b.from_source(x) for b, x in zip(self.base.inputs, held_out.batch(names, i), strict=True)}
                 for i in range(min(len(held_out), 16))]
        ranked = q.layer_sensitivity(self.prepared, quantized, probe)
        return first + [FloatLayer(n, s, 0) for n, s in ranked if n not in head]


class _Judge:
    """Measures a candidate file against the source on the held-out samples."""

    def __init__(self, source: Engine, base: _Base, held_out: Dataset, profile: DeviceProfile, check: Check) -> None:
        self.source, self.base, self.held_out, self.profile, self.check = source, base, held_out, profile, check

    def __call__(self, candidate: Path, route: str) -> ValidationReport:
        engine = engine_for_file(candidate, str(ArtifactFormat.of_path(candidate)), self.profile.architecture)
        return compare(route, self.source, engine, self.base.inputs, self.base.outputs, self.held_out, "held-out",
                       self.profile.tolerances, max_samples=len(self.held_out), kinds=self.check.kinds,
                       metric=self.check.metric)


def _fallback(quantizer: _Quantizer, judge: _Judge, held_out: Dataset, candidate: Path, report: ValidationReport
              ) -> tuple[Path, ValidationReport, list[FloatLayer]]:
    """Keep the most sensitive layers in float, one more at a time, until the gate holds (at most
    MAX_FLOAT_LAYERS; then the last candidate is returned and the caller refuses it)."""
    kept: list[FloatLayer] = []
    previous_size = candidate.stat().st_size
    for layer in quantizer.ranking(held_out, candidate)[:MAX_FLOAT_LAYERS]:
        kept.append(layer)
        candidate = quantizer.build([n for k in kept for n in (k.nodes or [k.name])])
        report = judge(candidate, f"{quantizer.fmt} int8 + float layers")
        layer.size_cost_bytes = candidate.stat().st_size - previous_size
        previous_size = candidate.stat().st_size
        if report.gate_failure(judge.check.gate) is None:
            break
    return candidate, report, kept


def _install(handle: ModelHandle, candidate: Path, fmt: str, mode: str, base: _Base, report: ValidationReport,
             float_layers: list[FloatLayer], output: Path, method: str, io: str,
             failure: str | None = None) -> Artifact:
    output = output.resolve()
    if handle.path is not None and output == handle.path.resolve():
        raise UsageError(f"-o {output} is the source model", "write the result somewhere else")
    inputs, outputs = base.inputs, base.outputs
    if fmt == "tflite":
        inputs, outputs = _tflite_io(candidate, inputs, outputs)
    staging = staging_dir(output)
    try:
        staged = staging / output.name
        shutil.copyfile(candidate, staged)
        route = f"{fmt} {mode}" + (f" ({method})" if mode == "int8" else "")
        notes = [f"kept in float: {', '.join(f.name for f in float_layers)}"] if float_layers else []
        if failure:
            notes.append(f"written despite failing its check (--allow-drift): {failure}")
        artifact = Artifact(output, fmt, route, handle.sha256, inputs, outputs, precision=mode,
                            validation=report.to_dict(), notes=notes)
        return install(staged, artifact, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _tflite_io(path: Path, inputs: list[Binding], outputs: list[Binding]) -> tuple[list[Binding], list[Binding]]:
    """The quantized file's own I/O names, dtypes, scales and zero points; outputs found by their
    signature key (the converter lists them in its own order), else by position."""
    from edgepack.engines import signature_output_keys
    from edgepack.model import tflite_interpreter

    interpreter = tflite_interpreter(path, delegates=False)

    def with_details(bindings: list[Binding], details: list[dict[str, Any]]) -> list[Binding]:
        result = []
        for b, d in zip(bindings, details, strict=True):
            scale, zero_point = d.get("quantization", (0.0, 0))
            dtype = np.dtype(d["dtype"]).name
            result.append(replace(b, name=d["name"], dtype=dtype, scale=float(scale) if scale else None,
                                  zero_point=int(zero_point) if scale else None))
        return result

    details = interpreter.get_output_details()
    keys = signature_output_keys(interpreter, details)
    if keys and all(b.name in keys for b in outputs):
        details = [details[keys.index(b.name)] for b in outputs]
    return with_details(inputs, interpreter.get_input_details()), with_details(outputs, details)
