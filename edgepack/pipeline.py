"""``edgepack build``: the search loop, from a model and a device to a chosen, verified artifact.

The shape is TVM meta_schedule's: a strategy proposes a batch of candidates (as many as the pool has
boards); the builder makes the unbuilt ones into artifacts, side by side (each checked against the
original on held-out data, which reveals its real size and accuracy); the Measurer measures those the
constraints still allow, on different boards at once (from the records when measured before); the
strategy observes the results and its predictor is refitted; again, until the strategy is done. Then
the closest contenders are confirmed on one board, the chosen one's per-op profile is measured and its
accuracy checked on the board itself. Writing the package is the caller's (``edgepack.bundle``).

On an emulated board (an arm64 userland under qemu) nothing about speed is measured: candidates are
ranked by the predictor, labelled so everywhere; their accuracy is still checked on the board.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from edgepack.compress.parallel import BuilderSetup, ParallelBuilder
from edgepack.compress.plan import CompressionPlan
from edgepack.data import Dataset, random_dataset
from edgepack.errors import EdgepackError, UsageError
from edgepack.latency import LatencySource
from edgepack.measurer import Job, Measurer
from edgepack.model import ModelHandle
from edgepack.predict import Predictor
from edgepack.profiles import DeviceProfile
from edgepack.records import Purpose, Records, default_cache_dir
from edgepack.runners.base import RunRequest
from edgepack.runners.conditions import Judge
from edgepack.runners.factory import SshOptions, runners_for
from edgepack.search.builder import CandidateBuilder
from edgepack.search.confirm import confirm
from edgepack.search.estimate import estimate
from edgepack.search.result import BuildOptions, BuildResult, SourceModel
from edgepack.search.space import formats_for, plans_for
from edgepack.search.strategy import Candidate, Strategy
from edgepack.toolchains import NO_EDGETPU_COMPILER

__all__ = ["Build", "BuildOptions", "BuildResult", "build"]


class DeviceCheckFailed(EdgepackError):
    """The chosen artifact could not be run on the board with the held-out samples: nothing is packaged."""


class Build:
    """One run of the loop; ``run()`` returns the result. Progress lines go to ``say``."""

    def __init__(self, handle: ModelHandle, profile: DeviceProfile, options: BuildOptions, ssh: SshOptions,
                 calib: Dataset | None, eval_data: Dataset | None, say: Callable[[str], None]) -> None:
        from edgepack.convert.convert import require_static_inputs

        require_static_inputs(handle)
        self.handle, self.profile, self.say = handle, profile, say
        self.notes: list[str] = []
        if options.constraints.max_size_mb is None:
            options = replace(options, constraints=replace(options.constraints,
                                                           max_size_mb=float(profile.memory_budget_mb)))
            self.notes.append(f"size limit: the {profile.name} profile's memory budget, "
                              f"{profile.memory_budget_mb:g} MB (--max-size-mb to change)")
        if "tflite-edgetpu" in profile.runtimes:
            self.notes.append(f"{NO_EDGETPU_COMPILER}: the candidates are measured with the TFLite interpreter on "
                              "the host CPU of the board")
        mcu = profile.microcontroller
        if mcu is not None and options.constraints.max_ram_mb is None:
            options = replace(options, constraints=replace(options.constraints,
                                                           max_ram_mb=(mcu.sram_kb + mcu.psram_kb) / 1024))
            self.notes.append(f"SRAM limit: the {profile.name} profile's {mcu.sram_kb + mcu.psram_kb:g} KB for the "
                              "arena and the firmware (--max-sram-kb to change)")
        self.options = options
        self.calib, self.eval_data, calibrated = held_out_data(handle, calib, eval_data, self.notes)
        self.plans = plans_allowed(handle, profile, options, calibrated, self.notes)
        cache = options.cache_dir or default_cache_dir()
        self.records = Records(cache)
        if self.records.skipped:
            self.notes.append(f"{self.records.skipped} line(s) of {self.records.path} are not records this "
                              "version reads (damaged or from another version): skipped")
        limit = options.constraints.max_accuracy_drop
        setup = BuilderSetup(handle, profile, self.calib, self.eval_data, cache, calibrated,
                             1.0 if limit is None else limit, options.distill_epochs, options.check)
        self.artifacts = ParallelBuilder(setup, options.jobs, say)
        self.notes.extend([self.artifacts.note] if self.artifacts.note else [])
        self.builder = CandidateBuilder(self.artifacts, profile, options.constraints.max_accuracy_drop, say)
        self.runners = runners_for(profile, ssh, say)

    def run(self) -> BuildResult:
        from edgepack.inspection import summarize_model

        measurer: Measurer | None = None
        try:  # the Measurer connects to every board: a build that ends there still closes its workers
            measurer = Measurer(self.runners, self.records, self.profile.name, self.say,
                                Judge.for_profile(self.profile))
            measurer.set_aside_emulated()
            emulated = measurer.emulated
            if emulated:
                self.notes.append("the board is emulated (an arm64 userland under qemu): latencies are the "
                                  "predictor's, not measured; accuracy, the package and deploy are the board's own")
            summary, _ = summarize_model(self.handle)
            candidates = [Candidate(p, *estimate(p, summary, self.profile), built=False) for p in self.plans]
            o = self.options
            strategy = Strategy(candidates, Predictor(), o.constraints, o.objective, o.max_measurements,
                                source_format=self.handle.format.value)
            self.say(f"searching {len(candidates)} candidates ({len({p.artifact for p in self.plans})} artifacts) "
                     f"for {self.profile.name}, measuring on {measurer.where}")
            while batch := strategy.propose(measurer.width):
                self.builder.build(batch, candidates)
                ready = [c for c in batch if c.built and not c.error and not c.skipped
                         and not c.known_blockers(o.constraints)]
                if emulated:
                    self._rank(ready, strategy, next(iter(measurer.boards)))
                else:
                    self._measure(ready, strategy, measurer)
            if not emulated:
                confirm(strategy, measurer, self._job, o.confirm_rounds, self.say)
            self.notes.extend(f"board {board} dropped: {why}" for board, why in measurer.dropped.items())
            result = BuildResult(self.profile, measurer.where, candidates, strategy.best(), self.builder.built,
                                 o.constraints, o.objective, self._source(), findings=strategy.findings,
                                 notes=self.notes, predictor=strategy.predictor, preprocessing=o.preprocessing)
            self._finish(result, strategy, measurer)
            result.counts = measurer.counts
            return result
        finally:
            if measurer is not None:
                measurer.close()
            self.artifacts.close()

    def _job(self, c: Candidate, repeat: int = 0, board: str | None = None,
             purpose: Purpose = Purpose.LATENCY) -> Job:
        from edgepack.profiling import held_out_inputs

        bench, o = self.profile.benchmark, self.options
        artifact = self.builder.built[c.plan.artifact].artifact
        request = RunRequest(artifact.path, threads=c.plan.threads,
                             warmup=bench.warmup if o.warmup is None else o.warmup, runs=o.runs or bench.runs,
                             op_profile=purpose is Purpose.OP_PROFILE, timeout_s=o.timeout_s,
                             inputs=held_out_inputs(self.handle, artifact, self.eval_data),
                             delegate=self.profile.vela.delegate if self.profile.vela else None)
        return Job(request, artifact.sha256, purpose, repeat, board)

    def _measure(self, batch: list[Candidate], strategy: Strategy, measurer: Measurer) -> None:
        for c in batch:
            c.predicted_ms = strategy.predictor.latency_ms(c.features)
        for c, outcome in zip(batch, measurer.measure([self._job(c) for c in batch]), strict=True):
            count = sum(x.measured or bool(x.error and x.built) for x in strategy.candidates) + 1
            p50 = outcome.result.p50_ms if outcome.ok and outcome.result else None
            if p50 is None:
                c.error = f"measurement failed: {outcome.error or 'no latency in the result'}"
                self.say(f"measure {count:>2}  {c.plan.label}: FAILED: {outcome.error}")
                continue
            c.measurement, c.board, c.p90_ms = outcome.result, outcome.board, outcome.result.p90_ms
            c.latency_source, c.latency_label = outcome.result.source, outcome.result.latency_source
            c.unstable = outcome.result.unstable
            strategy.observe(c, p50, outcome.result.peak_rss_mb)
            where = f" on {outcome.board}" if len(measurer.all_boards) > 1 else ""
            kind = ("" if c.latency_source is LatencySource.MEASURED else f", {c.latency_label}") + (
                ", UNSTABLE: judged by its p90" if c.unstable else "")
            self.say(f"measure {count:>2}  {c.plan.label}: p50 {p50:.3f} ms (predicted {c.predicted_ms:.3f}{kind})"
                     f"{where}{' [recorded]' if outcome.recorded else ''}")

    def _rank(self, batch: list[Candidate], strategy: Strategy, board: str) -> None:
        for c in batch:
            strategy.rank_by_prediction(c)
            c.board = board
            self.say(f"rank      {c.plan.label}: ~{c.latency_ms:.3f} ms predicted (emulated board: not measured)")

    def _finish(self, result: BuildResult, strategy: Strategy, measurer: Measurer) -> None:
        from edgepack.device_accuracy import DeviceAccuracy, check_on_device
        from edgepack.package import pareto_front

        for c in result.candidates:
            if not c.measured:
                c.predicted_ms = strategy.predictor.latency_ms(c.features)
            if c.built and not c.error:
                result.blockers[c.plan.key] = strategy.blockers(c, predicted=not c.measured)
        measured = [c for c in result.candidates if c.measured]
        front = pareto_front([(c.size_mb, c.latency_ms or 0.0, c.accuracy_drop or 0.0) for c in measured])
        result.pareto = {c.plan.key for c, on in zip(measured, front, strict=True) if on}
        chosen = result.chosen
        if chosen is None:
            return
        if self.profile.is_microcontroller:
            self.say(f"chosen {chosen.plan.label} by {chosen.latency_label}")
            result.op_profile = {"unavailable": "a microcontroller: TFLite Micro's times here are this machine's"
                                 + ("; Vela's cycles per op are in vela_per-layer.csv" if self.profile.compiler
                                    else "")}
        elif measurer.emulated:
            self.say(f"chosen {chosen.plan.label} by predicted latency")
            result.op_profile = {"unavailable": "the board is emulated: per-op times would be the emulator's"}
            result.environment = measurer.environments.get(next(iter(measurer.boards)), {})
        else:
            self.say(f"chosen {chosen.plan.label}; measuring its per-op profile")
            profiled = measurer.measure([self._job(chosen, purpose=Purpose.OP_PROFILE)])[0]
            result.op_profile = profiled.result.op_profile if profiled.ok and profiled.result else None
        delegate = chosen.measurement.get("delegate") if chosen.measurement else None
        if isinstance(delegate, dict) and delegate.get("loaded") is False:
            result.findings.append(f"the NPU's delegate {delegate.get('path')} {delegate.get('why')}; the NPU's "
                                   "figures are Vela's estimates (in the package)")
        names = [s.name for s in self.handle.inputs]
        result.sample = self.eval_data.batch(names, 0)[0] if len(names) == 1 else None
        if self.options.skip_device_check:
            result.device_accuracy = DeviceAccuracy(skipped="--skip-device-check")
            return
        check = check_on_device(self.builder.built[chosen.plan.artifact].artifact, chosen.plan.threads,
                                self.eval_data, measurer, self.artifacts.local.source, self.options.check.kinds,
                                self.options.timeout_s, self.say)
        if not check.ran:
            raise DeviceCheckFailed(f"the accuracy check on the board could not run ({check.error}): no package "
                                    "written", "fix the board and build again (measurements are in the records), "
                                    "or --skip-device-check to package without it")
        result.device_accuracy = check
        if chosen.accuracy_drop is not None and check.accuracy_drop_pts is not None \
                and abs(check.accuracy_drop_pts - chosen.accuracy_drop) > 0.5:
            result.findings.append("accuracy on the board differs from the host check by "
                                   f"{check.accuracy_drop_pts - chosen.accuracy_drop:+.2f} points")

    def _source(self) -> SourceModel:
        h = self.handle
        return SourceModel(h.name, h.source, h.sha256, [s.name for s in h.inputs])


def held_out_data(handle: ModelHandle, calib: Dataset | None, eval_data: Dataset | None,
                  notes: list[str]) -> tuple[Dataset, Dataset, bool]:
    """(calibration, held-out, calibrated?): without --calib, random inputs (no int8, no pruning);
    without --eval, the last fifth of --calib held out."""
    if calib is None:
        notes.append("no --calib: int8 and pruning need your data and were left out; accuracy is "
                     "top-1 agreement with the original on random inputs")
        return random_dataset(handle.inputs, 64), eval_data or random_dataset(handle.inputs, 64, seed=1), False
    if eval_data is None:
        calib, eval_data = calib.holdout(16, min_held_out=4)
        notes.append(f"no --eval: the last {len(eval_data)} calibration samples were held out to check each candidate")
    return calib, eval_data, True


def plans_allowed(handle: ModelHandle, profile: DeviceProfile, o: BuildOptions, calibrated: bool,
                  notes: list[str]) -> list[CompressionPlan]:
    """Every plan the profile and the flags allow, the source file as given first when the device runs it."""
    source = source_as_given(handle)
    plans = plans_for(profile, o.prune_ratios, formats=o.formats, precisions=o.precisions, threads=o.threads,
                      source=source)
    if source and source[1] != "fp32" and source[0] in formats_for(profile) and not any(p.as_given for p in plans):
        notes.append(f"the model as given ({source[0]} {source[1]}) is not a candidate: {profile.name} with these "
                     f"flags allows no {source[1]} {source[0]}")
    if not calibrated:
        if profile.precisions.required == ["int8"] and not any(p.as_given for p in plans):
            raise UsageError(f"{profile.name} runs int8 models only, and int8 is calibrated on your data",
                             "give --calib with samples of the model's input")
        plans = [p for p in plans if p.as_given or (not p.precision.calibrated and not p.prune_ratio)]
    if len(handle.inputs) != 1 and any(p.prune_ratio for p in plans):
        notes.append("pruning handles single-input models: left out")
        plans = [p for p in plans if not p.prune_ratio]
    if not plans:
        raise UsageError(f"nothing to search: {profile.name} allows no plan with these flags",
                         "widen --formats/--precisions, or give --calib for int8")
    return plans


def source_as_given(handle: ModelHandle) -> tuple[str, str] | None:
    """(format, precision) of a source a device may run as the file it is: a .tflite, or an .onnx whose
    declared input shapes are the ones measured (one with dimensions to fix is not the file as given).
    The precision is read from the graph: int8, fp16 (a TFLite model's fp16 weights too), dynamic, fp32."""
    import tempfile

    from edgepack.convert.routes import onnx_of
    from edgepack.inspection import summarize_model
    from edgepack.model import ModelFormat

    if handle.format not in (ModelFormat.ONNX, ModelFormat.TFLITE):
        return None
    if handle.format is ModelFormat.ONNX:
        with tempfile.TemporaryDirectory(prefix="edgepack-source-") as work:
            if onnx_of(handle, Path(work))[0] != handle.path:
                return None
    summary, _ = summarize_model(handle)
    precision = summary.precision
    if precision == "fp32" and "fp16" in summary.weight_storage:
        precision = "fp16"
    return handle.format.value, precision


def build(handle: ModelHandle, profile: DeviceProfile, options: BuildOptions, ssh: SshOptions,
          calib: Dataset | None = None, eval_data: Dataset | None = None,
          say: Callable[[str], None] = lambda _: None) -> BuildResult:
    return Build(handle, profile, options, ssh, calib, eval_data, say).run()
