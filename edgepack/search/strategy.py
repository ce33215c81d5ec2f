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

from edgepack.compress.plan import Precision
from edgepack.formats import ArtifactFormat
from edgepack.latency import LatencySource
from edgepack.predict import Predictor
from edgepack.runners.base import HarnessResult
from edgepack.search.candidate import Candidate, Latency
from edgepack.search.space import Constraints

__all__ = ["Candidate", "Strategy"]


@dataclass
class Strategy:
    candidates: list[Candidate]
    predictor: Predictor
    constraints: Constraints
    objective: str = "latency"  # or "size"
    max_measurements: int = 10
    findings: list[str] = field(default_factory=list)
    #: the format the user's model is in: its fp32 plan is the baseline, the model as the user has it
    source_format: ArtifactFormat | None = None

    def __post_init__(self) -> None:
        if self.source_format is not None:
            self.source_format = ArtifactFormat(self.source_format)

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
        attempted = [c for c in self.candidates if c.attempted]
        if len(attempted) + len(pending) >= self.max_measurements:
            return None
        # size and accuracy are known once built: never measure what they already rule out
        open_ = [c for c in self.candidates if c.open and not c.measured
                 and not c.known_blockers(self.constraints) and id(c) not in taken]
        if not open_:
            return None
        if not any(c.measured for c in self.candidates) and not pending:
            baselines = [c for c in open_ if c.plan.is_baseline]
            own = [c for c in baselines if c.plan.format is self.source_format]
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

    def rank_by_prediction(self, candidate: Candidate, board: str | None = None) -> None:
        """No board can time it (an emulated one): its latency is the predictor's, labelled so, and the
        predictor learns nothing from it."""
        candidate.predicted_ms = self.predictor.latency_ms(candidate.features)
        candidate.measured_as(Latency(candidate.predicted_ms, LatencySource.PREDICTED), board=board)

    def observe(self, candidate: Candidate, latency: Latency | float, peak_rss_mb: float | None = None, *,
                measurement: HarnessResult | None = None, board: str | None = None) -> None:
        """A measured figure (a bare number: a p50 measured on the board): recorded, and the predictor refitted."""
        if not isinstance(latency, Latency):
            latency = Latency(float(latency), LatencySource.MEASURED)
        if candidate.predicted_ms is None:
            candidate.predicted_ms = self.predictor.latency_ms(candidate.features)
        candidate.measured_as(latency, measurement, board, peak_rss_mb)
        latency_ms = latency.ms
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
