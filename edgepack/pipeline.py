"""``edgepack build``: the search loop, from a model and a device to a package.

The strategy proposes a candidate; if its artifact is not built yet it is built (from the artifact
cache when the same plan was built before) and checked against the original on held-out data, which
reveals its real size and accuracy; a built candidate that the constraints allow is measured on the
device (from the records when this artifact was measured on this device before); the predictor is
refitted; again, until the strategy is done. Then the chosen candidate's per-op profile is measured
and the package is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from edgepack.analysis.graph import GraphSummary
from edgepack.analysis.roofline import estimate_latency
from edgepack.artifact import Artifact
from edgepack.compress.quantize import Check
from edgepack.compress.replay import BuildFailed, BuiltArtifact, PlanBuilder
from edgepack.data import DataError, Dataset, random_dataset
from edgepack.model import ModelHandle
from edgepack.predict import Features, Predictor
from edgepack.profiles import DeviceProfile
from edgepack.records import RecordKey, Records, default_cache_dir
from edgepack.runners.base import Measurement, RunRequest
from edgepack.runners.factory import SshOptions, runners_for
from edgepack.runners.pool import DevicePool
from edgepack.search.space import PRUNE_RATIOS, CompressionPlan, Constraints, plans_for
from edgepack.search.strategy import Candidate, Strategy

CONTENDERS = 3  # re-measured side by side at the end
CONTENDER_GAP = 0.15  # ... when measured within this of the best: a gap one measurement's noise can close
SIZE_FACTOR = {"fp32": 1.0, "fp16": 0.5, "int8": 0.27, "dynamic": 0.27}  # file size against fp32, before building


@dataclass
class BuildOptions:
    constraints: Constraints = field(default_factory=Constraints)
    objective: str = "latency"  # or "size"
    max_measurements: int = 12
    formats: list[str] | None = None
    precisions: list[str] | None = None
    threads: list[int] | None = None
    prune_ratios: tuple[float, ...] = PRUNE_RATIOS
    runs: int | None = None
    warmup: int | None = None
    timeout_s: float = 300.0
    output_dir: Path = Path("dist")
    cache_dir: Path | None = None
    distill_epochs: int = 10
    preprocessing: dict[str, Any] | None = None  # how image files became the calibration data
    confirm_rounds: int = 2  # the closest contenders are measured this many more times
    check: Check = field(default_factory=Check)  # output kinds, --metric, the value-error bound


@dataclass
class BuildResult:
    device: DeviceProfile
    where: str  # the boards, or "local (this machine, not a board)"
    candidates: list[Candidate]
    chosen: Candidate | None
    built: dict[tuple[str, str, float], BuiltArtifact]
    constraints: Constraints
    objective: str
    new: int = 0
    cached: int = 0
    package: Path | None = None
    findings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    pareto: set[str] = field(default_factory=set)  # plan keys on the measured Pareto front
    blockers: dict[str, list[str]] = field(default_factory=dict)  # plan key -> what rules it out
    predictor: Predictor | None = None  # as fitted at the end
    device_accuracy: dict[str, Any] | None = None  # the chosen one, checked on the board itself

    @property
    def predictor_errors(self) -> list[float]:
        """Relative error of each latency prediction made just before the measurement that checked it."""
        return [abs(c.predicted_ms - c.latency_ms) / c.latency_ms for c in self.candidates
                if c.measured and c.predicted_ms is not None and c.latency_ms]

    def row(self, c: Candidate) -> dict[str, Any]:
        built = self.built.get(c.plan.artifact)
        status = "measured" if c.measured else "failed" if c.error else "skipped" if c.skipped else \
            "predicted" if c.built else "not built"
        return {"plan": c.plan.to_dict(), "label": c.plan.label, "size_mb": c.size_mb if c.built else None,
                "latency_ms": c.latency_ms, "p90_ms": c.p90_ms, "predicted_ms": c.predicted_ms,
                "peak_rss_mb": c.peak_rss_mb, "accuracy_drop": c.accuracy_drop,
                "accuracy": (built.fidelity.get("accuracy") if built else None),
                "feasible": c.built and not c.error and not self.blockers.get(c.plan.key),
                "blocked_by": self.blockers.get(c.plan.key, []) or ([c.skipped] if c.skipped else []),
                "status": status, "error": c.error,
                "pareto": c.plan.key in self.pareto, "chosen": self.chosen is c}

    def to_dict(self) -> dict[str, Any]:
        errors = self.predictor_errors
        chosen = self.row(self.chosen) if self.chosen else None
        return {
            "package": str(self.package) if self.package else None,
            "device": self.device.name, "measured_on": self.where, "objective": self.objective,
            "constraints": self.constraints.__dict__,
            "chosen": chosen,
            "candidates": [self.row(c) for c in self.candidates],
            "measurements": {"new": self.new, "cached": self.cached},
            "checked_on_device": self.device_accuracy,
            "predictor": {"measured_candidates": len(errors),
                          "median_error": sorted(errors)[len(errors) // 2] if errors else None,
                          "within_10pct": sum(e <= 0.10 for e in errors) / len(errors) if errors else None},
            "findings": self.findings, "notes": self.notes,
        }


def _estimate(c: CompressionPlan, summary: GraphSummary, profile: DeviceProfile) -> tuple[Features, float]:
    """Features and size before the artifact exists. Channel pruning by r keeps about (1-r)^2 of the
    MACs and weights and (1-r) of the activations; int8 moves a quarter of the activation bytes."""
    keep = (1 - c.prune_ratio) ** 2
    arithmetic = "fp32" if c.precision in ("dynamic", "fp16") and profile.device_class == "cpu" else c.precision
    activations = (1 - c.prune_ratio) * (0.25 if c.precision == "int8" else 1.0)
    scaled = replace(summary, layers=[replace(layer, macs=int(layer.macs * keep), precision=arithmetic,
                                              weight_bytes=int(layer.weight_bytes * keep * SIZE_FACTOR[c.precision]),
                                              input_bytes=int(layer.input_bytes * activations),
                                              output_bytes=int(layer.output_bytes * activations))
                                      for layer in summary.layers])
    roofline = estimate_latency(scaled, profile, c.threads).latency_ms
    size = summary.weight_bytes * keep * SIZE_FACTOR[c.precision]
    return Features(roofline, len(summary.layers), arithmetic, int(size),
                    int(summary.peak_activation_bytes * activations), c.format, c.threads, c.precision,
                    c.prune_ratio), size / 1e6


def features_of(artifact_path: Path, fmt: str, plan: CompressionPlan, profile: DeviceProfile) -> Features:
    from edgepack.inspection import summarize_model
    from edgepack.model import load_model

    summary, _ = summarize_model(load_model(artifact_path))
    return Features(estimate_latency(summary, profile, plan.threads).latency_ms, len(summary.layers),
                    summary.precision, summary.weight_bytes, summary.peak_activation_bytes, fmt, plan.threads,
                    plan.precision, plan.prune_ratio)


class Build:
    """One run of the loop; ``run()`` returns the result. Progress lines go to ``say``."""

    def __init__(self, handle: ModelHandle, profile: DeviceProfile, options: BuildOptions, ssh: SshOptions,
                 calib: Dataset | None, eval_data: Dataset | None, say: Callable[[str], None]) -> None:
        from edgepack.convert.convert import require_static_inputs

        require_static_inputs(handle)
        self.handle, self.profile, self.options, self.say = handle, profile, options, say
        self.notes: list[str] = []
        if options.constraints.max_size_mb is None:
            options = replace(options, constraints=replace(options.constraints,
                                                           max_size_mb=float(profile.memory_budget_mb)))
            self.options = options
            self.notes.append(f"size limit: the {profile.name} profile's memory budget, "
                              f"{profile.memory_budget_mb:g} MB (--max-size-mb to change)")
        self.calib, self.eval_data, calibrated = self._data(calib, eval_data)
        self.plans = self._plans(calibrated)
        cache = options.cache_dir or default_cache_dir()
        self.records = Records(cache)
        if self.records.skipped:
            self.notes.append(f"{self.records.skipped} line(s) of {self.records.path} are not records this "
                              "version reads (damaged or from another version): skipped")
        self.builder = PlanBuilder(handle, profile, self.calib, self.eval_data, cache, calibrated=calibrated,
                                   max_accuracy_drop=options.constraints.max_accuracy_drop or 1.0,
                                   distill_epochs=options.distill_epochs, say=say, check=options.check)
        self.runners = runners_for(profile, ssh, say)
        self.built: dict[tuple[str, str, float], BuiltArtifact] = {}
        self.failures: dict[tuple[str, str, float], str] = {}
        self.new = self.cached = 0

    def _data(self, calib: Dataset | None, eval_data: Dataset | None) -> tuple[Dataset, Dataset, bool]:
        if calib is None:
            self.notes.append("no --calib: int8 and pruning need your data and were left out; accuracy is "
                              "top-1 agreement with the original on random inputs")
            calib = random_dataset(self.handle.inputs, 64)
            return calib, eval_data or random_dataset(self.handle.inputs, 64, seed=1), False
        if eval_data is None:
            if len(calib) < 20:
                raise DataError(f"calibration data has {len(calib)} samples: too few to hold some out for "
                                "checking accuracy", "give at least 20 samples, or --eval with held-out data")
            calib, eval_data = calib.split(int(len(calib) * 0.8))
            self.notes.append(f"no --eval: the last {len(eval_data)} calibration samples were held out to check "
                              "each candidate")
        return calib, eval_data, True

    def _plans(self, calibrated: bool) -> list[CompressionPlan]:
        o = self.options
        plans = plans_for(self.profile, o.prune_ratios, formats=o.formats, precisions=o.precisions, threads=o.threads)
        if not calibrated:
            plans = [p for p in plans if p.precision != "int8" and not p.prune_ratio]
        if len(self.handle.inputs) != 1 and any(p.prune_ratio for p in plans):
            self.notes.append("pruning handles single-input models: left out")
            plans = [p for p in plans if not p.prune_ratio]
        if not plans:
            from edgepack.errors import UsageError

            raise UsageError(f"nothing to search: {self.profile.name} allows no plan with these flags",
                             "widen --formats/--precisions, or give --calib for int8")
        return plans

    # -- the loop ---------------------------------------------------------------------------------------
    def run(self) -> BuildResult:
        from edgepack.inspection import summarize_model

        pool = DevicePool(self.runners)
        try:
            where = ", ".join(r.label for r in self.runners)
            if where == "local":
                where = "local (this machine, not a board)"
            self.where = where
            self.identities = {r.label: f"{self.profile.name}@{r.identity()}" for r in self.runners}
            summary, _ = summarize_model(self.handle)
            candidates = []
            for plan in self.plans:
                features, size = _estimate(plan, summary, self.profile)
                candidates.append(Candidate(plan, features, size, built=False))
            o = self.options
            strategy = Strategy(candidates, Predictor(), o.constraints, o.objective, o.max_measurements,
                                source_format=self.handle.format.value)
            self.say(f"searching {len(candidates)} candidates ({len({p.artifact for p in self.plans})} artifacts) "
                     f"for {self.profile.name}, measuring on {where}")
            while (candidate := strategy.propose()) is not None:
                if not candidate.built:
                    self._build(candidate, candidates)
                    continue
                self._measure(candidate, strategy, pool)
            result = BuildResult(self.profile, where, candidates, strategy.best(), self.built, o.constraints,
                                 o.objective, findings=strategy.findings, notes=self.notes,
                                 predictor=strategy.predictor)
            self._finish(result, strategy, pool)
            result.new, result.cached = self.new, self.cached
            return result
        finally:
            pool.close()

    def _build(self, candidate: Candidate, candidates: list[Candidate]) -> None:
        plan = candidate.plan
        if plan.prune_ratio and self._pruning_too_lossy(plan.prune_ratio, candidates):
            return
        twins = [c for c in candidates if c.plan.artifact == plan.artifact]
        built = self._built(plan)
        if built is None:
            for c in twins:
                c.error = f"build failed: {self.failures[plan.artifact]}"
            return
        for c in twins:
            c.built, c.size_mb, c.accuracy_drop = True, built.size_mb, built.accuracy_drop
            c.features = features_of(built.artifact.path, built.artifact.format, c.plan, self.profile)

    def _built(self, plan: CompressionPlan) -> BuiltArtifact | None:
        """Build (or take from the artifact cache) and say so; None when it cannot be built."""
        start = time.perf_counter()
        try:
            built = self.builder.build(plan)
        except BuildFailed as exc:
            self.failures[plan.artifact] = str(exc)
            self.say(f"build  {plan.label.rsplit(' x', 1)[0]}: FAILED: {exc}")
            return None
        self.built[plan.artifact] = built
        drop = "-" if built.accuracy_drop is None else f"{built.accuracy_drop:.2f} pts"
        self.say(f"build  {plan.label.rsplit(' x', 1)[0]}: {built.size_mb:.3f} MB, accuracy drop {drop} "
                 f"({time.perf_counter() - start:.1f} s)")
        return built

    def _pruning_too_lossy(self, ratio: float, candidates: list[Candidate]) -> bool:
        """Pruning's own loss, from the pruned fp32 ONNX model (cheap: no conversion): when it alone is
        over the accuracy limit, no format or precision of this ratio is built."""
        limit = self.options.constraints.max_accuracy_drop
        if limit is None:
            return False
        probe = CompressionPlan("onnx", "fp32", ratio)
        built = self.built.get(probe.artifact) or self._built(probe)
        if built is None and probe.artifact in self.failures:
            reason = f"pruning {ratio:.0%} alone fails: {self.failures[probe.artifact]}"
        elif built is None or built.accuracy_drop is None or built.accuracy_drop <= limit:
            return False
        else:
            reason = (f"pruning {ratio:.0%} alone loses {built.accuracy_drop:.2f} accuracy points "
                      f"(limit {limit:g}): not built")
        for c in candidates:
            if c.plan.prune_ratio == ratio and not c.built:
                c.skipped = reason
        return True

    def _request(self, candidate: Candidate, op_profile: bool = False) -> RunRequest:
        bench = self.profile.benchmark
        artifact = self.built[candidate.plan.artifact].artifact
        return RunRequest(artifact.path, threads=candidate.plan.threads,
                          warmup=bench.warmup if self.options.warmup is None else self.options.warmup,
                          runs=self.options.runs or bench.runs, op_profile=op_profile,
                          timeout_s=self.options.timeout_s, inputs=self._inputs_file(artifact))

    def _inputs_file(self, artifact: Artifact) -> Path | None:
        """A held-out sample in the artifact's layout when the model has inputs fed whole (their values
        are the user's, never the harness's random ones); None: random inputs of the file's shapes."""
        if all(s.is_sample for s in self.handle.inputs):
            return None
        import numpy as np

        names = [s.name for s in self.handle.inputs]
        sample = dict(zip(names, self.eval_data.batch(names, 0), strict=True))
        path = artifact.path.parent / "inputs.npz"
        if not path.exists():
            np.savez(path, **{b.name: b.from_source(sample[b.source_name]) for b in artifact.inputs})
        return path

    def _key(self, request: RunRequest, identity: str, repeat: int, purpose: str = "") -> RecordKey:
        from edgepack.runners.harness import HARNESS_VERSION

        runtime = "onnxruntime" if request.model.suffix == ".onnx" else "tflite"
        purpose = purpose or ("+op-profile" if request.op_profile else "")
        sha = self.built_sha[request.model]
        return RecordKey(sha, identity, runtime + purpose, request.threads, HARNESS_VERSION, repeat)

    @property
    def built_sha(self) -> dict[Path, str]:
        return {b.artifact.path: b.artifact.sha256 for b in self.built.values()}

    def _recorded(self, request: RunRequest, repeat: int, purpose: str = "") -> dict[str, Any] | None:
        """What the records hold for this request on any board of the pool (counted as cached)."""
        for identity in self.identities.values():
            found = self.records.get(self._key(request, identity, repeat, purpose))
            if found is not None:
                self.cached += 1
                return found
        return None

    def measure(self, request: RunRequest, pool: DevicePool, repeat: int = 0
                ) -> tuple[dict[str, Any] | None, str | None, bool]:
        """(harness result, error, from the records?) for one request."""
        found = self._recorded(request, repeat)
        if found is not None:
            return found, None, True
        measurement: Measurement = pool.run([request])[0]
        self.new += 1
        if not measurement.ok:
            return None, measurement.error, False
        result = {**measurement.result, "device": measurement.device}
        self.records.add(self._key(request, self.identities[measurement.device], repeat), result)
        return result, None, False

    def _measure(self, candidate: Candidate, strategy: Strategy, pool: DevicePool) -> None:
        candidate.predicted_ms = strategy.predictor.latency_ms(candidate.features)
        result, error, cached = self.measure(self._request(candidate), pool)
        count = sum(c.measured or bool(c.error and c.built) for c in strategy.candidates) + 1
        if error or result is None:
            candidate.error = f"measurement failed: {error}"
            self.say(f"measure {count:>2}  {candidate.plan.label}: FAILED: {error}")
            return
        latency = result["latency_ms"]
        candidate.p90_ms, candidate.result = latency.get("p90"), result
        strategy.observe(candidate, latency["p50"], result.get("peak_rss_mb"))
        self.say(f"measure {count:>2}  {candidate.plan.label}: p50 {latency['p50']:.3f} ms "
                 f"(predicted {candidate.predicted_ms:.3f}){' [recorded]' if cached else ''}")

    def _check_on_device(self, chosen: Candidate, pool: DevicePool) -> dict[str, Any] | None:
        """Run the held-out samples through the chosen artifact on the board; score the answers here."""
        import tempfile

        from edgepack.device_accuracy import score, write_inputs

        artifact = self.built[chosen.plan.artifact].artifact
        probe = RunRequest(artifact.path, threads=chosen.plan.threads)
        found = self._recorded(probe, 0, "+accuracy")
        if found is not None:
            return found["device_accuracy"]
        with tempfile.TemporaryDirectory(prefix="edgepack-check-") as tmp:
            inputs = Path(tmp) / "samples.npz"
            count = write_inputs(artifact, self.eval_data, inputs)
            where = "this machine" if self.where.startswith("local") else "the board"
            self.say(f"checking accuracy on {where}: {count} held-out samples through {chosen.plan.label}")
            measurement = pool.run([RunRequest(artifact.path, threads=chosen.plan.threads, warmup=0, runs=1,
                                               inputs=inputs, want_outputs=True, timeout_s=self.options.timeout_s)])[0]
        self.new += 1
        if not measurement.ok or not measurement.outputs:
            self.say(f"accuracy check on the device FAILED: {measurement.error}")
            return {"error": measurement.error}
        check = score(artifact, measurement.outputs, self.eval_data, count, self.builder.source,
                      self.options.check.kinds)
        self.records.add(self._key(probe, self.identities[measurement.device], 0, "+accuracy"),
                         {"device_accuracy": check, "device": measurement.device})
        return check

    # -- after the loop ---------------------------------------------------------------------------------
    def _confirm(self, strategy: Strategy, pool: DevicePool) -> None:
        """Measure the closest contenders again, side by side, and judge them by their median: one
        measurement on a busy board can be off by more than the gap between them."""
        best = strategy.best()
        if best is None or best.latency_ms is None or self.options.confirm_rounds < 1:
            return
        limit = best.latency_ms * (1 + CONTENDER_GAP)
        contenders = sorted((c for c in strategy.feasible_measured() if (c.latency_ms or 0) <= limit),
                            key=lambda c: c.latency_ms or 0.0)[:CONTENDERS]
        if len(contenders) < 2:
            return
        self.say(f"confirming {len(contenders)} contenders within {limit / best.latency_ms - 1:.0%} of the best: "
                 f"{self.options.confirm_rounds} more rounds each")
        results: dict[str, list[dict[str, Any]]] = {c.plan.key: [c.result] for c in contenders if c.result}
        for repeat in range(1, self.options.confirm_rounds + 1):
            for c in contenders:
                found, error, _ = self.measure(self._request(c), pool, repeat)
                if found is not None:
                    results[c.plan.key].append(found)
                else:
                    self.say(f"confirm {c.plan.label}: FAILED: {error}")
        for c in contenders:
            rounds = sorted(results[c.plan.key], key=lambda r: r["latency_ms"]["p50"])
            middle = rounds[(len(rounds) - 1) // 2]
            c.result, c.latency_ms, c.p90_ms = middle, middle["latency_ms"]["p50"], middle["latency_ms"].get("p90")
            c.result["p50_rounds_ms"] = [r["latency_ms"]["p50"] for r in results[c.plan.key]]
            self.say(f"confirm {c.plan.label}: p50 " + ", ".join(f"{v:.3f}" for v in c.result["p50_rounds_ms"])
                     + f" ms; median {c.latency_ms:.3f}")

    def _finish(self, result: BuildResult, strategy: Strategy, pool: DevicePool) -> None:
        from edgepack.package import pareto_front

        self._confirm(strategy, pool)
        result.chosen = strategy.best()
        for c in result.candidates:
            if not c.measured:
                c.predicted_ms = strategy.predictor.latency_ms(c.features)
            if c.built and not c.error:
                result.blockers[c.plan.key] = strategy.blockers(c, predicted=not c.measured)
        measured = [c for c in result.candidates if c.measured]
        front = pareto_front([(c.size_mb, c.latency_ms or 0.0, c.accuracy_drop or 0.0) for c in measured])
        result.pareto = {c.plan.key for c, on in zip(measured, front, strict=True) if on}
        if result.chosen is None:
            return
        self.say(f"chosen {result.chosen.plan.label}; measuring its per-op profile")
        op_result, _, _ = self.measure(self._request(result.chosen, op_profile=True), pool)
        result.device_accuracy = self._check_on_device(result.chosen, pool)
        if result.device_accuracy and result.chosen.accuracy_drop is not None \
                and "accuracy_drop_pts" in result.device_accuracy:
            gap = result.device_accuracy["accuracy_drop_pts"] - result.chosen.accuracy_drop
            if abs(gap) > 0.5:
                result.findings.append(f"accuracy on the board differs from the host check by {gap:+.2f} points")
        from edgepack.bundle import write_build_package

        result.package = write_build_package(self, result, op_result)
        self.say(f"package {result.package}")


def build(handle: ModelHandle, profile: DeviceProfile, options: BuildOptions, ssh: SshOptions,
          calib: Dataset | None = None, eval_data: Dataset | None = None,
          say: Callable[[str], None] = lambda _: None) -> BuildResult:
    return Build(handle, profile, options, ssh, calib, eval_data, say).run()
