"""Which candidates to measure next: ``propose(k)`` -> up to k candidates (none: done), ``observe(...)``.

A batch of k is k single picks in a row, each treating the ones before it as pending, so a pool of k
boards measures k different candidates at once. Measure the fp32 baseline first (the model as the user
has it). Then board time goes where the predictor's uncertainty could change the choice: every open
candidate has a predicted latency and a spread (``Predictor.predict``); the next one measured is the one
most likely to beat the best measured feasible candidate by more than IMPROVEMENT, and the search stops
when none is likely to (below STOP_CHANCE), when ``max_measurements`` are spent, or when the board time
budget is. ``exhaustive``: every candidate that passes the fidelity gate is measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from edgepack.compress.plan import Precision
from edgepack.formats import ArtifactFormat
from edgepack.latency import LatencySource
from edgepack.predict import Predictor
from edgepack.runners.base import HarnessResult
from edgepack.search.candidate import Candidate, Latency
from edgepack.search.space import Constraints

__all__ = ["Candidate", "Strategy"]

IMPROVEMENT = 0.15  # a candidate is worth board time if it may be this much faster than the best measured
STOP_CHANCE = 0.40  # ... with at least this probability (a gain within the board's own noise is no gain; replaying
# the corpus's exhaustive rounds, a lower bar measured more and chose worse: a noisy lucky draw wins)


@dataclass
class Strategy:
    candidates: list[Candidate]
    predictor: Predictor
    constraints: Constraints
    objective: str = "latency"  # or "size"
    max_measurements: int = 10
    findings: list[str] = field(default_factory=list)
    #: (quantized, its fp32 twin) pairs measured with the quantized one slower
    slower: list[tuple[Candidate, Candidate]] = field(default_factory=list)
    #: the format the user's model is in: its fp32 plan is the baseline, the model as the user has it
    source_format: ArtifactFormat | None = None
    exhaustive: bool = False  # measure every candidate the gate passes (no stopping rule, no cap)
    budget_s: float | None = None  # board time the search may spend (seconds)
    board_seconds: Callable[[], float] = lambda: 0.0  # board time spent so far

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

    def chance_to_beat(self, c: Candidate, target_ms: float) -> float:
        """The probability that ``c`` measures under ``target_ms``, by the predictor's figure and spread."""
        prediction = self.predictor.predict(c.features)
        z = (math.log(max(target_ms, 1e-9)) - math.log(prediction.ms)) / max(prediction.sigma, 1e-6)
        return 0.5 * math.erfc(-z / math.sqrt(2))

    def _pick(self, pending: list[Candidate]) -> Candidate | None:
        taken = {id(c) for c in pending}
        attempted = [c for c in self.candidates if c.attempted]
        if not self.exhaustive and len(attempted) + len(pending) >= self.max_measurements:
            return None
        if self.budget_s is not None and self.board_seconds() >= self.budget_s:
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
        if self.exhaustive:
            return min(open_, key=self.predicted)
        best = self.best()
        limit = self.constraints.max_latency_ms
        if self.objective == "latency":
            if best is None or best.judged_ms is None:  # nothing feasible yet: the most hopeful, a runtime
                formats = {c.plan.format for c in pending}  # not already pending first (a pool's batch)
                if limit is None:
                    return min(open_, key=lambda c: (c.plan.format in formats,
                                                     self.predictor.predict(c.features).low()))
                return max(open_, key=lambda c: (c.plan.format not in formats, self.chance_to_beat(c, limit)))
            target = best.judged_ms * (1 - IMPROVEMENT)
            chances = {id(c): self.chance_to_beat(c, target) for c in open_}
            pick = max(open_, key=lambda c: (chances[id(c)], -self.predicted(c)))
            return pick if chances[id(pick)] >= STOP_CHANCE else None
        hopeful = [c for c in open_ if limit is None or self.chance_to_beat(c, limit) >= STOP_CHANCE]
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
        self.predictor.observe(candidate.features, latency_ms, peak_rss_mb,
                               source=candidate.artifact.artifact.sha256 if candidate.artifact else "")
        for pair in self._slower_than_fp32(candidate):
            self.slower.append(pair)
            self.findings.append(slower_sentence(*pair))

    def _slower_than_fp32(self, candidate: Candidate) -> list[tuple[Candidate, Candidate]]:
        """(quantized, its fp32 twin) where ``candidate`` is one of the two and the quantized one measured
        slower: the same runtime, pruning and threads."""
        def twins(a: Candidate, b: Candidate) -> bool:
            return (a.plan.format, a.plan.prune_ratio, a.plan.threads) == (b.plan.format, b.plan.prune_ratio,
                                                                           b.plan.threads)
        measured = [c for c in self.candidates if c.latency_measured and c is not candidate and twins(c, candidate)]
        if candidate.plan.precision is Precision.FP32:
            pairs = [(c, candidate) for c in measured if c.plan.precision is not Precision.FP32]
        else:
            pairs = [(candidate, c) for c in measured if c.plan.precision is Precision.FP32]
        return [(q, f) for q, f in pairs if (q.latency_ms or 0.0) > (f.latency_ms or float("inf"))]


def slower_sentence(quantized: Candidate, fp32: Candidate) -> str:
    """The finding in words, before (or without) the per-op profiles that explain it."""
    plan = quantized.plan
    return (f"{plan.precision} {plan.format} was measured SLOWER than fp32 on this board "
            f"({quantized.latency_ms:.3f} ms vs {fp32.latency_ms:.3f} ms, {plan.threads} thread"
            f"{'s' if plan.threads > 1 else ''}); moving on")
