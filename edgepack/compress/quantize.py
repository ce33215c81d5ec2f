"""``edgepack quantize``: calibrate on the user's data, prove the result with the real runtime on
held-out samples, and keep the most sensitive layers in float when the loss passes the bound."""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.artifact import Artifact, Binding, install, staging_dir
from edgepack.convert.validate import ValidationReport, bind, compare
from edgepack.data import DataError, Dataset
from edgepack.engines import Engine, engine_for, engine_for_file
from edgepack.errors import UsageError
from edgepack.model import ModelFormat, ModelHandle
from edgepack.profiles import DeviceProfile

MODES = ("int8", "fp16", "dynamic")
FORMATS = ("tflite", "onnx")
MIN_CALIBRATION_SAMPLES = 8
MAX_CALIBRATION_SAMPLES = 200


@dataclass
class FloatLayer:
    name: str
    sensitivity: float
    size_cost_bytes: int  # how much larger the file is for keeping this layer in float


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

    @property
    def within_bound(self) -> bool:
        return self.accuracy_drop_pts is None or self.accuracy_drop_pts <= self.max_accuracy_drop_pts

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact.to_dict(), "mode": self.mode, "size_bytes": self.artifact.size_bytes,
                "fp32_size_bytes": self.fp32_size_bytes,
                "size_ratio": self.artifact.size_bytes / self.fp32_size_bytes if self.fp32_size_bytes else None,
                "fidelity": self.fidelity.to_dict(), "accuracy_drop_pts": self.accuracy_drop_pts,
                "max_accuracy_drop_pts": self.max_accuracy_drop_pts, "within_bound": self.within_bound,
                "float_layers": [f.__dict__ for f in self.float_layers],
                "all_quantized_size_bytes": self.all_quantized_size_bytes,
                "calibration_samples": self.calibration_samples, "notes": self.notes}


@dataclass
class _Base:
    """The fp32 model the quantizer starts from, in the target's family, and how its I/O maps."""

    path: Path  # ONNX file or SavedModel directory
    inputs: list[Binding]
    outputs: list[Binding]


def default_format(profile: DeviceProfile) -> str:
    return "onnx" if profile.runtimes[0] == "onnxruntime" else "tflite"


def io_dtype_for(profile: DeviceProfile, requested: str | None) -> str:
    if requested:
        if requested not in profile.precisions.io_dtypes:
            raise UsageError(f"{profile.name} takes {'/'.join(profile.precisions.io_dtypes)} input/output, "
                             f"not {requested}", "drop --io-dtype or pick one the device takes")
        return requested
    return "float32" if "float32" in profile.precisions.io_dtypes else profile.precisions.io_dtypes[0]


def quantize_model(handle: ModelHandle, calib: Dataset, profile: DeviceProfile, output: Path, *,
                   fmt: str | None = None, mode: str = "int8", eval_data: Dataset | None = None,
                   max_accuracy_drop: float = 1.0, calibrate_method: str = "minmax",
                   io_dtype: str | None = None) -> QuantizeResult:
    fmt = fmt or default_format(profile)
    _check_request(profile, fmt, mode)
    if len(calib) < MIN_CALIBRATION_SAMPLES:
        raise DataError(f"calibration data has {len(calib)} samples; at least {MIN_CALIBRATION_SAMPLES} are needed",
                        "give more samples (100-500 is typical)")
    if eval_data is None:  # hold out the last fifth: fidelity is never measured on calibration samples
        cut = max(MIN_CALIBRATION_SAMPLES, int(len(calib) * 0.8))
        if cut >= len(calib):
            raise DataError(f"calibration data has {len(calib)} samples: too few to hold some out for checking",
                            "give more samples, or --eval with held-out data")
        calib, eval_data = calib.split(cut)
    calib, _ = calib.split(MAX_CALIBRATION_SAMPLES)
    io = io_dtype_for(profile, io_dtype) if (fmt == "tflite" and mode == "int8") else "float32"
    source = engine_for(handle)
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgepack-quantize-") as tmp:
        work = Path(tmp)
        make_base = _tflite_base if fmt == "tflite" else _onnx_base
        base = make_base(handle, work, profile, calib)
        quantizer = _Quantizer(fmt, mode, base, calib, work, io, profile, calibrate_method)
        fp32_size = quantizer.fp32_size()
        candidate = quantizer.build([])
        report = _fidelity(source, candidate, base, eval_data, profile, f"{fmt} {mode}")
        drop = accuracy_drop(report)
        if fmt == "onnx" and mode == "int8" and drop is not None and drop > max_accuracy_drop:
            # per-tensor weights first (the smaller file); per-channel scales when that loses too much
            quantizer.per_channel = True
            candidate = quantizer.build([])
            report = _fidelity(source, candidate, base, eval_data, profile, f"{fmt} {mode} per-channel")
            drop = accuracy_drop(report)
        float_layers: list[FloatLayer] = []
        all_quantized_size = candidate.stat().st_size
        if drop is not None and drop > max_accuracy_drop and mode == "int8":
            if io != "float32" or profile.precisions.required:
                notes.append(f"{profile.name} runs only fully int8 models: no layer can stay in float")
            else:
                candidate, report, drop, float_layers = _fallback(
                    quantizer, source, base, eval_data, profile, candidate, report, max_accuracy_drop)
        if drop is not None and drop > max_accuracy_drop:
            notes.append(f"accuracy drop {drop:.2f} points is over the bound of {max_accuracy_drop:g}")
        if drop is None:
            notes.append("no classifier-like output: fidelity is shown, accuracy-aware fallback does not apply")
        granularity = "per-channel" if quantizer.per_channel else "per-tensor"
        artifact = _install(handle, candidate, fmt, mode, base, report, float_layers, output,
                            f"{calibrate_method} calibration, {granularity} weights", io)
    return QuantizeResult(artifact, mode, fp32_size, report, drop, max_accuracy_drop, float_layers=float_layers,
                          calibration_samples=len(calib), all_quantized_size_bytes=all_quantized_size, notes=notes)


def accuracy_drop(report: ValidationReport) -> float | None:
    """Percentage points: of accuracy when labels were given, else of top-1 agreement with fp32."""
    if report.accuracy is not None and report.source_accuracy is not None:
        return 100.0 * (report.source_accuracy - report.accuracy)
    if report.top1_agreement is not None:
        return 100.0 * (1.0 - report.top1_agreement)
    return None


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
        names = [b.source_name for b in base.inputs]
        self.feeds = [{b.name: b.from_source(x) for b, x in zip(base.inputs, calib.batch(names, i), strict=True)}
                      for i in range(len(calib))]
        if fmt == "onnx":
            from edgepack.compress.quantize_onnx import preprocess

            self.prepared = preprocess(base.path, work / "prepared.onnx") if mode != "fp16" else base.path
        else:
            from edgepack.compress.quantize_tflite import signature_inputs

            signature = signature_inputs(base.path)
            self.signature_feeds = [self._by_signature(feed, signature) for feed in self.feeds]

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

    def ranking(self, held_out: Dataset) -> list[tuple[str, float]]:
        if self.fmt == "tflite":
            from edgepack.compress.quantize_tflite import layer_sensitivity

            return layer_sensitivity(self.base.path, self._feed)
        from edgepack.compress import quantize_onnx as q

        names = [b.source_name for b in self.base.inputs]
        probe = [{b.name: b.from_source(x) for b, x in zip(self.base.inputs, held_out.batch(names, i), strict=True)}
                 for i in range(min(len(held_out), 64))]
        return q.layer_sensitivity(self.prepared, self.feeds, probe, q.activation_type_for(self.profile.architecture),
                                   self.calibrate_method)


def _fidelity(source: Engine, candidate: Path, base: _Base, held_out: Dataset, profile: DeviceProfile,
              route: str) -> ValidationReport:
    engine = engine_for_file(candidate, "onnx" if candidate.suffix == ".onnx" else "tflite")
    return compare(route, source, engine, base.inputs, base.outputs, held_out, "held-out", profile.tolerances,
                   max_samples=len(held_out))


def _fallback(quantizer: _Quantizer, source: Engine, base: _Base, held_out: Dataset, profile: DeviceProfile,
              candidate: Path, report: ValidationReport, bound: float
              ) -> tuple[Path, ValidationReport, float, list[FloatLayer]]:
    """Keep the most sensitive layers in float, one more at a time, until the drop is within the bound."""
    drop = accuracy_drop(report) or 0.0
    kept: list[FloatLayer] = []
    previous_size = candidate.stat().st_size
    for name, sensitivity in quantizer.ranking(held_out):
        candidate = quantizer.build([k.name for k in kept] + [name])
        report = _fidelity(source, candidate, base, held_out, profile, f"{quantizer.fmt} int8 + float layers")
        drop = accuracy_drop(report) or 0.0
        kept.append(FloatLayer(name, sensitivity, candidate.stat().st_size - previous_size))
        previous_size = candidate.stat().st_size
        if drop <= bound:
            break
    return candidate, report, drop, kept


def _install(handle: ModelHandle, candidate: Path, fmt: str, mode: str, base: _Base, report: ValidationReport,
             float_layers: list[FloatLayer], output: Path, method: str, io: str) -> Artifact:
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
        artifact = Artifact(output, fmt, route, handle.sha256, inputs, outputs, precision=mode,
                            validation=report.to_dict(),
                            notes=[f"kept in float: {', '.join(f.name for f in float_layers)}"] if float_layers else [])
        return install(staged, artifact, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _tflite_io(path: Path, inputs: list[Binding], outputs: list[Binding]) -> tuple[list[Binding], list[Binding]]:
    """The quantized file's own I/O dtypes, scales and zero points."""
    from edgepack.model import tflite_interpreter

    interpreter = tflite_interpreter(path, delegates=False)

    def with_details(bindings: list[Binding], details: list[dict[str, Any]]) -> list[Binding]:
        result = []
        for b, d in zip(bindings, details, strict=True):
            scale, zero_point = d.get("quantization", (0.0, 0))
            dtype = np.dtype(d["dtype"]).name
            result.append(replace(b, dtype=dtype, scale=float(scale) if scale else None,
                                  zero_point=int(zero_point) if scale else None))
        return result

    return (with_details(inputs, interpreter.get_input_details()),
            with_details(outputs, interpreter.get_output_details()))
