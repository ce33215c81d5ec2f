"""The harness stops timing once the median is known (issue 27): the distribution-free interval of the
median, the stopping rule on a clock the test controls, the figures' checks, and the real harness run
by the local runner on a small real graph."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from edgepack.runners import harness
from edgepack.runners.base import HarnessResult, RunRequest, StopReason
from edgepack.runners.local import LocalRunner
from edgepack.runners.validation import result_problem


def test_the_median_rank_is_the_binomial_one() -> None:
    from scipy.stats import binom

    assert [harness.median_rank(n) for n in range(1, 6)] == [None] * 5  # 1/32 > 2.5%: no interval yet
    for n in [*range(6, 300), 1000, 5001, 20000]:
        rank = harness.median_rank(n)
        assert rank is not None
        assert binom.cdf(rank - 1, n, 0.5) <= 0.025 < binom.cdf(rank, n, 0.5), n
    assert harness.median_rank(10) == 2 and harness.median_rank(100) == 40  # the textbook's ranks


def test_the_interval_covers_the_median_of_a_skewed_distribution() -> None:
    rng = np.random.default_rng(0)
    true_median = np.log(2)  # of Exp(1): latencies have such a long right tail
    covered = 0
    for _ in range(2000):
        low, high = harness.median_ci(list(rng.exponential(size=25)))
        covered += low <= true_median <= high
    assert 0.95 <= covered / 2000 < 0.985  # at least 95%, not a uselessly wide interval either
    assert harness.median_ci([3.0, 1.0, 2.0, 5.0, 4.0, 6.0]) == (1.0, 6.0)
    assert harness.median_ci([1.0, 2.0]) is None and harness.ci_rel([1.0, 2.0]) is None


class Clock:
    """perf_counter for ``measure``: each call of ``once`` takes the next of ``runs_ms``."""

    def __init__(self, runs_ms: Iterator[float]) -> None:
        self.now, self.runs_ms = 0.0, runs_ms

    def once(self) -> None:
        self.now += next(self.runs_ms) / 1000.0

    def __call__(self) -> float:
        return self.now


def timed(runs_ms: Iterator[float], *, runs: int = 100, min_runs: int = 10, target_ci: float = 0.02,
          max_seconds: float = 0.0, warmup: int = 0) -> dict[str, object]:
    """The result's latency and stopping blocks as the harness prints them, after ``measure``."""
    harness.RESULT_EXTRA.clear()
    clock = Clock(runs_ms)
    args = argparse.Namespace(warmup=warmup, runs=runs, min_runs=min_runs, target_ci=target_ci,
                              max_seconds=max_seconds)
    latencies = harness.measure(clock.once, args, clock)
    return {"latency_ms": harness.percentiles(latencies), "stopping": harness.RESULT_EXTRA.pop("stopping")}


def steady(ms: float = 4.0) -> Iterator[float]:
    while True:
        yield ms


def alternating(low: float = 1.0, high: float = 2.0) -> Iterator[float]:
    while True:
        yield low
        yield high


def test_a_steady_model_stops_at_the_minimum_a_noisy_one_at_the_maximum() -> None:
    quick = timed(steady(), warmup=3)
    assert quick["stopping"]["runs_done"] == 10 and quick["stopping"]["stopped_by"] == "ci"
    assert quick["stopping"]["median_ci_ms"] == [4.0, 4.0] and quick["stopping"]["median_ci_rel"] == 0.0
    assert len(quick["latency_ms"]["runs"]) == 10
    noisy = timed(alternating(), runs=40)
    assert noisy["stopping"]["runs_done"] == 40 and noisy["stopping"]["stopped_by"] == "max runs"
    assert noisy["stopping"]["median_ci_ms"] == [1.0, 2.0]


def test_the_interval_is_looked_at_every_few_runs_after_the_minimum() -> None:
    def calming() -> Iterator[float]:  # 12 wild runs, then steady: the 8th to 18th of 25 are all 2.0
        yield from [1.0, 3.0] * 6
        yield from steady(2.0)

    found = timed(calming())["stopping"]
    assert found["stopped_by"] == "ci" and found["runs_done"] == 25  # looked at 10, 15, 20, 25
    rel = harness.ci_rel(timed(calming(), target_ci=0.0, runs=found["runs_done"] - 5)["latency_ms"]["runs"])
    assert rel is not None and rel > 0.02  # five runs earlier it was not tight yet


def test_every_run_when_no_interval_is_asked_for_and_a_deadline_stops() -> None:
    every = timed(steady(), target_ci=0.0, runs=37)["stopping"]
    assert every["runs_done"] == 37 and every["stopped_by"] == "max runs" and every["target_ci"] is None
    late = timed(alternating(100.0, 200.0), max_seconds=0.35)["stopping"]  # 0.1 + 0.2 + 0.1 s, then over
    assert late["runs_done"] == 3 and late["stopped_by"] == "time" and late["median_ci_ms"] is None
    one = timed(steady(), runs=1)["stopping"]  # an accuracy probe's single run: nothing to judge
    assert one["runs_done"] == 1 and one["stopped_by"] == "max runs" and one["median_ci_rel"] is None


def test_the_stop_is_checked_against_its_runs() -> None:
    good = timed(steady(), warmup=3)
    assert result_problem(good, 100, stop=(10, 0.02)) is None
    noisy = timed(alternating(), runs=40)
    assert result_problem(noisy, 40, stop=(10, 0.02)) is None
    wild = dict(timed(alternating(), runs=12, target_ci=0.0))  # 12 of 12, kept as they are

    def problem(base: dict[str, object], runs_asked: int = 100, stop: tuple[int, float] = (10, 0.02),
                **change: object) -> str | None:
        changed = {**base, "stopping": {**base["stopping"], **change}}  # type: ignore[dict-item]
        return result_problem(changed, runs_asked, stop=stop)

    assert "10 runs sent, but runs_done 9" in problem(good, runs_done=9)
    assert "stopped_by 'bored'" in problem(good, stopped_by="bored")
    assert "stopped at 10 runs for reaching the maximum, 100 asked for" in problem(good, stopped_by="max runs")
    assert "after 10 runs, at least 20 asked for" in problem(good, stop=(20, 0.02))
    assert "every run was asked for" in problem(good, stop=(10, 0.0))
    assert "median_ci_ms [3.9, 4.1], but its runs give [4.0, 4.0]" in problem(good, median_ci_ms=[3.9, 4.1])
    assert "median_ci_rel 0.5" in problem(good, median_ci_rel=0.5)
    assert "its runs give 0.333333, over the 0.02 asked" in problem(wild, 12, stopped_by="ci")
    assert "12 runs, 10 asked for at most" in problem(wild, 10)
    assert problem(good, stopped_by="time") is None  # a deadline may come before the minimum
    old = {"latency_ms": good["latency_ms"]}  # a harness before version 5: every run asked for
    assert "10 runs, 100 asked for" in result_problem(old, 100)


def test_the_result_says_how_it_stopped() -> None:
    found = HarnessResult(timed(steady(), warmup=3))
    assert found.runs_done == 10 and found.median_ci_ms == (4.0, 4.0) and found.median_ci_rel == 0.0
    assert found.stopped_by is StopReason.CI and str(found.stopped_by) == "ci"
    before = HarnessResult({"latency_ms": {"p50": 1.0, "runs": [1.0, 1.0]}})
    assert before.runs_done == 2 and before.median_ci_ms is None and before.stopped_by is None


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real graph (MatMul, Relu) that ONNX Runtime runs in microseconds."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                              "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [weight])
    path = tmp_path_factory.mktemp("stop") / "small.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


def test_the_runner_passes_the_rule_and_the_harness_follows_it(small_onnx: Path) -> None:
    args = RunRequest(small_onnx, runs=500, min_runs=20, target_ci=0.05, max_seconds=30).harness_args("m", None, None)
    assert args[args.index("--min-runs") + 1] == "20" and args[args.index("--target-ci") + 1] == "0.05"
    assert args[args.index("--max-seconds") + 1] == "30.0"
    assert "--max-seconds" not in RunRequest(small_onnx).harness_args("m", None, None)
    every, adaptive = LocalRunner().run([RunRequest(small_onnx, runs=300, warmup=5, target_ci=None),
                                         RunRequest(small_onnx, runs=5000, warmup=5, min_runs=20)])
    assert every.ok and adaptive.ok, (every.error, adaptive.error)
    assert every.result.runs_done == len(every.result.runs_ms) == 300
    assert every.result.stopped_by is StopReason.MAX_RUNS
    low, high = every.result.median_ci_ms or (0.0, 0.0)
    assert low <= (every.p50_ms or 0.0) <= high
    # A model of microseconds is known to 2% long before 5000 runs (unless this machine is very busy)
    assert 20 <= adaptive.result.runs_done <= 5000 and len(adaptive.result.runs_ms) == adaptive.result.runs_done
    if adaptive.result.stopped_by is StopReason.CI:
        assert (adaptive.result.median_ci_rel or 1.0) <= 0.05 and adaptive.result.runs_done < 5000
    else:
        assert adaptive.result.stopped_by is StopReason.MAX_RUNS and adaptive.result.runs_done == 5000
