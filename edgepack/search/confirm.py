"""Confirmation rounds: the closest contenders measured again, side by side on ONE board, and judged by
their median. One measurement on a busy board can be off by more than the gap between them, and two
boards of one model differ by more than that too: contenders are compared only on the same board."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from edgepack.measurer import Job, Measurer
from edgepack.runners.base import HarnessResult
from edgepack.search.candidate import Candidate, Latency
from edgepack.search.strategy import Strategy

CONTENDERS = 3  # re-measured side by side at the end
CONTENDER_GAP = 0.15  # ... when measured within this of the best: a gap one measurement's noise can close


@dataclass(frozen=True)
class Confirmed:
    """A contender's figures after the rounds: its median round (by p50), on ``board``."""

    candidate: Candidate
    median: HarnessResult
    latency: Latency
    board: str
    rounds_ms: tuple[float, ...]

    def apply(self) -> None:
        """The contender's figures become its median round's, on the confirming board."""
        self.candidate.measured_as(self.latency, self.median, self.board)
        self.candidate.p50_rounds_ms = list(self.rounds_ms)


def confirm(strategy: Strategy, measurer: Measurer, job_for: Callable[[Candidate, int, str], Job], rounds: int,
            say: Callable[[str], None]) -> list[Confirmed]:
    """Re-measure the contenders ``rounds`` more times on the board that measured the best (one more
    round for a contender first measured elsewhere), interleaved; each one's median figures."""
    best = strategy.best()
    if best is None or best.latency_ms is None or rounds < 1:
        return []
    limit = best.latency_ms * (1 + CONTENDER_GAP)
    contenders = sorted((c for c in strategy.feasible_measured() if (c.latency_ms or 0) <= limit),
                        key=lambda c: c.latency_ms or 0.0)[:CONTENDERS]
    if len(contenders) < 2:
        return []
    board = best.board if best.board in measurer.boards else next(iter(measurer.boards))
    say(f"confirming {len(contenders)} contenders within {limit / best.latency_ms - 1:.0%} of the best on "
        f"{board}: {rounds} more rounds each")
    results: dict[str, list[HarnessResult]] = {
        c.plan.key: [c.measurement] if c.measurement is not None and c.board == board else [] for c in contenders}
    pairs = [(c, job_for(c, repeat, board)) for repeat in range(1, rounds + 2) for c in contenders
             if repeat <= rounds or not results[c.plan.key]]
    for (c, _), outcome in zip(pairs, measurer.measure([job for _, job in pairs]), strict=True):
        if outcome.ok and outcome.result is not None:
            results[c.plan.key].append(outcome.result)
        else:
            say(f"confirm {c.plan.label}: FAILED: {outcome.error}")
    confirmed = []
    for c in contenders:
        timed = [r for r in results[c.plan.key] if r.p50_ms is not None]
        stable = [r for r in timed if not r.unstable]  # an unstable round counts only when no round is stable
        rounds_of = sorted(stable or timed, key=lambda r: r.p50_ms or 0.0)
        middle = rounds_of[(len(rounds_of) - 1) // 2] if rounds_of else None
        latency = Latency.of(middle) if middle is not None else None
        if middle is None or latency is None:
            continue
        done = Confirmed(c, middle, latency, board, tuple(r.p50_ms for r in timed if r.p50_ms is not None))
        confirmed.append(done)
        say(f"confirm {c.plan.label}: p50 " + ", ".join(f"{v:.3f}" for v in done.rounds_ms)
            + f" ms; median {latency.ms:.3f}" + (" of the stable rounds" if stable and len(stable) < len(timed)
                                                 else " (UNSTABLE)" if latency.unstable else ""))
    return confirmed
