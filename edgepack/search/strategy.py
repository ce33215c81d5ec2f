"""Which candidates to measure next: ``propose(k)`` -> up to k candidates (none: done), ``observe(...)``.

A batch of k is k single picks in a row, each treating the ones before it as pending, so a pool of k
boards measures k different candidates at once. Measure the fp32 baseline first, and the most promising
candidate of each other runtime once (a runtime never measured has only the prior); then, again and
again, the candidate the predictor ranks best among those not yet measured and not known to break a
constraint; refit after each measurement. Stop when no unmeasured candidate can beat the best measured
feasible one by more than the predictor's margin, or when ``max_measurements`` are spent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from edgepack.compress.plan import CompressionPlan, Precision
from edgepack.latency import LatencySource
from edgepack.predict import Features, Predictor
from edgepack.runners.base import HarnessResult
from edgepack.search.space import Constraints


@dataclass
class Candidate:
    plan: CompressionPlan
    features: Features
    size_mb: float  # an estimate until built
    accuracy_drop: float | None = None  # known once built and checked on held-out data
    latency_ms: float | None = None  # measured p50 (the predictor's figure when latency_source says so)
    peak_rss_mb: float | None = None
    built: bool = True
    error: str | None = None  # the build or the measurement failed: never proposed again
    skipped: str | None = None  # ruled out without building it, and why
    predicted_ms: float | None = None  # just before it was measured; for the unmeasured, at the end
    p90_ms: float | None = None
    measurement: HarnessResult | None = None  # what the harness reported (the median round, once confirmed)
    board: str | None = None  # the board that measured it
    p50_rounds_ms: list[float] = field(default_factory=list)  # confirmation rounds on one board, if any
    #: measured on a board; predicted when the only board is emulated (its timings are an emulator's);
    #: a toolchain's estimate for a microcontroller (Vela's cycles, cycles per MAC)
    latency_source: LatencySource = LatencySource.MEASURED
    latency_label: str = LatencySource.MEASURED.value  # in words: "compiler estimate (Vela 5.2.0)"
    #: why the measuring conditions make its latency unstable (throttled, under-clocked, spread); empty: stable
    unstable: list[str] = field(default_factory=list)

    @property
    def judged_ms(self) -> float | None:
        """The latency the search compares: the p50, or for an unstable measurement its p90, so that noise
        on the board is never the reason a candidate wins or holds a latency bound."""
        if self.unstable and self.p90_ms is not None and self.latency_source.timed:
            return max(self.p90_ms, self.latency_ms or 0.0)
        return self.latency_ms

    @property
    def latency_measured(self) -> bool:
        """A latency from the board, or from its toolchain's estimate: not the predictor's."""
        return self.latency_ms is not None and self.latency_source.timed

    @property
    def latency_estimated(self) -> bool:
        return self.latency_measured and self.latency_source.estimated

    @property
    def measured(self) -> bool:
        return self.latency_ms is not None

    def known_blockers(self, constraints: Constraints) -> list[str]:
        """What rules it out before measuring: size and accuracy, once it is built."""
        if not self.built:
            return []
        return constraints.violations(self.size_mb, None, None, self.accuracy_drop)


@dataclass
class Strategy:
    candidates: list[Candidate]
    predictor: Predictor
    constraints: Constraints
    objective: str = "latency"  # or "size"
    max_measurements: int = 10
    findings: list[str] = field(default_factory=list)
    #: the format the user's model is in: its fp32 plan is the baseline, the model as the user has it
    source_format: str | None = None

    def predicted(self, c: Candidate) -> float:
        judged = c.judged_ms
        return judged if judged is not None else self.predictor.latency_ms(c.features)

    def blockers(self, c: Candidate, predicted: bool = False) -> list[str]:
        latency = self.predicted(c) if predicted or c.measured else None
        rss = c.peak_rss_mb if c.peak_rss_mb is not None else (
            self.predictor.peak_rss_mb(c.features) if predicted else None)
        found = self.constraints.violations(c.size_mb, rss, latency, c.accuracy_drop)
        if c.unstable and c.measured:  # its latency is judged by its p90 (Candidate.judged_ms)
            found = [f.replace("p50 ", "p90 (unstable) ", 1) if f.startswith("p50 ") else f for f in found]
        return found

    def feasible_measured(self) -> list[Candidate]:
        return [c for c in self.candidates if c.measured and not self.blockers(c)]

    def best(self) -> Candidate | None:
        feasible = self.feasible_measured()
        if not feasible:
            return None
        key = (lambda c: (c.judged_ms, c.size_mb)) if self.objective == "latency" else \
            (lambda c: (c.size_mb, c.judged_ms))
        return min(feasible, key=key)  # type: ignore[arg-type]

    def propose(self, k: int = 1) -> list[Candidate]:
        """Up to ``k`` candidates to build (if not built yet) and measure; an empty list: done."""
        batch: list[Candidate] = []
        while len(batch) < k and (pick := self._pick(batch)) is not None:
            batch.append(pick)
        return batch

    def _pick(self, pending: list[Candidate]) -> Candidate | None:
        taken = {id(c) for c in pending}
        attempted = [c for c in self.candidates if c.measured or (c.error and c.built)]
        if len(attempted) + len(pending) >= self.max_measurements:
            return None
        # size and accuracy are known once built: never measure what they already rule out
        open_ = [c for c in self.candidates if not c.measured and not c.error and not c.skipped
                 and not c.known_blockers(self.constraints) and id(c) not in taken]
        if not open_:
            return None
        if not any(c.measured for c in self.candidates) and not pending:
            baselines = [c for c in open_ if c.plan.is_baseline]
            own = [c for c in baselines if c.plan.format == self.source_format]
            if own or baselines:
                return max(own or baselines, key=lambda c: c.plan.threads)
        # a runtime never measured has only the prior to go on: measure its most promising candidate once
        seen = {c.plan.format for c in self.candidates if c.measured or id(c) in taken}
        unseen = [c for c in open_ if c.plan.format not in seen]
        if unseen:
            return min(unseen, key=self.predicted)
        best = self.best()
        margin = self.predictor.margin
        if self.objective == "latency":
            pick = min(open_, key=self.predicted)
            if best is not None and best.judged_ms is not None \
                    and self.predicted(pick) * (1 - margin) >= best.judged_ms:
                return None
            return pick
        hopeful = [c for c in open_ if self.constraints.max_latency_ms is None
                   or self.predicted(c) * (1 - margin) <= self.constraints.max_latency_ms]
        if not hopeful:
            return None
        pick = min(hopeful, key=lambda c: (c.size_mb, self.predicted(c)))
        if best is not None and pick.size_mb >= best.size_mb:
            return None
        return pick

    def rank_by_prediction(self, candidate: Candidate) -> None:
        """No board can time it (an emulated one): its latency is the predictor's, labelled so, and the
        predictor learns nothing from it."""
        candidate.predicted_ms = self.predictor.latency_ms(candidate.features)
        candidate.latency_ms, candidate.latency_source = candidate.predicted_ms, LatencySource.PREDICTED
        candidate.latency_label = LatencySource.PREDICTED.value

    def observe(self, candidate: Candidate, latency_ms: float, peak_rss_mb: float | None = None) -> None:
        if candidate.predicted_ms is None:
            candidate.predicted_ms = self.predictor.latency_ms(candidate.features)
        candidate.latency_ms, candidate.peak_rss_mb = latency_ms, peak_rss_mb
        self.predictor.observe(candidate.features, latency_ms, peak_rss_mb)
        plan = candidate.plan
        if plan.precision is not Precision.FP32:
            twin = next((c for c in self.candidates if c.measured and c.plan.precision is Precision.FP32
                         and (c.plan.format, c.plan.prune_ratio, c.plan.threads)
                         == (plan.format, plan.prune_ratio, plan.threads)), None)
            if twin is not None and twin.latency_ms is not None and latency_ms > twin.latency_ms:
                self.findings.append(
                    f"{plan.precision} {plan.format} was measured SLOWER than fp32 on this board "
                    f"({latency_ms:.3f} ms vs {twin.latency_ms:.3f} ms, {plan.threads} thread"
                    f"{'s' if plan.threads > 1 else ''}); moving on")
