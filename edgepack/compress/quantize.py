"""``edgepack quantize``: calibrate on the user's data, prove the result with the real runtime on
held-out samples against a gate that fits each output (:mod:`edgepack.fidelity`), and keep the most
sensitive layers in float until it holds. A result that does not hold is refused (``--allow-drift``
writes it anyway, and says so in its notes and metadata)."""

from __future__ import annotations

import itertools
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgepack.analysis.onnx_graph import INT8_OPS
from edgepack.artifact import Artifact, install, staging_dir
from edgepack.compress.plan import Precision
from edgepack.compress.quantize_onnx import OnnxQuantizer
from edgepack.compress.quantize_tflite import TfliteQuantizer
from edgepack.compress.quantizer import FloatLayer, QuantizeBase, Quantizer
from edgepack.convert.validate import Gate, Metric, ValidationReport, compare
from edgepack.data import DataError, Dataset
from edgepack.engines import Engine, engine_for, engine_for_file
from edgepack.errors import EdgepackError, UsageError
from edgepack.formats import FORMATS, ArtifactFormat
from edgepack.model import ModelFormat, ModelHandle
from edgepack.profiles import DeviceProfile
from edgepack.stages import StageClock

#: each format's quantizer (its own module does the format's work)
QUANTIZERS: dict[ArtifactFormat, type[Quantizer]] = {ArtifactFormat.ONNX: OnnxQuantizer,
                                                      ArtifactFormat.TFLITE: TfliteQuantizer}

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
class QuantizeResult:
    artifact: Artifact
    mode: Precision
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
    #: ``fidelity`` was measured with the written file's own input/output bindings: it is that file's check
    #: against ``handle`` on every held-out sample (a caller need not run the same check again)
    checked_as_written: bool = False

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
                   io_dtype: str | None = None, check: Check | None = None,
                   clock: StageClock | None = None, source: Engine | None = None) -> QuantizeResult:
    """Quantize, check against the gate on held-out data, keep layers in float until it holds, write.
    Raises :class:`FidelityError` (nothing written) when it cannot hold and ``check.allow_drift`` is off.
    ``clock``: the base's conversion ("convert"), each calibration and quantization ("quantize"), each check
    ("validate") and the layer ranking ("sensitivity") are timed there. ``source``: ``handle``'s engine when
    the caller has one (its outputs remembered across checks), else one is made."""
    fmt = fmt or default_format(profile)
    check = check or Check()
    check = replace(check, gate=replace(check.gate, max_drop_pts=max_accuracy_drop))
    _check_request(profile, fmt, mode)
    mode = Precision(mode)
    fmt = ArtifactFormat(fmt)
    _refuse_quantized(handle)
    if len(calib) < MIN_CALIBRATION_SAMPLES:
        raise DataError(f"calibration data has {len(calib)} samples; at least {MIN_CALIBRATION_SAMPLES} are needed",
                        "give more samples (100-500 is typical)")
    if eval_data is None:  # fidelity is never measured on calibration samples
        calib, eval_data = calib.holdout(MIN_CALIBRATION_SAMPLES)
    calib, _ = calib.split(MAX_CALIBRATION_SAMPLES)
    io = io_dtype_for(profile, io_dtype) if (fmt is ArtifactFormat.TFLITE and mode is Precision.INT8) else "float32"
    source = source or engine_for(handle)
    clock = clock or StageClock()
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgepack-quantize-") as tmp:
        work = Path(tmp)
        kind = QUANTIZERS[fmt]
        base = kind.make_base(handle, work, profile, calib, clock, source)
        with clock.stage("quantize", f"{fmt} {mode} (preparing the base)"):
            quantizer = kind(mode, base, calib, work, io, profile, calibrate_method)
        judge = _Judge(source, base, eval_data, profile, check, clock)
        with clock.stage("convert", f"{fmt} fp32 (size baseline)"):
            fp32_size = quantizer.fp32_size()
        with clock.stage("quantize", f"{fmt} {mode}"):
            candidate = quantizer.build([])
        report = judge(candidate, f"{fmt} {mode}")
        notes += quantizer.notes
        if quantizer.per_channel_possible and report.gate_failure(check.gate):
            # per-tensor weights first (the smaller file); per-channel scales when that loses too much
            quantizer.per_channel = True
            with clock.stage("quantize", f"{fmt} {mode} per-channel"):
                candidate = quantizer.build([])
            report = judge(candidate, f"{fmt} {mode} per-channel")
        float_layers: list[FloatLayer] = []
        all_quantized_size = candidate.stat().st_size
        if report.gate_failure(check.gate) and mode is Precision.INT8:
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
        artifact = _install(handle, candidate, quantizer, report, float_layers, output,
                            f"{calibrate_method} calibration, {granularity} weights", failure)
        as_written = (artifact.inputs, artifact.outputs) == (base.inputs, base.outputs)
    return QuantizeResult(artifact, mode, fp32_size, report, report.drop_pts, max_accuracy_drop,
                          float_layers=float_layers, calibration_samples=len(calib),
                          all_quantized_size_bytes=all_quantized_size, notes=notes, gate_failure=failure,
                          activation_type=quantizer.activation_type(), checked_as_written=as_written)


def _check_request(profile: DeviceProfile, fmt: str, mode: str) -> None:
    if mode not in MODES:
        raise UsageError(f"unknown --mode '{mode}'", f"use one of {', '.join(MODES)}")
    if fmt not in FORMATS:
        raise UsageError(f"unknown --format '{fmt}'", f"use one of {', '.join(FORMATS)}")
    runs = {ArtifactFormat.for_runtime(r) for r in profile.runtimes}
    if ArtifactFormat(fmt) not in runs:
        name = "ONNX runtime" if ArtifactFormat(fmt) is ArtifactFormat.ONNX else "TFLite runtime"
        raise UsageError(f"{profile.name} runs no {name} ({', '.join(profile.runtimes)})",
                         "use --format " + "/".join(f.value for f in sorted(runs)))
    if profile.precisions.required and mode not in profile.precisions.required:
        raise UsageError(f"{profile.name} requires {'/'.join(profile.precisions.required)}, not {mode}",
                         "use --mode int8")


# --- building and measuring candidates --------------------------------------------------------------

class _Judge:
    """Measures a candidate file against the source on the held-out samples."""

    def __init__(self, source: Engine, base: QuantizeBase, held_out: Dataset, profile: DeviceProfile,
                 check: Check, clock: StageClock) -> None:
        self.source, self.base, self.held_out, self.profile, self.check = source, base, held_out, profile, check
        self.clock = clock

    def __call__(self, candidate: Path, route: str) -> ValidationReport:
        with self.clock.stage("validate", route):
            engine = engine_for_file(candidate, str(ArtifactFormat.of_path(candidate)), self.profile.architecture)
            return compare(route, self.source, engine, self.base.inputs, self.base.outputs, self.held_out,
                           "held-out", self.profile.tolerances, max_samples=len(self.held_out),
                           kinds=self.check.kinds, metric=self.check.metric)


def _fallback(quantizer: Quantizer, judge: _Judge, held_out: Dataset, candidate: Path, report: ValidationReport
              ) -> tuple[Path, ValidationReport, list[FloatLayer]]:
    """Keep the fewest of the most sensitive layers in float for which the gate holds (at most
    MAX_FLOAT_LAYERS; when even that many do not hold, that candidate is returned and the caller refuses it).

    The count is found by doubling it (1, 2, 4, 8, then the most allowed) and, once the gate holds, by
    halving the last step back (bisection): about log2 of MAX_FLOAT_LAYERS candidates instead of one per
    layer, each built from the same calibration and judged by the full check. It takes keeping more layers
    in float to lose no more, as a rule; a count found so is the fewest for which the gate held on the
    counts tried. Each layer's ``size_cost_bytes`` is its share of the file's growth between the counts
    tried around it (their sum is the whole growth)."""
    with judge.clock.stage("sensitivity", f"{quantizer.format} {quantizer.mode}"):
        ranked = quantizer.ranking(held_out, candidate)[:MAX_FLOAT_LAYERS]
    tried: dict[int, tuple[Path, ValidationReport]] = {0: (candidate, report)}

    def holds(count: int) -> bool:
        if count not in tried:
            with judge.clock.stage("quantize", f"{quantizer.format} {quantizer.mode} + {count} float layer(s)"):
                made = quantizer.build([n for k in ranked[:count] for n in (k.nodes or [k.name])])
            tried[count] = made, judge(made, f"{quantizer.format} int8 + float layers")
        return tried[count][1].gate_failure(judge.check.gate) is None

    low, count = 0, min(1, len(ranked))  # low: the most layers known not to hold
    while count and not holds(count) and count < len(ranked):
        low, count = count, min(2 * count, len(ranked))
    if count and holds(count):
        while count - low > 1:
            middle = (low + count) // 2
            low, count = (low, middle) if holds(middle) else (middle, count)
    kept = ranked[:count]
    steps = sorted(c for c in tried if c <= count)
    for before, after in itertools.pairwise(steps):
        growth = tried[after][0].stat().st_size - tried[before][0].stat().st_size
        share = growth // (after - before)
        for i, layer in enumerate(kept[before:after]):
            layer.size_cost_bytes = share if i < after - before - 1 else growth - share * (after - before - 1)
    return tried[count][0], tried[count][1], kept


def _install(handle: ModelHandle, candidate: Path, quantizer: Quantizer, report: ValidationReport,
             float_layers: list[FloatLayer], output: Path, method: str, failure: str | None = None) -> Artifact:
    output = output.resolve()
    if handle.path is not None and output == handle.path.resolve():
        raise UsageError(f"-o {output} is the source model", "write the result somewhere else")
    fmt, mode = quantizer.format, quantizer.mode
    inputs, outputs = quantizer.bindings(candidate)
    staging = staging_dir(output)
    try:
        staged = staging / output.name
        shutil.copyfile(candidate, staged)
        route = f"{fmt} {mode}" + (f" ({method})" if mode is Precision.INT8 else "")
        notes = [f"kept in float: {', '.join(f.name for f in float_layers)}"] if float_layers else []
        if failure:
            notes.append(f"written despite failing its check (--allow-drift): {failure}")
        artifact = Artifact(output, fmt, route, handle.sha256, inputs, outputs, precision=mode,
                            validation=report.to_dict(), notes=notes)
        return install(staged, artifact, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
