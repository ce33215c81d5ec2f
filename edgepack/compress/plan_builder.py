"""Turn a CompressionPlan into a verified artifact, once: the same plan on the same source and data is
never built twice (``<cache>/artifacts/<key>/``, the key a hash of everything that decides the file).

Pruning happens once per ratio on the fp32 model (prune, then distil from the original); every format
and precision of that ratio is converted or quantized from the pruned model. Each artifact is then
checked against the ORIGINAL model on held-out data, so that a pruned-then-quantized candidate shows
its whole loss, not the last step's.

Several processes may build at once (``--jobs``, or two ``edgepack build`` runs on one cache): each
artifact folder is built under its own file lock, so the second builder of the same artifact waits and
then reads what the first one wrote.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgepack import __version__, strict_json
from edgepack.artifact import Artifact, install, staging_dir
from edgepack.compress.distill import DISTILL_EPOCHS
from edgepack.compress.plan import AS_GIVEN, CompressionPlan, Precision
from edgepack.compress.quantize import Check
from edgepack.convert.errors import ConversionError
from edgepack.data import Dataset
from edgepack.errors import EdgepackError
from edgepack.formats import ArtifactFormat
from edgepack.model import ModelHandle, file_sha256, load_model
from edgepack.profiles import DeviceProfile

EVAL_SAMPLES = 500  # held-out samples each artifact is checked on


@dataclass
class BuiltArtifact:
    artifact: Artifact
    accuracy_drop: float | None  # percentage points against the original model
    fidelity: dict[str, Any]  # the validation report against the original
    details: dict[str, Any] = field(default_factory=dict)  # quantization / pruning parameters
    error: str | None = None

    @property
    def size_mb(self) -> float:
        return self.artifact.size_bytes / 1e6


class BuildFailed(EdgepackError):
    """One plan could not be built; the search moves on without it."""


def dataset_sha256(data: Dataset | None) -> str:
    digest = hashlib.sha256()
    if data is not None:
        for name in sorted(data.inputs):
            digest.update(name.encode() + np.ascontiguousarray(data.inputs[name]).tobytes())
        if data.labels is not None:
            digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()


class PlanBuilder:
    def __init__(self, handle: ModelHandle, profile: DeviceProfile, calib: Dataset, eval_data: Dataset,
                 cache: Path, *, calibrated: bool, max_accuracy_drop: float, distill_epochs: int = DISTILL_EPOCHS,
                 say: Callable[[str], None] = lambda _: None, check: Check | None = None) -> None:
        from edgepack.engines import engine_for

        self.say = say
        self.check = check or Check()
        self.handle, self.profile, self.calib, self.eval_data = handle, profile, calib, eval_data
        self.calibrated, self.max_accuracy_drop, self.distill_epochs = calibrated, max_accuracy_drop, distill_epochs
        self.source = engine_for(handle)
        self._data_key = dataset_sha256(calib) + dataset_sha256(eval_data)
        self.root = cache / "artifacts"
        self._pruned: dict[float, tuple[ModelHandle, dict[str, Any]]] = {}
        #: (format, prune ratio) -> why converting the model to that format failed: every precision of
        #: that format starts with the same conversion (onnx2tf can take minutes to fail on a detector)
        self._conversion_failed: dict[tuple[str, float], str] = {}

    def key(self, what: dict[str, Any]) -> str:
        text = json.dumps({**what, "source": self.handle.sha256, "data": self._data_key, "edgepack": __version__,
                           "max_accuracy_drop": self.max_accuracy_drop, "distill_epochs": self.distill_epochs,
                           "tolerances": self.profile.tolerances.model_dump(),
                           "max_value_error": self.check.gate.max_value_error, "kinds": self.check.kinds,
                           "metric": self.check.metric[0] if self.check.metric else None}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def build(self, plan: CompressionPlan) -> BuiltArtifact:
        """The artifact for ``plan`` (from the cache when it was built before); raises BuildFailed."""
        fmt, precision, ratio = plan.artifact
        folder = self.root / self.key({"format": fmt, "precision": precision, "prune_ratio": ratio})
        with _locked(folder):
            return self._build(plan, folder)

    def _build(self, plan: CompressionPlan, folder: Path) -> BuiltArtifact:
        fmt, _, ratio = plan.artifact
        record = folder / "build.json"
        if record.exists():
            saved = json.loads(record.read_text())
            if saved.get("error"):
                raise BuildFailed(saved["error"])
            artifact = Artifact.load(folder / saved["file"])
            if self._intact(artifact.path, artifact.sha256, plan.label.rsplit(" x", 1)[0]):
                return BuiltArtifact(artifact, saved["accuracy_drop"], saved["fidelity"], saved["details"])
            shutil.rmtree(folder)
        try:
            if (fmt, ratio) in self._conversion_failed and not plan.as_given:
                raise BuildFailed(self._conversion_failed[fmt, ratio])
            built = self._as_given(plan, folder / f"model.{fmt}") if plan.as_given else \
                self._make(plan.format, plan.precision, ratio, folder / f"model.{fmt}")
        except EdgepackError as exc:
            if isinstance(exc, ConversionError) and exc.route.split(" ")[0].endswith(("->tflite", "->savedmodel")):
                self._conversion_failed[fmt, ratio] = str(exc)
            _write_json(record, {"error": str(exc)})  # a plan that cannot be built stays unbuildable
            raise BuildFailed(str(exc)) from None
        _write_json(record, {"file": built.artifact.path.name, "accuracy_drop": built.accuracy_drop,
                             "fidelity": built.fidelity, "details": built.details})
        return built

    # -- making one -------------------------------------------------------------------------------------
    def _as_given(self, plan: CompressionPlan, output: Path) -> BuiltArtifact:
        """The user's file itself, copied byte for byte: nothing converted, pruned or quantized, so its
        outputs are the original's by construction (the check against the original still gives the
        held-out accuracy the package reports)."""
        from edgepack.compress.quantizer import identity_bindings, tflite_io

        assert self.handle.path is not None
        names = [s.name for s in self.handle.inputs]
        inputs, outputs = identity_bindings(self.handle, self.source, self.calib.batch(names, 0))
        if plan.format is ArtifactFormat.TFLITE:  # the file's own I/O dtypes, scales and zero points (int8 I/O)
            inputs, outputs = tflite_io(self.handle.path, inputs, outputs)
        staging = staging_dir(output)
        try:
            staged = staging / output.name
            shutil.copyfile(self.handle.path, staged)
            artifact = install(staged, Artifact(staged, plan.format, AS_GIVEN, self.handle.sha256, inputs, outputs,
                                                precision=plan.precision), output)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if artifact.sha256 != self.handle.sha256:
            raise BuildFailed(f"{self.handle.path} changed while edgepack read it (its sha256 differs)",
                              "build again once the file is written")
        drop, fidelity = self._check(artifact)  # outputs without a points figure lose none: the same file
        return BuiltArtifact(artifact, 0.0 if drop is None else drop, {**fidelity, "exact": True},
                             {"precision_from": "the model's own graph (as given)"})

    def _make(self, fmt: ArtifactFormat, precision: Precision, ratio: float, output: Path) -> BuiltArtifact:
        from edgepack.compress.quantize import quantize_model

        handle, details = self._pruned_source(ratio) if ratio else (self.handle, {})
        if precision is Precision.FP32:
            artifact = self._fp32(handle, fmt, output)
        else:
            # written even past the drop bound: the search shows that candidate's drop as its blocker
            result = quantize_model(handle, self.calib, self.profile, output, fmt=fmt, mode=precision,
                                    eval_data=self.eval_data, max_accuracy_drop=self.max_accuracy_drop,
                                    check=replace(self.check, allow_drift=True))
            artifact = result.artifact
            details = {**details, "quantization": {
                "mode": precision, "calibration_samples": result.calibration_samples if self.calibrated else 0,
                "activation_type": result.activation_type,
                "float_layers": [f.__dict__ for f in result.float_layers], "notes": result.notes + artifact.notes}}
        drop, fidelity = self._check(artifact)
        return BuiltArtifact(artifact, drop, fidelity, details)

    def _fp32(self, handle: ModelHandle, fmt: ArtifactFormat, output: Path) -> Artifact:
        from edgepack.convert.convert import convert_model

        if handle.format.artifact_format is not fmt:
            return convert_model(handle, fmt, output, self.profile, self.calib).artifact
        from edgepack.compress.quantizer import identity_bindings
        from edgepack.engines import engine_for

        assert handle.path is not None
        names = [s.name for s in handle.inputs]
        inputs, outputs = identity_bindings(handle, engine_for(handle), self.calib.batch(names, 0))
        staging = staging_dir(output)
        try:
            staged = staging / output.name
            source = handle.path
            if fmt is ArtifactFormat.ONNX:  # dynamic dimensions fixed to --input-shape: shipped at that size
                from edgepack.convert.routes import onnx_of

                source, _, _ = onnx_of(handle, staging)
            shutil.copyfile(source, staged)
            return install(staged, Artifact(staged, fmt, "as given", self.handle.sha256, inputs, outputs), output)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _pruned_source(self, ratio: float) -> tuple[ModelHandle, dict[str, Any]]:
        """The fp32 ONNX model pruned by ``ratio`` and distilled from the original (built once)."""
        if ratio in self._pruned:
            return self._pruned[ratio]
        folder = self.root / self.key({"pruned": ratio})
        with _locked(folder):
            self._pruned[ratio] = self._prune(ratio, folder)
        return self._pruned[ratio]

    def _prune(self, ratio: float, folder: Path) -> tuple[ModelHandle, dict[str, Any]]:
        from edgepack.compress.pruning import prune_model

        path, record = folder / "pruned.onnx", folder / "pruning.json"
        if record.exists() and not self._intact(path, json.loads(record.read_text()).get("sha256"),
                                                f"pruned {ratio:.0%} model"):
            shutil.rmtree(folder)
        if not record.exists():
            if not self.calibrated:
                raise BuildFailed("pruning needs --calib data to distil on")
            result = prune_model(self.handle, self.calib, self.profile, path, ratio=ratio, fmt=ArtifactFormat.ONNX,
                                 precision=Precision.FP32, distill_epochs=self.distill_epochs,
                                 eval_data=self.eval_data, say=self.say)
            _write_json(record, {"sha256": file_sha256(path)[0], "pruning": {
                "ratio_asked": ratio, "ratio": result.ratio, "history": result.history,
                "protected_layers": result.protected, "notes": result.notes,
                "distillation": result.distill_report.__dict__ if result.distill_report else None}})
        return load_model(path), json.loads(record.read_text())

    def _intact(self, path: Path, sha256: str | None, what: str) -> bool:
        """A cached file is used only when its bytes still hash to what was verified when it was built."""
        if path.is_file() and sha256 and file_sha256(path)[0] == sha256:
            return True
        self.say(f"cache  {what}: {path} is missing or changed since it was built (sha256 differs): rebuilt")
        return False

    def _check(self, artifact: Artifact) -> tuple[float | None, dict[str, Any]]:
        """The artifact against the original model on held-out data: its drop in points (bounded by the
        search's constraint) and the gate's other checks, whose failure makes it unbuildable."""
        from edgepack.convert.validate import compare
        from edgepack.engines import engine_for_file

        report = compare("against the original", self.source,
                         engine_for_file(artifact.path, artifact.format, self.profile.architecture),
                         artifact.inputs, artifact.outputs, self.eval_data,
                         "held-out" if self.calibrated else "random", self.profile.tolerances, EVAL_SAMPLES,
                         kinds=self.check.kinds, metric=self.check.metric)
        unbounded = replace(self.check.gate, max_drop_pts=float("inf"))  # the drop is the search's to judge
        failure = report.gate_failure(unbounded)
        if failure:
            raise BuildFailed(f"refused by its check against the original: {failure}")
        return report.drop_pts, report.to_dict()


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold ``<folder>.lock`` (flock): one builder per artifact at a time, across processes."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a build killed mid-write leaves no record, so the plan is simply built again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(strict_json.dumps(data, indent=1) + "\n")
    partial.replace(path)
