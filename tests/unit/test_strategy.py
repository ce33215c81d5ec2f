from __future__ import annotations

from edgepack.predict import Features, Predictor
from edgepack.search.candidate import Status
from edgepack.search.space import CompressionPlan, Constraints
from edgepack.search.strategy import IMPROVEMENT, STOP_CHANCE, Candidate, Strategy


def board_latency(plan: CompressionPlan) -> float:
    """A made-up board where int8 TFLite is SLOWER than fp32 (no fast int8 kernels), ONNX int8 is fast,
    pruning helps and 4 threads help up to 2.5x."""
    base = 10.0 * (1 - plan.prune_ratio * 0.8)
    factor = {("tflite", "int8"): 1.2, ("onnx", "int8"): 0.45, ("tflite", "fp32"): 1.0, ("onnx", "fp32"): 1.1}
    return base * factor[(plan.format, plan.precision)] / {1: 1.0, 2: 1.8, 4: 2.5}[plan.threads]


def candidates() -> list[Candidate]:
    result = []
    for fmt in ("tflite", "onnx"):
        for precision in ("fp32", "int8"):
            for ratio in (0.0, 0.3, 0.5, 0.7):
                for threads in (1, 2, 4):
                    plan = CompressionPlan(fmt, precision, ratio, threads)
                    roofline = 2.0 * (1 - ratio) * (0.5 if precision == "int8" else 1.0) / threads
                    size = 4.0 * (1 - ratio) * (0.27 if precision == "int8" else 1.0)
                    drop = 0.3 + 2.5 * ratio  # pruning costs accuracy
                    features = Features(roofline, 50, precision, int(size * 1e6), 10_000, fmt, threads, precision,
                                        ratio)
                    result.append(Candidate(plan, features,
                                            size, accuracy_drop=drop, status=Status.PREDICTED))
    return result


def run(strategy: Strategy) -> int:
    count = 0
    while batch := strategy.propose():
        strategy.observe(batch[0], board_latency(batch[0].plan))
        count += 1
    return count


def test_finds_the_fastest_feasible_with_a_third_of_the_measurements():
    pool = candidates()
    constraints = Constraints(max_accuracy_drop=1.5)
    strategy = Strategy(pool, Predictor(), constraints, max_measurements=len(pool))
    used = run(strategy)
    feasible = [c for c in pool if not constraints.violations(c.size_mb, None, None, c.accuracy_drop)]
    truth = min(board_latency(c.plan) for c in feasible)
    best = strategy.best()
    assert best is not None and best.latency_ms is not None
    assert best.latency_ms <= truth * 1.05
    assert used <= len(pool) // 3
    assert (pool[0].plan.is_baseline and pool[0].measured) or any(c.plan.is_baseline and c.measured for c in pool)


def test_says_when_int8_is_slower_than_fp32():
    pool = [c for c in candidates() if c.plan.format == "tflite" and c.plan.prune_ratio == 0.0]
    strategy = Strategy(pool, Predictor(), Constraints(), max_measurements=len(pool))
    fp32, int8 = (next(c for c in pool if c.plan.precision == p and c.plan.threads == 4) for p in ("fp32", "int8"))
    strategy.observe(fp32, board_latency(fp32.plan))
    assert not strategy.findings
    strategy.observe(int8, board_latency(int8.plan))
    assert len(strategy.findings) == 1 and "int8 tflite was measured SLOWER than fp32" in strategy.findings[0]


def test_size_objective_and_budget():
    pool = candidates()
    strategy = Strategy(pool, Predictor(), Constraints(max_latency_ms=3.0, max_accuracy_drop=2.0), objective="size",
                        max_measurements=8)
    used = run(strategy)
    best = strategy.best()
    assert used <= 8 and best is not None and best.latency_ms is not None and best.latency_ms <= 3.0


def test_each_runtime_is_measured_before_stopping_and_skipped_ones_never():
    pool = [c for c in candidates() if c.plan.prune_ratio in (0.0, 0.7)]
    for c in pool:
        if c.plan.prune_ratio == 0.7:
            c.skip("pruning 70% alone loses too much")
    strategy = Strategy(pool, Predictor(), Constraints(), max_measurements=len(pool))
    run(strategy)
    measured = [c for c in pool if c.measured]
    assert {c.plan.format for c in measured} == {"tflite", "onnx"}
    assert not any(c.plan.prune_ratio == 0.7 for c in measured)


def test_unbuilt_candidates_are_proposed_and_size_rules_out_only_once_built():
    pool = [c for c in candidates() if c.plan.prune_ratio == 0.0 and c.plan.threads == 1]
    for c in pool:
        c.status = Status.NOT_BUILT
    strategy = Strategy(pool, Predictor(), Constraints(max_size_mb=1.5), max_measurements=len(pool))
    first, = strategy.propose()
    assert first.plan.is_baseline and not first.built  # the caller builds it first
    for c in pool:
        c.status = Status.PREDICTED  # now the real sizes are known: fp32 (4 MB) is over the limit
    assert all(c.plan.precision == "int8" for c in strategy.propose())


def test_the_model_as_the_user_has_it_is_measured_first():
    """A TFLite model's own fp32 plan is the baseline (never left to a prior that may think it slow)."""
    for source in ("tflite", "onnx"):
        strategy = Strategy(candidates(), Predictor(), Constraints(), max_measurements=5, source_format=source)
        first, = strategy.propose()
        assert (first.plan.format, first.plan.precision, first.plan.prune_ratio) == \
            (source, "fp32", 0.0)


def test_exhaustive_measures_every_candidate_the_gate_passed_and_nothing_it_refused():
    pool = [c for c in candidates() if c.plan.prune_ratio in (0.0, 0.3)]
    pool[3].skip("refused by the fidelity gate")
    strategy = Strategy(pool, Predictor(), Constraints(), max_measurements=2, exhaustive=True)
    assert run(strategy) == len(pool) - 1  # no cap and no stopping rule
    assert not pool[3].measured


def test_the_search_stops_once_no_candidate_is_likely_to_beat_the_best():
    """Once its coefficients are pinned, a candidate predicted far slower than the best is never measured,
    however many measurements remain."""
    pool = [c for c in candidates() if c.plan.prune_ratio == 0.0]
    strategy = Strategy(pool, Predictor(), Constraints(), max_measurements=len(pool))
    used = run(strategy)
    assert used < len(pool)
    best = strategy.best()
    assert best is not None
    for c in pool:
        if not c.measured:  # what was left: not likely (STOP_CHANCE) to be 10% faster than the best
            assert strategy.chance_to_beat(c, best.judged_ms * (1 - IMPROVEMENT)) < STOP_CHANCE


def test_board_time_budget_stops_the_search():
    pool = candidates()
    spent = [0.0]
    strategy = Strategy(pool, Predictor(), Constraints(), max_measurements=len(pool), budget_s=25.0,
                        board_seconds=lambda: spent[0])
    count = 0
    while batch := strategy.propose():
        strategy.observe(batch[0], board_latency(batch[0].plan))
        spent[0] += 10.0  # each measurement takes 10 s of board time
        count += 1
    assert count == 3  # the third began with 20 s spent, under the 25 s budget; none after it
