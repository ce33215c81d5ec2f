"""Making one artifact of a plan, step by step: the user's file as given, an fp32 conversion, a
quantized model, a pruned-and-distilled source; then its check against the ORIGINAL model on held-out
data, so that a pruned-then-quantized candidate shows its whole loss, not the last step's.

Each function does one step and returns what it made; :class:`~edgepack.compress.builder.ArtifactBuilder`
decides which steps a plan needs, caches their results and runs them side by side.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.artifact import Artifact, install, staging_dir
from edgepack.compress.plan import AS_GIVEN, CompressionPlan, Precision
from edgepack.compress.quantize import Check
from edgepack.convert.validate import ValidationReport
from edgepack.data import Dataset
from edgepack.engines import Engine
from edgepack.errors import EdgepackError
from edgepack.formats import ArtifactFormat
from edgepack.model import ModelHandle
from edgepack.profiles import DeviceProfile
from edgepack.stages import StageClock

EVAL_SAMPLES = 500  # held-out samples each artifact is checked on
SAME_FUNCTION_SAMPLES = 64
SAME_FUNCTION_TOLERANCE = 1e-4  # of each output's peak on those samples


class BuildFailed(EdgepackError):
    """One plan could not be built; the search moves on without it."""


def copy_as_given(handle: ModelHandle, source: Engine, calib: Dataset, plan: CompressionPlan,
                  output: Path) -> Artifact:
    """The user's file itself, copied byte for byte: nothing converted, pruned or quantized."""
    from edgepack.compress.quantizer import identity_bindings, tflite_io

    assert handle.path is not None
    names = [s.name for s in handle.inputs]
    inputs, outputs = identity_bindings(handle, source, calib.batch(names, 0))
    if plan.format is ArtifactFormat.TFLITE:  # the file's own I/O dtypes, scales and zero points (int8 I/O)
        inputs, outputs = tflite_io(handle.path, inputs, outputs)
    staging = staging_dir(output)
    try:
        staged = staging / output.name
        shutil.copyfile(handle.path, staged)
        artifact = install(staged, Artifact(staged, plan.format, AS_GIVEN, handle.sha256, inputs, outputs,
                                            precision=plan.precision), output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if artifact.sha256 != handle.sha256:
        raise BuildFailed(f"{handle.path} changed while edgepack read it (its sha256 differs)",
                          "build again once the file is written")
    return artifact


def fp32_artifact(handle: ModelHandle, original_sha256: str, fmt: ArtifactFormat, output: Path,
                  profile: DeviceProfile, calib: Dataset, clock: StageClock, engine: Engine | None) -> Artifact:
    """``handle`` in ``fmt`` at fp32: converted, or (already in that format) copied with its dynamic
    dimensions fixed to the measured shapes. ``engine``: ``handle``'s, when the caller keeps one."""
    from edgepack.convert.convert import convert_model
    from edgepack.engines import engine_for

    if handle.format.artifact_format is not fmt:
        return convert_model(handle, fmt, output, profile, calib, clock=clock, source=engine).artifact
    with clock.stage("convert", f"{fmt} fp32 (the model's own graph, shapes fixed)"):
        return _fixed_copy(handle, original_sha256, fmt, output, calib, engine or engine_for(handle))


def _fixed_copy(handle: ModelHandle, original_sha256: str, fmt: ArtifactFormat, output: Path,
                calib: Dataset, engine: Engine) -> Artifact:
    from edgepack.compress.quantizer import identity_bindings

    assert handle.path is not None
    names = [s.name for s in handle.inputs]
    inputs, outputs = identity_bindings(handle, engine, calib.batch(names, 0))
    staging = staging_dir(output)
    try:
        staged = staging / output.name
        source = handle.path
        if fmt is ArtifactFormat.ONNX:  # dynamic dimensions fixed to --input-shape: shipped at that size
            from edgepack.convert.routes import onnx_of

            source, _, _ = onnx_of(handle, staging)
        shutil.copyfile(source, staged)
        return install(staged, Artifact(staged, fmt, "as given", original_sha256, inputs, outputs), output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def quantized_artifact(handle: ModelHandle, calib: Dataset, eval_data: Dataset, profile: DeviceProfile,
                       fmt: ArtifactFormat, precision: Precision, output: Path, max_accuracy_drop: float,
                       check: Check, calibrated: bool, clock: StageClock,
                       source: Engine | None) -> tuple[Artifact, dict[str, Any], ValidationReport | None]:
    """Quantized and written even past the drop bound (the search shows that candidate's drop as its
    blocker); with the quantization's parameters for the manifest, and the written file's check against
    ``handle`` on ``eval_data`` when quantizing made exactly the check ``checked_against`` would (the same
    file, bindings, samples and data kind), else None. ``source``: ``handle``'s engine, when the caller
    keeps one."""
    from edgepack.compress.quantize import quantize_model

    result = quantize_model(handle, calib, profile, output, fmt=fmt, mode=precision, eval_data=eval_data,
                            max_accuracy_drop=max_accuracy_drop, check=replace(check, allow_drift=True),
                            clock=clock, source=source)
    artifact = result.artifact
    same_check = result.checked_as_written and calibrated and len(eval_data) <= EVAL_SAMPLES
    return artifact, {"quantization": {
        "mode": precision, "calibration_samples": result.calibration_samples if calibrated else 0,
        "activation_type": result.activation_type, "float_layers": [f.__dict__ for f in result.float_layers],
        "notes": result.notes + artifact.notes}}, replace(result.fidelity, route=AGAINST) if same_check else None


def pruned_model(handle: ModelHandle, calib: Dataset, eval_data: Dataset, profile: DeviceProfile, ratio: float,
                 path: Path, distill_epochs: int, say: Callable[[str], None]) -> dict[str, Any]:
    """``handle`` pruned by ``ratio`` and distilled from it, written to ``path`` as fp32 ONNX; the pruning's
    parameters for the manifest."""
    from edgepack.compress.pruning import prune_model

    result = prune_model(handle, calib, profile, path, ratio=ratio, fmt=ArtifactFormat.ONNX,
                         precision=Precision.FP32, distill_epochs=distill_epochs, eval_data=eval_data, say=say)
    return {"ratio_asked": ratio, "ratio": result.ratio, "history": result.history,
            "protected_layers": result.protected, "notes": result.notes,
            "distillation": result.distill_report.__dict__ if result.distill_report else None}


AGAINST = "against the original"  # the route of an artifact's check against the original model


def checked_against(source: Engine, artifact: Artifact, eval_data: Dataset, calibrated: bool,
                    profile: DeviceProfile, check: Check, made: ValidationReport | None = None) -> ValidationReport:
    """The artifact against the original model on held-out data. Its drop in points is the search's to
    bound (a constraint); the gate's other checks refuse it here (BuildFailed). ``made``: that same check,
    when making the artifact already ran it (quantized_artifact): the gate judges it, it is not run twice."""
    from edgepack.convert.validate import compare
    from edgepack.engines import engine_for_file

    report = made or compare(AGAINST, source, engine_for_file(artifact.path, artifact.format, profile.architecture),
                             artifact.inputs, artifact.outputs, eval_data, "held-out" if calibrated else "random",
                             profile.tolerances, EVAL_SAMPLES, kinds=check.kinds, metric=check.metric)
    failure = report.gate_failure(replace(check.gate, max_drop_pts=float("inf")))
    if failure:
        raise BuildFailed(f"refused by its check against the original: {failure}")
    return report


def same_function(a: Path, b: Path, eval_data: Dataset, input_names: list[str]) -> bool:
    """Two fp32 ONNX models that give the same outputs on held-out samples (within 1e-4 of each peak)."""
    from edgepack.engines import engine_for_file

    ea, eb = (engine_for_file(path, ArtifactFormat.ONNX) for path in (a, b))
    for i in range(min(len(eval_data), SAME_FUNCTION_SAMPLES)):
        sample = eval_data.batch(input_names, i)
        for x, y in zip(ea.run(sample), eb.run(sample), strict=True):
            if x.shape != y.shape:
                return False
            peak = float(np.max(np.abs(x))) or 1.0
            if float(np.max(np.abs(x.astype(np.float64) - y))) > SAME_FUNCTION_TOLERANCE * peak:
                return False
    return True
