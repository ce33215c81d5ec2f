"""``edgepack build``: the search loop, from a model and a device to a chosen, verified artifact.

The shape is TVM meta_schedule's: the strategy proposes a batch of candidates (as many as the pool has
boards); the builder makes the unbuilt ones into artifacts, side by side (each checked against the
original on held-out data, which gives its real size and accuracy); the boards time those the
constraints still allow, on different boards at once (from the records when timed before); then each
callback sees the batch (the strategy observes the figures and refits its predictor; progress is said).
Again, until the strategy is done. Then the closest contenders are confirmed on one board, and the
chosen one's per-op profile and its accuracy on the board itself are measured (edgepack.search.finish).
Writing the package is the caller's (``edgepack.bundle``).

What the boards can time is theirs to say: an emulated board (an arm64 userland under qemu) times an
emulator, so its candidates are ranked by the predictor, labelled so everywhere (their accuracy is still
checked on it); a microcontroller's toolchain estimates instead of timing, labelled so too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from edgepack.compress.builder import ArtifactBuilder, BuildFailed
from edgepack.data import Dataset
from edgepack.latency import LatencySource
from edgepack.measurer import Job, Measurer, Outcome
from edgepack.model import ModelHandle
from edgepack.predict import Predictor
from edgepack.profiles import DeviceProfile
from edgepack.records import Purpose, Records, default_cache_dir
from edgepack.runners.base import DEFAULT_TARGET_CI, HarnessResult, RunRequest
from edgepack.runners.conditions import Judge
from edgepack.runners.factory import SshOptions, runners_for
from edgepack.search import finish
from edgepack.search.candidate import Candidate, Latency, Status
from edgepack.search.confirm import confirm
from edgepack.search.estimate import estimate, features_of
from edgepack.search.memory import BoardMemory
from edgepack.search.options import BuildOptions
from edgepack.search.result import BoardTime, BuildResult, PredictorScore, SourceModel
from edgepack.search.setup import held_out_data, plans_allowed, profile_limits
from edgepack.search.strategy import Strategy, slower_sentence
from edgepack.stages import StageClock, StageTime

__all__ = ["Build", "BuildOptions", "BuildResult", "build"]

Say = Callable[[str], None]


@dataclass(frozen=True)
class Timed:
    """One candidate's figure from the boards, or why there is none."""

    candidate: Candidate
    outcome: Outcome


#: what sees each batch once it is built and timed (the strategy's observation, progress lines)
Callback = Callable[[list[Candidate], list[Timed]], None]


def search(strategy: Strategy, width: int, build_step: Callable[[list[Candidate]], None],
           time_step: Callable[[list[Candidate]], list[Timed]], callbacks: Sequence[Callback]) -> None:
    """propose -> build -> time -> callbacks, until the strategy proposes nothing."""
    while batch := strategy.propose(width):
        build_step(batch)
        ready = [c for c in batch if c.status is Status.PREDICTED and not c.measured
                 and not c.known_blockers(strategy.constraints)]
        timed = time_step(ready)
        for callback in callbacks:
            callback(batch, timed)


class Build:
    """One run of the loop; ``run()`` returns the result. Progress lines go to ``say``."""

    def __init__(self, handle: ModelHandle, profile: DeviceProfile, options: BuildOptions, ssh: SshOptions,
                 calib: Dataset | None, eval_data: Dataset | None, say: Say) -> None:
        from edgepack.convert.convert import require_static_inputs

        require_static_inputs(handle)
        self.handle, self.profile, self.say = handle, profile, say
        self.notes: list[str] = []
        self.options = o = profile_limits(options, profile, self.notes)
        self.calib, self.eval_data, calibrated = held_out_data(handle, calib, eval_data, self.notes)
        self.plans = plans_allowed(handle, profile, o, calibrated, self.notes)
        cache = o.cache_dir or default_cache_dir()
        self.records, self.memory, self.clock = Records(cache), BoardMemory(cache), StageClock()
        if self.records.skipped:
            self.notes.append(f"{self.records.skipped} line(s) of {self.records.path} are not records this "
                              "version reads (damaged or from another version): skipped")
        limit = o.constraints.max_accuracy_drop
        self.builder = ArtifactBuilder(handle, profile, self.calib, self.eval_data, cache, calibrated=calibrated,
                                       max_accuracy_drop=1.0 if limit is None else limit,
                                       distill_epochs=o.distill_epochs, check=o.check,
                                       jobs=o.jobs or os.cpu_count() or 1, say=say, clock=self.clock)
        self.notes.extend([self.builder.note] if self.builder.note else [])
        self.runners = runners_for(profile, ssh, say)
        self._probed = False
        self.no_ops: set[str] = set()  # formats whose runtime on these boards gives no per-op times

    def run(self) -> BuildResult:
        from edgepack.inspection import summarize_model

        measurer: Measurer | None = None
        try:  # the Measurer connects to every board: a build that ends there still closes its workers
            measurer = Measurer(self.runners, self.records, self.profile.name, self.say,
                                Judge.for_profile(self.profile))
            measurer.set_aside_emulated()
            if not measurer.can_time:
                self.notes.append("the board is emulated (an arm64 userland under qemu): latencies are the "
                                  "predictor's, not measured; accuracy, the package and deploy are the board's own")
            summary, _ = summarize_model(self.handle)
            o = self.options
            history = self.memory.load(set(measurer.identities.values()), self.handle.sha256) \
                if measurer.can_time else []
            strategy = Strategy([Candidate(p, *estimate(p, summary, self.profile)) for p in self.plans],
                                Predictor(history=history), o.constraints, o.objective, o.max_measurements,
                                source_format=self.handle.format.artifact_format, exhaustive=o.exhaustive,
                                budget_s=o.budget_minutes * 60 if o.budget_minutes else None,
                                board_seconds=lambda: measurer.counts.seconds)
            if history:
                self.say(f"predictor: starting from {len(history)} figure(s) measured on this board by earlier builds")
            self.say(f"searching {len(self.plans)} candidates ({len({p.artifact for p in self.plans})} artifacts) "
                     f"for {self.profile.name}, measuring on {measurer.where}")
            steps = Steps(self, strategy, measurer)
            search(strategy, measurer.width, steps.build, steps.time, [steps.observe])
            if measurer.can_time:
                for done in confirm(strategy, measurer, self._job, o.confirm_rounds, self.say):
                    done.apply()
            self.notes.extend(f"board {board} dropped: {why}" for board, why in measurer.dropped.items())
            self.clock.add(StageTime("measure", measurer.counts.seconds, "on the boards, during the search"))
            return self._result(strategy, measurer)
        finally:
            if measurer is not None:
                measurer.close()
            self.builder.close()

    def _result(self, strategy: Strategy, measurer: Measurer) -> BuildResult:
        chosen, o = strategy.best(), self.options
        slower = finish.why_slower(list(dict.fromkeys(strategy.slower)), measurer, self._job, self.no_ops, self.say) \
            if measurer.can_time else []
        explained = {slower_sentence(*pair) for pair, _ in slower}
        findings = [f for f in strategy.findings if f not in explained] + [s.sentence() for _, s in slower]
        profile = check = sample = None
        if chosen is not None:
            if chosen.latency and not chosen.latency.source.timed:
                self.say(f"chosen {chosen.plan.label} by predicted latency")
            elif chosen.latency and chosen.latency.source.estimated:
                self.say(f"chosen {chosen.plan.label} by {chosen.latency.label}")
            profile = finish.op_profile(chosen, measurer, self._job(chosen, purpose=Purpose.OP_PROFILE), self.say)
            names = [s.name for s in self.handle.inputs]
            sample = self.eval_data.batch(names, 0)[0] if len(names) == 1 else None
            check = finish.accuracy_on_board(chosen, self.builder, measurer, self.eval_data, o, self.say)
            findings += finish.findings_of(chosen, check)
        h = self.handle
        return BuildResult(self.profile, measurer.where, finish.candidate_rows(strategy, chosen), o.constraints,
                           o.objective, SourceModel(h.name, h.source, h.sha256, tuple(s.name for s in h.inputs)),
                           measurer.counts, tuple(findings), tuple(self.notes), PredictorScore(tuple(
                               abs(c.predicted_ms - c.latency_ms) / c.latency_ms for c in strategy.candidates
                               if c.latency_measured and c.predicted_ms is not None and c.latency_ms)),
                           check, profile, None if measurer.can_time else measurer.environment, sample=sample,
                           preprocessing=o.preprocessing, predictor=strategy.predictor, stages=self.clock.times,
                           board_time=BoardTime.of(strategy, measurer.counts.seconds, sum(self._runs())),
                           slower=tuple(s for _, s in slower))

    def _runs(self) -> tuple[int, int]:
        """(warm-up runs, timed runs at most) of one measurement: the user's, else the profile's."""
        bench, o = self.profile.benchmark, self.options
        return (bench.warmup if o.warmup is None else o.warmup), (o.runs or bench.runs)

    def _job(self, c: Candidate, repeat: int = 0, board: str | None = None,
             purpose: Purpose = Purpose.LATENCY, with_ops: bool = False) -> Job:
        from edgepack.profiling import held_out_inputs

        o = self.options
        assert c.artifact is not None
        artifact = c.artifact.artifact
        warmup, runs = self._runs()
        request = RunRequest(artifact.path, threads=c.plan.threads, warmup=warmup, runs=runs,
                             target_ci=None if o.runs else DEFAULT_TARGET_CI,  # the user's count: every run
                             op_profile=purpose is Purpose.OP_PROFILE or with_ops, timeout_s=o.timeout_s,
                             inputs=held_out_inputs(self.handle, artifact, self.eval_data),
                             delegate=self.profile.vela.delegate if self.profile.vela else None)
        return Job(request, artifact.sha256, purpose, repeat, board)


class Steps:
    """The loop's steps for one build: build a batch, time it on the boards (or rank it by the
    predictor, when they cannot time), observe what came back."""

    def __init__(self, build: Build, strategy: Strategy, measurer: Measurer) -> None:
        self.b, self.strategy, self.measurer = build, strategy, measurer
        self.profiled: set[tuple[str, str]] = set()  # (format, precision) whose per-op times were asked for

    def _learn_ops(self, c: Candidate) -> bool:
        """Whether to ask the board for this candidate's per-op times too: the first of each runtime and
        precision, where the boards give them (they teach the predictor each kind of kernel's speed)."""
        group = (c.plan.format.value, c.plan.precision.value)
        if group in self.profiled or c.plan.format.value in self.b.no_ops or self.measurer.op_profile_unavailable:
            return False
        self.profiled.add(group)
        return True

    def build(self, batch: list[Candidate]) -> None:
        """Every unbuilt candidate of ``batch`` built (and its twins: other thread counts); before the first
        pruned one, the pruning probe rules out the ratios not worth building."""
        b, every = self.b, self.strategy.candidates
        if not b._probed and any(c.plan.prune_ratio and not c.built for c in batch):
            b._probed = True
            ratios = sorted({c.plan.prune_ratio for c in every if c.plan.prune_ratio})
            for ratio, why in b.builder.probe(ratios, b.options.constraints.max_accuracy_drop).items():
                b.say(f"prune  {ratio:.0%}: {why}")
                for c in every:
                    if c.plan.prune_ratio == ratio and not c.built:
                        c.skip(why)
        todo = [c for c in batch if c.status is Status.NOT_BUILT]
        found = b.builder.build([c.plan for c in todo]) if todo else {}
        for key, built in found.items():
            for c in (c for c in every if c.plan.artifact == key and c.status is Status.NOT_BUILT):
                if isinstance(built, BuildFailed):
                    c.fail(f"build failed: {built}")
                else:
                    c.built_as(built, features_of(built.artifact.path, built.artifact.format, c.plan, b.profile))

    def time(self, ready: list[Candidate]) -> list[Timed]:
        if not self.measurer.can_time:
            board = next(iter(self.measurer.boards))
            for c in ready:
                self.strategy.rank_by_prediction(c, board)
                self.b.say(f"rank      {c.plan.label}: ~{c.latency_ms:.3f} ms predicted (emulated board: not measured)")
            return []
        jobs = []
        for c in ready:
            c.predicted_ms = self.strategy.predictor.latency_ms(c.features)
            jobs.append(self.b._job(c, with_ops=self._learn_ops(c)))
        outcomes = self.measurer.measure(jobs)
        return [Timed(c, outcome) for c, outcome in zip(ready, outcomes, strict=True)]

    def observe(self, batch: list[Candidate], timed: list[Timed]) -> None:
        """Each figure to the strategy (its predictor refitted); each failure onto its candidate."""
        for t in timed:
            c, outcome = t.candidate, t.outcome
            count = sum(x.attempted for x in self.strategy.candidates) + 1
            latency = Latency.of(outcome.result) if outcome.ok and outcome.result else None
            if latency is None or outcome.result is None:
                c.fail(f"measurement failed: {outcome.error or 'no latency in the result'}")
                self.b.say(f"measure {count:>2}  {c.plan.label}: FAILED: {outcome.error}")
                continue
            self.strategy.observe(c, latency, outcome.result.peak_rss_mb, measurement=outcome.result,
                                  board=outcome.board)
            self._remember(c, latency, outcome.result, outcome.board)
            where = f" on {outcome.board}" if len(self.measurer.all_boards) > 1 else ""
            kind = ("" if latency.source is LatencySource.MEASURED else f", {latency.label}") + (
                ", UNSTABLE: judged by its p90" if latency.unstable else "")
            recorded = " [recorded]" if outcome.recorded else ""
            self.b.say(f"measure {count:>2}  {c.plan.label}: p50 {latency.ms:.3f} ms (predicted {c.predicted_ms:.3f}"
                       f"{kind}){where}{recorded}")


    def _remember(self, c: Candidate, latency: Latency, result: HarnessResult, board: str | None) -> None:
        """The figure (and its per-op times, when the board gave them) into the board's memory, for the
        predictor of later builds; the per-op times into this build's predictor too."""
        predictor = self.strategy.predictor
        source = c.artifact.artifact.sha256 if c.artifact else ""
        learned = [predictor.observations[-1]] if latency.source is LatencySource.MEASURED and source else []
        profile = result.op_profile
        if profile is not None and profile.ops and source:
            c.op_profile = profile
            learned += predictor.observe_ops(c.features, latency.ms, [(o.type, o.ms) for o in profile.ops], source)
        elif profile is not None and profile.unavailable:
            self.b.no_ops.add(c.plan.format.value)
        identity = self.measurer.identities.get(board or "")
        if identity and learned:
            self.b.memory.add(identity, self.b.handle.sha256, [replace(o, source=source) for o in learned])


def build(handle: ModelHandle, profile: DeviceProfile, options: BuildOptions, ssh: SshOptions,
          calib: Dataset | None = None, eval_data: Dataset | None = None, say: Say = lambda _: None) -> BuildResult:
    return Build(handle, profile, options, ssh, calib, eval_data, say).run()
