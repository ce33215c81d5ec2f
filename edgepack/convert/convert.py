"""``edgepack convert``: try every route to the target format, verify each against the source, keep
the closest, and report the others (their error or their drift) rather than hiding them."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack import __version__
from edgepack.artifact import Artifact, Binding, install, staging_dir
from edgepack.conversion_error import ConversionError
from edgepack.convert import reuse
from edgepack.convert.routes import Route, RouteOutput, routes_for
from edgepack.convert.validate import ShapeMismatchError, ValidationReport, bind, check_tolerance, compare
from edgepack.data import Dataset, random_dataset
from edgepack.engines import Engine, engine_for, engine_for_file
from edgepack.errors import InputShapeError, UsageError
from edgepack.formats import FORMATS, ArtifactFormat
from edgepack.model import DIRECTORY_TARGETS, ModelFormat, ModelHandle
from edgepack.profiles import DeviceProfile, Tolerances
from edgepack.stages import StageClock
from edgepack.tensor_spec import TensorSpec, default_layout

TARGETS = (*FORMATS, *DIRECTORY_TARGETS)  # savedmodel and torch are directories


@dataclass
class RouteAttempt:
    route: str
    report: ValidationReport | None = None
    error: str | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"route": self.route, "error": self.error, "seconds": round(self.seconds, 2),
                "validation": self.report.to_dict() if self.report else None}


@dataclass
class ConversionResult:
    artifact: Artifact
    report: ValidationReport
    attempts: list[RouteAttempt] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact.to_dict(), "route": self.artifact.route,
                "validation": self.report.to_dict(), "attempts": [a.to_dict() for a in self.attempts]}


def default_name(handle: ModelHandle, target: str) -> str:
    """``MODEL.onnx``/``MODEL.tflite``, or ``MODEL_savedmodel``/``MODEL_torch`` for directory artifacts."""
    return f"{handle.name}{ArtifactFormat(target).suffix}" if target in FORMATS else f"{handle.name}_{target}"


MAX_SAMPLE_BYTES = 1 << 30  # one sample of all inputs together; checked before anything is allocated


def require_static_inputs(handle: ModelHandle) -> None:
    """Every input fixed, and of a size that fits memory. A sample input has batch 1 (edgepack feeds one
    sample at a time); an input whose first axis is not a batch axis, or a rank-0 one, is fed whole
    (see edgepack.input_values)."""
    total = 0
    for spec in handle.inputs:
        if not spec.is_static:
            raise InputShapeError(
                f"input '{spec.name}' has a dynamic shape {list(spec.shape)}",
                f"pass --input-shape with every dimension, e.g. --input-shape {spec.name}:" +
                ",".join(str(d) if isinstance(d, int) and d > 0 else "1" if i == 0 else "N"
                         for i, d in enumerate(spec.shape)))
        total += int(np.prod(spec.shape, dtype=np.float64)) * np.dtype(spec.dtype).itemsize
    if total > MAX_SAMPLE_BYTES:
        shapes = ", ".join(f"{s.name} {list(s.shape)}" for s in handle.inputs)
        raise InputShapeError(f"one sample of the inputs ({shapes}) takes {total / 2**30:.1f} GiB",
                              "check the shapes, or pass --input-shape with the size the model runs at")


DEPTH_REFERENCE_OPS = 50  # graphs up to this many ops keep the profile's parity tolerance as it is


def parity_tolerances(handle: ModelHandle, profile: DeviceProfile, tolerance: float | None = None) -> Tolerances:
    """How close an fp32 conversion must stay: ``tolerance`` (``--tolerance``) when given, else the
    profile's ``max_abs_error_rel`` scaled by sqrt(ops / 50) for deeper graphs, because float rounding
    differences between two runtimes accumulate along the graph (a 672-op detector differs by ~1e-4 of
    its output scale with identical maps). Cosine and top-1 agreement are not relaxed."""
    base = profile.tolerances
    if tolerance is not None:
        return base.model_copy(update={"max_abs_error_rel": check_tolerance(tolerance, "1e-3")})
    ops = _op_count(handle)
    if ops <= DEPTH_REFERENCE_OPS:
        return base
    return base.model_copy(update={"max_abs_error_rel": base.max_abs_error_rel * math.sqrt(ops / DEPTH_REFERENCE_OPS)})


def _op_count(handle: ModelHandle) -> int:
    """Ops in the source graph (ONNX nodes, TFLite ops); 0 where counting would need a conversion."""
    if handle.path is None or handle.format.artifact_format is None:
        return 0
    if handle.format is ModelFormat.ONNX:
        import onnx

        return len(onnx.load(str(handle.path), load_external_data=False).graph.node)
    from edgepack.model_files import tflite_interpreter

    return len(tflite_interpreter(handle.path, delegates=False)._get_ops_details())


def ordered_routes(handle: ModelHandle, target: str, profile: DeviceProfile) -> list[Route]:
    routes = routes_for(handle, target)
    if not routes:
        raise UsageError(f"{handle.source} is already {handle.format.value}; nothing to convert to {target}",
                         "pick another --to")
    preference = {key: i for i, key in enumerate(profile.convert_routes)}
    return sorted(routes, key=lambda r: (r.fallback, preference.get(r.key, len(preference))))


def source_output_specs(handle: ModelHandle, outputs: list[np.ndarray]) -> list[TensorSpec]:
    """Specs of the source's outputs as one run produced them (torch handles declare no output shapes)."""
    channels_last = handle.format.is_tensorflow or handle.format is ModelFormat.TFLITE
    names = [s.name for s in handle.outputs] if len(handle.outputs) == len(outputs) else \
        [f"output_{i}" for i in range(len(outputs))]
    return [TensorSpec(n, tuple(o.shape), o.dtype.name, default_layout(o.ndim, channels_last))
            for n, o in zip(names, outputs, strict=True)]


def convert_model(handle: ModelHandle, target: str, output: Path, profile: DeviceProfile,
                  data: Dataset | None = None, max_samples: int = 32,
                  tolerance: float | None = None, *, kinds: dict[str, str] | None = None,
                  allow_drift: bool = False, clock: StageClock | None = None,
                  source: Engine | None = None) -> ConversionResult:
    """Convert, verify and write ``output`` (+ its ``.edgepack.json``) atomically.

    Raises :class:`ConversionError` when every route fails or drifts past ``parity_tolerances``
    (``tolerance`` overrides the relative error); then nothing is written, unless ``allow_drift``
    (the closest route is written, and its metadata says it drifted). ``clock``: each route's conversion
    is timed there as stage "convert", its check against the source as "validate". ``source``: the
    source's engine when the caller has one (its outputs remembered across checks), else one is made.
    Within ``reuse.conversions_kept_in`` (a build), a conversion made and verified once for the same
    source, target, data and tolerances is copied from there with its check (every TFLite precision
    quantizes from the same verified SavedModel).
    """
    if target not in TARGETS:
        raise UsageError(f"unknown target format '{target}'", f"use one of {', '.join(TARGETS)}")
    require_static_inputs(handle)
    clock = clock or StageClock()
    kept = reuse.kept_folder()
    if kept is None:
        return _converted(handle, target, output, profile, data, max_samples, tolerance, kinds, allow_drift, clock,
                          source)
    key = reuse.digest(handle.sha256, json.dumps(handle.static_input_shapes, sort_keys=True, default=list), target,
                       _data_digest(data), str(max_samples), repr(tolerance), json.dumps(kinds or {}, sort_keys=True),
                       str(allow_drift), json.dumps(profile.convert_routes), profile.tolerances.model_dump_json(),
                       reuse.converter_versions(), __version__)
    folder = kept / f"convert-{key}"
    with reuse.locked(folder):
        record = folder / "conversion.json"
        if not record.is_file():
            made = _converted(handle, target, folder / "made" / output.name, profile, data, max_samples, tolerance,
                              kinds, allow_drift, clock, source)
            partial = record.with_name(".conversion.json.partial")
            partial.write_text(json.dumps({"file": output.name, "report": made.report.to_dict(),
                                           "attempts": [a.to_dict() for a in made.attempts]}))
            partial.replace(record)
        with clock.stage("convert", f"{handle.format.value} -> {target} (made and verified earlier in this build)"):
            kept_record = json.loads(record.read_text())  # made under the name the first caller asked for
            return _copy_kept(folder / "made" / kept_record.get("file", output.name), kept_record, handle, output)


def _data_digest(data: Dataset | None) -> str:
    if data is None:
        return "random"
    parts = [name.encode() + np.ascontiguousarray(data.inputs[name]).tobytes() for name in sorted(data.inputs)]
    return reuse.digest(*parts, b"" if data.labels is None else np.ascontiguousarray(data.labels).tobytes())


def _copy_kept(made: Path, record: dict[str, Any], handle: ModelHandle, output: Path) -> ConversionResult:
    """A kept conversion (``made``, verified when it was made) written to ``output`` with its metadata."""
    output = output.resolve()
    if handle.path is not None and output == handle.path.resolve():
        raise UsageError(f"-o {output} is the source model", "write the result somewhere else")
    artifact = Artifact.load(made)
    staging = staging_dir(output)
    try:
        staged = staging / output.name
        if made.is_dir():
            shutil.copytree(made, staged, ignore=shutil.ignore_patterns("edgepack.json"))
        else:
            shutil.copyfile(made, staged)
        artifact = install(staged, dataclasses.replace(artifact, path=output), output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report = ValidationReport.from_dict(record["report"])
    attempts = [RouteAttempt(a["route"], ValidationReport.from_dict(a["validation"]) if a["validation"] else None,
                             a["error"], a["seconds"]) for a in record["attempts"]]
    return ConversionResult(artifact, report, attempts)


def _converted(handle: ModelHandle, target: str, output: Path, profile: DeviceProfile, data: Dataset | None,
               max_samples: int, tolerance: float | None, kinds: dict[str, str] | None, allow_drift: bool,
               clock: StageClock, source: Engine | None) -> ConversionResult:
    """convert_model's own work: every route tried, each checked against the source."""
    import time

    routes = ordered_routes(handle, target, profile)
    tolerances = parity_tolerances(handle, profile, tolerance)
    data_kind = "calibration" if data is not None else "random"
    data = data if data is not None else random_dataset(handle.inputs, 16)
    source = source or engine_for(handle)
    names = [s.name for s in handle.inputs]
    calib = data.inputs[names[0]] if len(names) == 1 else None
    source_outputs = source_output_specs(handle, source.run(data.batch(names, 0)))

    attempts: list[RouteAttempt] = []
    best: tuple[RouteAttempt, RouteOutput, list[Binding], list[Binding], ValidationReport] | None = None
    with tempfile.TemporaryDirectory(prefix="edgepack-convert-") as tmp:
        for index, route in enumerate(routes):
            if route.fallback and best is not None and best[4].passed:
                continue  # an earlier route's result passed: the fallback is not needed
            attempt = RouteAttempt(route.name)
            attempts.append(attempt)
            start = time.perf_counter()
            if not route.available():
                attempt.error = "not installed"
                continue
            work = Path(tmp) / f"route{index}"
            work.mkdir()
            step = f"{handle.format.value} -> {target} ({route.name})"
            try:
                with clock.stage("convert", step):
                    produced = route.run(handle, work, calib)
                with clock.stage("validate", step):
                    engine = engine_for_file(produced.path, produced.format)
                    probe = data.batch(names, 0)
                    inputs = bind(route.name, handle.inputs, _artifact_input_shapes(engine, probe, produced),
                                  produced.channels_last)
                    got = engine.run([b.from_source(x) for b, x in zip(inputs, probe, strict=True)])
                    outputs = bind(route.name, source_outputs,
                                   [(tuple(o.shape), o.dtype.name, n) for o, n in
                                    zip(got, _names(engine.output_names, len(got)), strict=True)],
                                   produced.channels_last)
                    report = compare(route.name, source, engine, inputs, outputs, data, data_kind,
                                     tolerances, max_samples, kinds=kinds)
            except ShapeMismatchError:
                raise
            except ConversionError as exc:
                attempt.error = exc.reason
                continue
            finally:
                attempt.seconds = time.perf_counter() - start
            attempt.report = report
            if best is None or _better(report, best[4]):
                best = (attempt, produced, inputs, outputs, report)
        if best is None:
            reasons = "; ".join(f"{a.route}: {a.error}" for a in attempts)
            raise ConversionError(f"{handle.format.value}->{target}", reasons)
        attempt, produced, inputs, outputs, report = best
        if not report.passed and not allow_drift:
            raise ConversionError(attempt.route, f"drifted past tolerance: {report.first_failure}",
                                  "pass --tolerance (a fraction of the output's scale) if this drift is "
                                  "acceptable, or --allow-drift to write it anyway")
        if not report.passed:
            produced.notes.append(f"WRITTEN DESPITE DRIFT (--allow-drift): {report.first_failure}")
        artifact = _write(handle, produced, attempt.route, inputs, outputs, report, output)
    return ConversionResult(artifact, report, attempts)


def _better(a: ValidationReport, b: ValidationReport) -> bool:
    if a.passed != b.passed:
        return a.passed
    return a.worst_rel_error < b.worst_rel_error * 0.5  # clearly closer; else keep the preferred route


def _names(names: list[str], count: int) -> list[str]:
    return names if len(names) == count else [f"output_{i}" for i in range(count)]


def _artifact_input_shapes(engine: Engine, probe: list[np.ndarray],
                           produced: RouteOutput) -> list[tuple[tuple[int, ...], str, str]]:
    declared = engine.input_specs()
    if declared is not None:  # ONNX and TFLite declare their inputs
        return declared
    perm_shapes = []
    for x in probe:  # SavedModel / TorchScript declare nothing we can trust: the route's convention
        shape = tuple(x.shape)
        if produced.channels_last and 3 <= x.ndim <= 5:
            shape = (shape[0], *shape[2:], shape[1])
        perm_shapes.append((shape, x.dtype.name, ""))
    names = engine.input_names
    return [(s, d, names[i] if i < len(names) else n) for i, (s, d, n) in enumerate(perm_shapes)]


def _write(handle: ModelHandle, produced: RouteOutput, route: str, inputs: list[Binding],
           outputs: list[Binding], report: ValidationReport, output: Path) -> Artifact:
    """Move the artifact into place atomically, with its metadata."""
    output = output.resolve()
    if handle.path is not None and output == handle.path.resolve():
        raise UsageError(f"-o {output} is the source model", "write the result somewhere else")
    staging = staging_dir(output)
    try:
        staged = staging / output.name
        if produced.path.is_dir():
            shutil.copytree(produced.path, staged)
        else:
            shutil.copyfile(produced.path, staged)
        notes = list(produced.notes)
        for b in inputs:
            if b.perm is not None:
                notes.append(f"input '{b.source_name}' is {b.layout} here; give data in {b.source_layout}, "
                             f"transposed by {list(b.perm)}")
        artifact = Artifact(output, produced.format, route, handle.sha256, inputs, outputs,
                            validation=report.to_dict(), notes=notes)
        return install(staged, artifact, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
