"""``edgepack prune``: prune to a size budget (or a ratio), win accuracy back by distillation, and show
parameters, MACs, file size, measured latency and accuracy before pruning, after it, and after
distillation."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.artifact import Artifact
from edgepack.compress.channels import (
    ROUND_TO,
    PrunedModel,
    PruningError,
    count_params,
    prune,
    prune_to_budget,
    sensitivity_scan,
)
from edgepack.compress.distill import DISTILL_EPOCHS, DistillReport, distill
from edgepack.compress.plan import Precision
from edgepack.data import Dataset
from edgepack.errors import UsageError, first_line
from edgepack.formats import ArtifactFormat
from edgepack.model import ModelFormat, ModelHandle
from edgepack.profiles import DeviceProfile, Tolerances
from edgepack.runners.base import Runner

MIN_DISTILL_SAMPLES = 8
SCAN_SAMPLES = 16  # held-out samples the sensitivity scan scores each layer on


@dataclass
class Stage:
    name: str
    params: int
    macs: int
    size_bytes: int  # the ONNX fp32 export of this stage (the final row: the real artifact)
    latency_ms: float | None
    accuracy: float | None
    agreement: float  # closeness to the original on held-out samples (distill.closeness)
    vs_original: str = ""  # the worst output's figure in words, e.g. "top-1 agreement 98.00%"


@dataclass
class PruneResult:
    artifact: Artifact
    stages: list[Stage]
    ratio: float
    history: list[list[Any]]
    protected: list[str]
    budget_bytes: int | None
    distill_report: DistillReport | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"artifact": self.artifact.to_dict(), "ratio": self.ratio, "budget_bytes": self.budget_bytes,
                "protected_layers": self.protected, "pruning_history": self.history,
                "stages": [s.__dict__ for s in self.stages],
                "distillation": self.distill_report.__dict__ if self.distill_report else None, "notes": self.notes}


def torch_module_for_pruning(handle: ModelHandle, work: Path, held: np.ndarray, profile: DeviceProfile,
                             notes: list[str]) -> Any:
    """An nn.Module Torch-Pruning can follow: the user's own module, or one built from the ONNX graph
    (shapes frozen and constants folded first), checked against the source on held-out samples."""
    if handle.format is ModelFormat.TORCH_MODULE:
        from edgepack.convert.torch_source import torch_module_of

        return torch_module_of(handle)
    from edgepack.convert.convert import parity_tolerances
    from edgepack.convert.onnx_to_torch import ROUTE
    from edgepack.convert.routes import graph_module

    module, path, _, folded = graph_module(handle, work)
    notes.extend([folded] if folded else [])

    failure = _parity(module, path, held, parity_tolerances(handle, profile))
    if failure:
        from edgepack.conversion_error import ConversionError

        raise ConversionError(ROUTE, f"the PyTorch module built from the graph differs from it: {failure}",
                              "build without pruning (--prune 0)")
    return module


def _parity(module: Any, path: Path, held: np.ndarray, tolerances: Tolerances) -> str | None:
    """The module against onnxruntime on the ONNX it was built from, by the fp32 parity tolerances."""
    import onnxruntime as ort
    import torch

    from edgepack.convert.validate import parity_failure
    from edgepack.fidelity import drift

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    samples = held[:8]
    ref = [np.concatenate(parts) for parts in zip(*(session.run(None, {feed: s[None]}) for s in samples),
                                                  strict=True)]
    try:
        with torch.no_grad():
            out = module(torch.from_numpy(samples))
    except Exception as exc:  # an op translated for batch 1 only, or a shape it did not expect
        return f"it does not run on a batch of samples ({first_line(exc, with_type=True)})"
    got = list(out) if isinstance(out, tuple | list) else [out]
    for name, r, g in zip(module.output_names, ref, got, strict=True):
        failure = parity_failure(drift(name, r.astype(np.float64), g.double().numpy().reshape(r.shape)),
                                 tolerances)
        if failure:
            return failure
    return None


def prune_model(handle: ModelHandle, calib: Dataset, profile: DeviceProfile, output: Path, *,
                max_size_mb: float | None = None, ratio: float | None = None, fmt: str = ArtifactFormat.ONNX,
                precision: str = Precision.FP32, importance: str = "magnitude", distill_epochs: int = DISTILL_EPOCHS,
                eval_data: Dataset | None = None, time_budget_s: float = 300.0,
                round_to: int | None = ROUND_TO, mixup: bool = True, timer: Runner | None = None,
                say: Callable[[str], None] | None = None) -> PruneResult:
    import torch

    from edgepack.convert.convert import require_static_inputs

    require_static_inputs(handle)
    fmt, precision = ArtifactFormat(fmt), Precision(precision)
    if len(handle.inputs) != 1:
        raise UsageError("edgepack prune handles single-input models", "")
    if ratio is not None and not 0 <= ratio < 1:
        raise UsageError(f"--ratio {ratio} is not in [0, 1)", "e.g. --ratio 0.5 removes half the channels")
    name = handle.inputs[0].name
    if eval_data is None:
        calib, eval_data = calib.holdout(MIN_DISTILL_SAMPLES, min_held_out=2)
    x, held = calib.inputs[name], eval_data.inputs[name]  # samples stacked on the batch axis
    example = (torch.zeros(*[int(d) for d in handle.inputs[0].shape]),)  # type: ignore[misc]
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edgepack-prune-") as tmp:
        work = Path(tmp)
        original = torch_module_for_pruning(handle, work, held, profile, notes).eval()
        size_of = _sizer(original, example, name, fmt, precision, calib, work, profile)
        budget = int(max_size_mb * 1e6) if max_size_mb else None
        if budget is None and ratio is None:
            budget = int(profile.memory_budget_mb * 1e6)
            notes.append(f"budget from the {profile.name} profile: {profile.memory_budget_mb:g} MB")

        def agreement_of(module: Any) -> float:
            from edgepack.compress.distill import agreement

            return agreement(original, module, held[:SCAN_SAMPLES])

        probe_ratio = ratio if ratio is not None else 0.5
        scan, layers = sensitivity_scan(original, example, probe_ratio, agreement_of, importance,
                                        time_budget_s=time_budget_s / 4)
        if len(scan) < layers:
            notes.append(f"sensitivity scan: {len(scan)} of {layers} layers within a quarter of the time "
                         f"budget ({time_budget_s / 4:g} s); the others were not protected")
        losses = [c for _, c in scan]
        median = float(np.median(losses)) if losses else 0.0
        protected = [n for n, c in scan if c > max(0.2, 2 * median)]
        if protected:
            notes.append(f"sensitivity scan kept whole: {', '.join(protected)}")
        if ratio is not None:
            pruned = prune(original, example, ratio, importance=importance, protected=protected, calib=x,
                           round_to=round_to)
            if ratio and not pruned.history:
                notes.append("no channel could be pruned: every prunable layer writes an output or feeds an op "
                             "that fixes its channel count")
        else:
            assert budget is not None
            pruned = prune_to_budget(original, example, budget, size_of, importance=importance,
                                     protected=protected, calib=x, round_to=round_to)
            if round_to and pruned.history and size_of(pruned.module) < 0.85 * budget:
                # channel counts rounded to multiples of round_to move in steps too coarse for this
                # model: take exact counts when they use the budget better
                exact = prune_to_budget(original, example, budget, size_of, importance=importance,
                                        protected=protected, calib=x, round_to=None)
                if size_of(exact.module) > size_of(pruned.module):
                    notes.append(f"channel counts rounded to multiples of {round_to} left over 15% of the budget "
                                 "unused; exact counts used instead")
                    pruned = exact
        stages = [_stage("before pruning", original, original, example, name, held, eval_data.labels, work, timer),
                  _stage("after pruning", pruned.module, original, example, name, held, eval_data.labels, work,
                         timer)]
        report = None
        student = pruned.module
        if distill_epochs > 0 and pruned.history:
            student, report = distill(original, pruned.module, x, labels=calib.labels, held_out=held,
                                      epochs=distill_epochs, time_budget_s=time_budget_s, mixup=mixup, say=say)
            stages.append(_stage("after distillation", student, original, example, name, held, eval_data.labels,
                                 work, timer))
        artifact = _write(handle, student, example, name, fmt, precision, calib, profile, output, work, pruned)
        if budget is not None and artifact.size_bytes > budget:
            notes.append(f"the {fmt} {precision} file is {artifact.size_bytes} bytes, over the budget of {budget}")
    return PruneResult(artifact, stages, pruned.ratio, pruned.history_json(), protected, budget, report, notes)


def _sizer(original: Any, example: tuple[Any, ...], name: str, fmt: ArtifactFormat, precision: Precision,
           calib: Dataset, work: Path, profile: DeviceProfile) -> Any:
    """Bytes of a module's artifact. ONNX: the real exported (and quantized) file every time. TFLite:
    the ONNX export scaled by the TFLite/ONNX ratio measured on the original (onnx2tf takes ~15 s a
    call); the final file is measured for real."""
    from edgepack.compress.channels import onnx_size

    def onnx_bytes(module: Any) -> int:
        if precision is Precision.FP32:
            return onnx_size(module, example, [name])
        from edgepack.compress.quantize_onnx import quantize_onnx_static
        from edgepack.convert.torch_to_onnx import export_to_onnx

        path = export_to_onnx(module, example, work / "size.onnx", input_names=[name], output_names=_names(module)).path
        feeds = [{name: calib.inputs[name][i:i + 1]} for i in range(min(16, len(calib)))]
        return quantize_onnx_static(path, work / "size_q.onnx", feeds, activation_type="uint8").stat().st_size

    if fmt is ArtifactFormat.ONNX:
        return onnx_bytes
    scale = _tflite_scale(original, example, name, precision, calib, work, profile) / onnx_bytes(original)
    return lambda module: int(onnx_bytes(module) * scale)


def _tflite_scale(original: Any, example: tuple[Any, ...], name: str, precision: Precision, calib: Dataset,
                  work: Path, profile: DeviceProfile) -> int:
    artifact = _artifact_of(original, example, name, ArtifactFormat.TFLITE, precision, calib, work / "scale",
                            profile)
    return artifact.size_bytes


def _artifact_of(module: Any, example: tuple[Any, ...], name: str, fmt: ArtifactFormat, precision: Precision,
                 calib: Dataset, out: Path, profile: DeviceProfile) -> Artifact:
    from edgepack.compress.quantize import quantize_model
    from edgepack.convert.convert import convert_model
    from edgepack.convert.torch_to_onnx import export_to_onnx
    from edgepack.model import load_model

    out.parent.mkdir(parents=True, exist_ok=True)
    onnx_path = export_to_onnx(module, example, out.parent / f"{out.name}.export.onnx", input_names=[name],
                               output_names=_names(module)).path
    handle = load_model(onnx_path)
    if precision is Precision.INT8:
        return quantize_model(handle, calib, profile, out, fmt=fmt, mode="int8", max_accuracy_drop=100.0).artifact
    if fmt is ArtifactFormat.ONNX:
        shutil.copyfile(onnx_path, out)
        return Artifact(out, "onnx", "torch.onnx", handle.sha256, [], [])
    return convert_model(handle, fmt, out, profile, calib).artifact


def _names(module: Any) -> list[str] | None:
    """The source's output names (a module built from ONNX keeps them), so artifacts bind by name."""
    return list(getattr(module, "output_names", None) or []) or None


def _stage(label: str, module: Any, original: Any, example: tuple[Any, ...], name: str, held: np.ndarray,
           labels: np.ndarray | None, work: Path, timer: Runner | None) -> Stage:
    """One stage's figures; its latency when a ``timer`` is given (``edgepack prune`` times this machine;
    a build for a board times the board itself, not here)."""
    import onnx
    import torch

    from edgepack.analysis.onnx_graph import summarize_onnx
    from edgepack.compress.distill import closeness, output_drifts, worst
    from edgepack.convert.torch_to_onnx import export_to_onnx
    from edgepack.runners.base import RunRequest

    path = export_to_onnx(module, example, work / f"{label.replace(' ', '_')}.onnx", input_names=[name],
                          output_names=_names(module)).path
    summary = summarize_onnx(onnx.load(str(path)))
    p50 = timer.run([RunRequest(path, threads=1, warmup=10, runs=100)])[0].p50_ms if timer else None
    accuracy = None
    if labels is not None:
        from edgepack.compress.distill import outputs_of

        with torch.no_grad():
            scores = outputs_of(module, held)[0]
            accuracy = float((scores.reshape(len(held), -1).argmax(1).numpy() == labels).mean())
    drifts = output_drifts(original, module, held)
    figure = worst(drifts)
    return Stage(label, count_params(module), summary.macs, path.stat().st_size, p50, accuracy,
                 closeness(drifts), figure.describe() if figure else "")


def _write(handle: ModelHandle, student: Any, example: tuple[Any, ...], name: str, fmt: ArtifactFormat,
           precision: Precision, calib: Dataset, profile: DeviceProfile, output: Path, work: Path,
           pruned: PrunedModel) -> Artifact:
    from edgepack.artifact import install, staging_dir

    built = _artifact_of(student, example, name, fmt, precision, calib, work / "final" / f"model.{fmt}", profile)
    output = output.resolve()
    staging = staging_dir(output)
    try:
        staged = staging / output.name
        shutil.copyfile(built.path, staged)
        built.source_sha256 = handle.sha256
        built.notes = [*built.notes, f"pruned {pruned.ratio:.1%} of the channels; history in the "
                                     f"{output.name}.edgepack.json 'pruning_history'"]
        built.validation = {**(built.validation or {}), "pruning_history": pruned.history_json()}
        artifact = install(staged, built, output)
        (output.parent / f"{output.name}.pruning.json").write_text(json.dumps(
            {"ratio": pruned.ratio, "history": pruned.history_json(), "protected": pruned.protected}, indent=1))
        return artifact
    finally:
        shutil.rmtree(staging, ignore_errors=True)


__all__ = ["PruneResult", "PruningError", "Stage", "prune_model"]
