"""The one builder: ``ArtifactBuilder.build(plans)`` turns compression plans into verified artifacts,
side by side in worker processes (``jobs``), each built once.

Once: the same plan on the same source and data is never built twice (``<cache>/artifacts/<key>/``,
the key a hash of everything that decides the file), and a plan that could not be built stays
unbuildable. Each artifact folder is built under a file lock, so two workers (or two edgepack runs)
asked for the same artifact build it once. Pruning happens once per ratio on the fp32 model (prune,
then distil from the original); every format and precision of that ratio starts from the pruned model.

The pruning probe (``probe(ratios)``) builds each ratio's fp32 ONNX model first (the cheapest artifact
that shows pruning's own loss): a ratio whose loss alone breaks the accuracy limit, or whose model fails,
is never built in any format; a ratio whose model computes the same function as a higher ratio's
(channels never active on the user's data are free to remove) is one candidate with it.

Workers get a copy of the builder without its pool (``__getstate__``); a builder that cannot be sent
to one (a module defined in a script's ``__main__``) builds here, one plan after another, and says so.
Interrupted (SIGINT/SIGTERM, edgepack.interrupts), ``close()`` does not wait for the running builds:
each worker gets SIGTERM and unwinds (onnx2tf's process group ended, temporary folders removed); one
still alive after the grace period, and its children, are killed.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import pickle
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack import __version__, interrupts, strict_json
from edgepack.artifact import Artifact
from edgepack.compress import making
from edgepack.compress.distill import DISTILL_EPOCHS
from edgepack.compress.making import BuildFailed
from edgepack.compress.plan import CompressionPlan, Precision
from edgepack.compress.quantize import Check
from edgepack.conversion_error import ConversionError
from edgepack.convert import reuse
from edgepack.convert.validate import ValidationReport
from edgepack.data import Dataset
from edgepack.engines import Engine
from edgepack.errors import EdgepackError
from edgepack.formats import ArtifactFormat
from edgepack.model import ModelHandle, file_sha256, load_model
from edgepack.profiles import DeviceProfile
from edgepack.stages import StageClock, StageTime

__all__ = ["ArtifactBuilder", "BuildFailed", "BuiltArtifact", "dataset_sha256"]

ArtifactKey = tuple[str, str, float]  # CompressionPlan.artifact


@dataclass(frozen=True)
class BuiltArtifact:
    artifact: Artifact
    accuracy_drop: float | None  # percentage points against the original model
    fidelity: ValidationReport  # the check against the original on held-out data
    details: dict[str, Any] = field(default_factory=dict)  # quantization / pruning parameters, for the manifest
    exact: bool = False  # the user's own file: its outputs are the original's by construction

    @property
    def size_mb(self) -> float:
        return self.artifact.size_bytes / 1e6


def dataset_sha256(data: Dataset | None) -> str:
    digest = hashlib.sha256()
    if data is not None:
        for name in sorted(data.inputs):
            digest.update(name.encode() + np.ascontiguousarray(data.inputs[name]).tobytes())
        if data.labels is not None:
            digest.update(np.ascontiguousarray(data.labels).tobytes())
    return digest.hexdigest()


class ArtifactBuilder:
    def __init__(self, handle: ModelHandle, profile: DeviceProfile, calib: Dataset, eval_data: Dataset, cache: Path,
                 *, calibrated: bool, max_accuracy_drop: float, distill_epochs: int = DISTILL_EPOCHS,
                 check: Check | None = None, jobs: int = 1, say: Callable[[str], None] = lambda _: None,
                 clock: StageClock | None = None) -> None:
        self.handle, self.profile, self.calib, self.eval_data = handle, profile, calib, eval_data
        #: where the building's time went: conversions, quantization, checks, distillation (also a worker's)
        self.clock = clock or StageClock()
        self.calibrated, self.max_accuracy_drop, self.distill_epochs = calibrated, max_accuracy_drop, distill_epochs
        self.check, self.say = check or Check(), say
        self.root = cache / "artifacts"
        self._data_key = dataset_sha256(calib) + dataset_sha256(eval_data)
        self.built: dict[ArtifactKey, BuiltArtifact] = {}
        self.failures: dict[ArtifactKey, str] = {}
        self._pruned: dict[float, tuple[ModelHandle, dict[str, Any]]] = {}
        #: (format, prune ratio) -> why converting the model to that format failed: every precision of
        #: that format starts with the same conversion (onnx2tf can take minutes to fail on a detector)
        self._conversion_failed: dict[tuple[str, float], str] = {}
        self._source: Engine | None = None
        self._pool: ProcessPoolExecutor | None = None
        self.jobs, self.note = max(1, jobs), None
        if self.jobs > 1:
            try:
                pickle.dumps(self)
            except (pickle.PicklingError, AttributeError, TypeError) as exc:
                self.jobs = 1
                self.note = f"artifacts built one at a time: the model cannot be sent to a worker process ({exc})"

    def __getstate__(self) -> dict[str, Any]:
        """What a worker process gets: the recipe, not this process's pool, engine or progress."""
        state = dict(self.__dict__)
        state.update(_pool=None, _source=None, say=None, built={}, failures={}, _pruned={}, clock=None)
        return state

    @property
    def source(self) -> Engine:
        """The original model's engine, which every artifact is checked against."""
        if self._source is None:
            from edgepack.convert.remembered import RememberedEngine
            from edgepack.engines import engine_for

            self._source = RememberedEngine(engine_for(self.handle))  # run once per sample, for every check
        return self._source

    # -- many plans -----------------------------------------------------------------------------------
    def build(self, plans: list[CompressionPlan]) -> dict[ArtifactKey, BuiltArtifact | BuildFailed]:
        """Each plan's artifact (built, or from the cache), or why it could not be built; by artifact key."""
        todo = list({p.artifact: p for p in plans if p.artifact not in self.built
                     and p.artifact not in self.failures}.values())
        for plan, built in zip(todo, self._side_by_side(todo) if todo else [], strict=True):
            if isinstance(built, BuildFailed):
                self.failures[plan.artifact] = str(built)
            else:
                self.built[plan.artifact] = built
        return {p.artifact: self.built[p.artifact] if p.artifact in self.built else BuildFailed(
            self.failures[p.artifact]) for p in plans}

    def probe(self, ratios: list[float], max_accuracy_drop: float | None) -> dict[float, str]:
        """The prune ratios not worth building, and why: pruning alone fails or loses more than the
        accuracy limit, or gives the same model as a higher ratio."""
        ratios = sorted(set(ratios))
        found = self.build([CompressionPlan(ArtifactFormat.ONNX, Precision.FP32, r) for r in ratios])
        probes = [found[(ArtifactFormat.ONNX.value, Precision.FP32.value, r)] for r in ratios]
        names = [s.name for s in self.handle.inputs]
        ruled_out: dict[float, str] = {}
        for ratio, probe in zip(ratios, probes, strict=True):
            with self.clock.stage("prune probe", f"prune {ratio:.0%} against the higher ratios"):
                same = next((r for r, p in zip(ratios, probes, strict=True) if r > ratio
                             and isinstance(p, BuiltArtifact) and isinstance(probe, BuiltArtifact)
                             and making.same_function(probe.artifact.path, p.artifact.path, self.eval_data, names)),
                            None)
            if same is not None:
                ruled_out[ratio] = (f"pruning {ratio:.0%} gives the same model as pruning {same:.0%} (equal outputs "
                                    f"on held-out samples: the channels in between are never active on your data): "
                                    f"one candidate, the {same:.0%} one")
            elif isinstance(probe, BuildFailed):
                ruled_out[ratio] = f"pruning {ratio:.0%} alone fails: {probe}"
            elif max_accuracy_drop is not None and probe.accuracy_drop is not None \
                    and probe.accuracy_drop > max_accuracy_drop:
                ruled_out[ratio] = (f"pruning {ratio:.0%} alone loses {probe.accuracy_drop:.2f} accuracy points "
                                    f"(limit {max_accuracy_drop:g}): not built")
        return ruled_out

    def _side_by_side(self, plans: list[CompressionPlan]) -> list[BuiltArtifact | BuildFailed]:
        if self.jobs == 1 or len(plans) == 1:
            return [self._here(plan) for plan in plans]
        if self._pool is None:
            # spawn, not fork: this process has ONNX Runtime's and torch's threads running
            self._pool = ProcessPoolExecutor(self.jobs, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start_worker, initargs=(self,))
        self.say(f"building {len(plans)} artifacts side by side ({min(self.jobs, len(plans))} worker processes)")
        with interrupts.held():  # workers start with the signals held, until start_worker
            futures = [self._pool.submit(_build_in_worker, plan) for plan in plans]
        results = []
        for plan, future in zip(plans, futures, strict=True):
            try:
                built, lines, seconds, times = future.result()
            except BrokenProcessPool:
                if interrupts.received():  # a worker ended by the same signal: the interruption, not a fault
                    raise interrupts.Interrupted(interrupts.received() or 0) from None
                raise
            self.clock.add(*times)  # timed in the worker: its stages come back with its result
            for line in lines:
                self.say(line)
            self._said(plan, built, seconds)
            results.append(built)
        return results

    def _here(self, plan: CompressionPlan) -> BuiltArtifact | BuildFailed:
        start = time.perf_counter()
        try:
            built: BuiltArtifact | BuildFailed = self.make(plan)
        except BuildFailed as exc:
            built = exc
        self._said(plan, built, time.perf_counter() - start)
        return built

    def _said(self, plan: CompressionPlan, built: BuiltArtifact | BuildFailed, seconds: float) -> None:
        label = _label(plan)
        if isinstance(built, BuildFailed):
            self.say(f"build  {label}: FAILED: {built}")
            return
        drop = "-" if built.accuracy_drop is None else f"{built.accuracy_drop:.2f} pts"
        self.say(f"build  {label}: {built.size_mb:.3f} MB, accuracy drop {drop} ({seconds:.1f} s)")

    def close(self) -> None:
        if self._pool is None:
            return
        pool, self._pool = self._pool, None
        # called from a `finally`: sys.exc_info() is what is on its way out (a Ctrl-C in the Python API too)
        if interrupts.received() is None and not isinstance(sys.exc_info()[1], KeyboardInterrupt):
            pool.shutdown(cancel_futures=True)
            return
        workers = [(pid, start) for pid, start in interrupts.descendants()
                   if pid in {p.pid for p in multiprocessing.active_children()}]
        pool.shutdown(wait=False, cancel_futures=True)
        # each worker and what it started, found while the worker still lives
        interrupts.end_processes([p for w in workers for p in [w, *interrupts.descendants(w[0])]])

    # -- one plan -------------------------------------------------------------------------------------
    def key(self, what: dict[str, Any]) -> str:
        text = json.dumps({**what, "source": self.handle.sha256, "data": self._data_key, "edgepack": __version__,
                           "max_accuracy_drop": self.max_accuracy_drop, "distill_epochs": self.distill_epochs,
                           "tolerances": self.profile.tolerances.model_dump(),
                           "max_value_error": self.check.gate.max_value_error, "kinds": self.check.kinds,
                           "metric": self.check.metric[0] if self.check.metric else None}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def make(self, plan: CompressionPlan) -> BuiltArtifact:
        """The artifact for ``plan`` (from the cache when it was built before); raises BuildFailed."""
        fmt, precision, ratio = plan.artifact
        folder = self.root / self.key({"format": fmt, "precision": precision, "prune_ratio": ratio})
        # one onnx2tf run serves every TFLite precision of a graph (and a rerun): convert/reuse.py
        with _locked(folder), reuse.conversions_kept_in(self.root / "conversions"):
            return self._cached_or_made(plan, folder)

    def _cached_or_made(self, plan: CompressionPlan, folder: Path) -> BuiltArtifact:
        fmt, _, ratio = plan.artifact
        record = folder / "build.json"
        if record.exists():
            start = time.perf_counter()
            saved = json.loads(record.read_text())
            if saved.get("error"):
                raise BuildFailed(saved["error"])
            artifact = Artifact.load(folder / saved["file"])
            if self._intact(artifact.path, artifact.sha256, _label(plan)):
                self.clock.add(StageTime("cache", time.perf_counter() - start, _label(plan)))
                return BuiltArtifact(artifact, saved["accuracy_drop"], ValidationReport.from_dict(saved["fidelity"]),
                                     saved["details"], bool(saved.get("exact")))
            shutil.rmtree(folder)
        try:
            if (fmt, ratio) in self._conversion_failed and not plan.as_given:
                raise BuildFailed(self._conversion_failed[fmt, ratio])
            built = self._made(plan, folder / f"model.{fmt}")
        except EdgepackError as exc:
            if isinstance(exc, ConversionError) and exc.route.split(" ")[0].endswith(("->tflite", "->savedmodel")):
                self._conversion_failed[fmt, ratio] = str(exc)
            _write_json(record, {"error": str(exc)})  # a plan that cannot be built stays unbuildable
            raise BuildFailed(str(exc)) from None
        _write_json(record, {"file": built.artifact.path.name, "accuracy_drop": built.accuracy_drop,
                             "fidelity": built.fidelity.to_dict(), "details": built.details, "exact": built.exact})
        return built

    def _made(self, plan: CompressionPlan, output: Path) -> BuiltArtifact:
        if plan.as_given:  # the check against the original still gives the held-out accuracy the package reports
            artifact = making.copy_as_given(self.handle, self.source, self.calib, plan, output)
            report = self._checked(artifact, _label(plan))  # outputs without a points figure lose none
            drop = report.drop_pts
            return BuiltArtifact(artifact, 0.0 if drop is None else drop, report,
                                 {"precision_from": "the model's own graph (as given)"}, exact=True)
        handle, details = self._pruned_source(plan.prune_ratio) if plan.prune_ratio else (self.handle, {})
        source = self.source if handle is self.handle else None  # a pruned model's steps check against it
        if plan.precision is Precision.FP32:
            artifact = making.fp32_artifact(handle, self.handle.sha256, plan.format, output, self.profile, self.calib,
                                            self.clock, source)
        else:
            artifact, quantization, made = making.quantized_artifact(
                handle, self.calib, self.eval_data, self.profile, plan.format, plan.precision, output,
                self.max_accuracy_drop, self.check, self.calibrated, self.clock, source)
            details = {**details, **quantization}
            if source is not None and made is not None:  # quantizing checked this file against the original
                return BuiltArtifact(artifact, made.drop_pts, self._checked(artifact, _label(plan), made), details)
        report = self._checked(artifact, _label(plan))
        return BuiltArtifact(artifact, report.drop_pts, report, details)

    def _checked(self, artifact: Artifact, label: str, made: ValidationReport | None = None) -> ValidationReport:
        """The artifact's check against the original, gated; ``made``: already run on it (not run twice)."""
        if made is not None:
            return making.checked_against(self.source, artifact, self.eval_data, self.calibrated, self.profile,
                                          self.check, made)
        with self.clock.stage("validate", f"{label} against the original"):
            return making.checked_against(self.source, artifact, self.eval_data, self.calibrated, self.profile,
                                          self.check)

    def _pruned_source(self, ratio: float) -> tuple[ModelHandle, dict[str, Any]]:
        """The fp32 ONNX model pruned by ``ratio`` and distilled from the original (built once)."""
        if ratio not in self._pruned:
            folder = self.root / self.key({"pruned": ratio})
            with _locked(folder):
                self._pruned[ratio] = self._pruned_in(ratio, folder)
        return self._pruned[ratio]

    def _pruned_in(self, ratio: float, folder: Path) -> tuple[ModelHandle, dict[str, Any]]:
        path, record = folder / "pruned.onnx", folder / "pruning.json"
        if record.exists() and not self._intact(path, json.loads(record.read_text()).get("sha256"),
                                                f"pruned {ratio:.0%} model"):
            shutil.rmtree(folder)
        if not record.exists():
            if not self.calibrated:
                raise BuildFailed("pruning needs --calib data to distil on")
            with self.clock.stage("distill", f"prune {ratio:.0%}"):
                pruning = making.pruned_model(self.handle, self.calib, self.eval_data, self.profile, ratio, path,
                                              self.distill_epochs, self.say)
            _write_json(record, {"sha256": file_sha256(path)[0], "pruning": pruning})
        return load_model(path), json.loads(record.read_text())

    def _intact(self, path: Path, sha256: str | None, what: str) -> bool:
        """A cached file is used only when its bytes still hash to what was verified when it was built."""
        if path.is_file() and sha256 and file_sha256(path)[0] == sha256:
            return True
        self.say(f"cache  {what}: {path} is missing or changed since it was built (sha256 differs): rebuilt")
        return False


# -- a worker process -----------------------------------------------------------------------------------
#: outcome of one plan: the artifact, or why it could not be built; the lines it said; seconds taken; the
#: stages it spent them on (added to the parent's clock)
Built = tuple[BuiltArtifact | BuildFailed, list[str], float, tuple[StageTime, ...]]

_worker: ArtifactBuilder | None = None
_lines: list[str] = []


def _start_worker(builder: ArtifactBuilder) -> None:
    global _worker
    interrupts.start_worker()
    builder.say = _lines.append
    builder.clock = StageClock()
    _worker = builder


def _build_in_worker(plan: CompressionPlan) -> Built:
    assert _worker is not None
    _lines.clear()
    _worker.clock = clock = StageClock()  # this plan's stages only
    start = time.perf_counter()
    with interrupts.task():
        try:
            built: BuiltArtifact | BuildFailed = _worker.make(plan)
        except BuildFailed as exc:
            built = exc
    return built, list(_lines), time.perf_counter() - start, clock.times


def _label(plan: CompressionPlan) -> str:
    """The artifact's part of a plan's label ("tflite int8", "onnx fp32 prune 30%"): threads aside."""
    return plan.label.rsplit(" x", 1)[0]


_locked = reuse.locked  # one builder per artifact at a time, across processes


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically: a build killed mid-write leaves no record, so the plan is simply built again."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(strict_json.dumps(data, indent=1) + "\n")
    partial.replace(path)
