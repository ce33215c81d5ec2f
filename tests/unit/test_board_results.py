"""The checks a board's figures pass before they are believed (edgepack.runners.validation), the
judgement of their measuring conditions (edgepack.runners.conditions), and strict JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgepack.latency import LatencySource
from edgepack.predict import Features, Predictor
from edgepack.runners.base import HarnessResult
from edgepack.runners.conditions import Conditions, Judge, spread_pct
from edgepack.runners.validation import latency_problem, outputs_problem, result_problem
from edgepack.search.candidate import Latency, Status
from edgepack.search.space import CompressionPlan, Constraints
from edgepack.search.strategy import Candidate, Strategy
from edgepack.strict_json import dumps


def latency(runs: list[float]) -> dict[str, object]:
    a = np.asarray(runs)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "std": float(a.std()),
            "min": float(a.min()), "max": float(a.max()), "runs": [round(v, 6) for v in runs]}


RUNS = [1.0 + 0.01 * i for i in range(20)]


def test_the_harness_own_figures_pass() -> None:
    assert latency_problem(latency(RUNS), 20) is None
    assert result_problem({"latency_ms": latency(RUNS), "peak_rss_mb": 12.5, "threads": 2}, 20, 2) is None


@pytest.mark.parametrize(("change", "said"), [
    ({"p50": -1.018}, "p50 -1.018 ms: not a latency"),
    ({"p90": float("inf")}, "p90 inf ms: not a latency"),
    ({"min": 0.0}, "min 0 ms: not a latency"),
    ({"min": 1.5}, "min 1.5 ms above p50"),
    ({"p99": 1.1}, "p90 1.171 ms above p99 1.1 ms"),
    ({"p50": 1.05}, "p50 1.05 ms, but its runs give 1.095 ms"),
    ({"runs": RUNS[:10]}, "10 runs, 20 asked for"),
    ({"runs": [*RUNS[:19], "x"]}, "a run of 'x' ms: not a latency"),
    ({"std": -1}, "std -1 ms: not a spread"),
])
def test_made_up_figures_are_named(change: dict[str, object], said: str) -> None:
    problem = latency_problem({**latency(RUNS), **change}, 20)
    assert problem is not None and said in problem, problem


@pytest.mark.parametrize(("extra", "said"), [
    ({"peak_rss_mb": -100}, "peak_rss_mb -100: not a memory figure"),
    ({"peak_rss_mb": float("nan")}, "peak_rss_mb nan"),
    ({"threads": 4}, "threads 4, 2 asked for"),
    ({"arena_bytes": -3}, "arena_bytes -3: not a size"),
    ({"op_profile": {"ops": [{"name": "a", "ms": -1}]}}, "op time"),
    ({"conditions": {"temperature_c": [20, 900]}}, "not a temperature"),
    ({"conditions": {"cur_khz": [-5]}}, "negative"),
])
def test_other_figures_are_checked(extra: dict[str, object], said: str) -> None:
    problem = result_problem({"latency_ms": latency(RUNS), **extra}, 20, 2)
    assert problem is not None and said in problem, problem


def test_outputs_of_the_wrong_shape_or_dtype() -> None:
    expected = (((3, 1, 10), "float32"), ((3, 4), "int8"))
    good = {"output_0": np.zeros((3, 4), np.int8), "output_1": np.zeros((3, 1, 10), np.float32)}
    assert outputs_problem(good, expected) is None  # the runtime's order may differ
    assert "shape [3, 10]" in outputs_problem({**good, "output_1": np.zeros((3, 10), np.float32)}, expected)
    assert "dtype float64" in outputs_problem({**good, "output_1": np.zeros((3, 1, 10))}, expected)
    assert "1 outputs, the model has 2" in outputs_problem({"output_0": good["output_0"]}, expected)


def result(runs: list[float], **conditions: object) -> HarnessResult:
    return HarnessResult({"latency_ms": latency(runs), "conditions": {"seconds": 1.0, **conditions}})


def test_judged_unstable_when_throttled_under_clocked_or_spread() -> None:
    judge = Judge(clock_ghz=1.5, max_spread_pct=25.0)
    assert judge.reasons(result(RUNS, throttled=[0, 0], cur_khz=[1500000])) == []
    assert judge.reasons(result(RUNS, throttled=[0x50000, 0x50000])) == []  # since boot only
    assert judge.reasons(result(RUNS, throttled=[0, 0x4]))[0].startswith("throttled (throttled")
    assert "under-clocked: the cores ran at 1.00 GHz" in judge.reasons(result(RUNS, cur_khz=[1000000, 600000]))[0]
    assert "capped at 1.20 GHz" in judge.reasons(result(RUNS, scaling_max_khz=[1200000]))[0]
    assert Judge(clock_ghz=None).reasons(result(RUNS, cur_khz=[600000])) == []  # the host: not judged
    wild = [1.0, 2.0] * 10
    assert spread_pct(wild) == pytest.approx(33.333, rel=1e-3)
    assert "spread 33% between runs" in judge.reasons(result(wild))[0]
    assert judge.reasons(result(wild[:4])) == []  # too few runs to judge a spread


def test_the_conditions_line() -> None:
    line = Conditions.of(result(RUNS, governor=["performance"], cur_khz=[1500000], max_khz=[1500000],
                                temperature_c=[48.2, 51.0], throttled=[0, 0], load_avg=[0.12, 0.1, 0.1],
                                busy=[{"pid": 7, "name": "stress", "cpu_pct": 95.0}])).line()
    assert line == ("governor performance; clock 1.50/1.50 GHz; 48.2->51.0 C; not throttled; load 0.12; "
                    "busy: stress 95.0%; spread 4.6%")


def test_an_unstable_figure_is_never_the_sole_reason_a_candidate_wins() -> None:
    def candidate(fmt: str, p50: float, p90: float, unstable: bool) -> Candidate:
        return Candidate(CompressionPlan(fmt, "fp32", 0.0, 1), Features(1.0, 10, "fp32", 1000, 100), 1.0,
                         accuracy_drop=0.0, status=Status.PREDICTED,
                         latency=Latency(p50, LatencySource.MEASURED, p90_ms=p90,
                                         unstable=("spread 40%",) if unstable else ()))

    noisy, steady = candidate("onnx", 1.0, 2.0, True), candidate("tflite", 1.5, 1.6, False)
    assert Strategy([noisy, steady], Predictor(), Constraints()).best() is steady
    clearly = candidate("onnx", 1.0, 1.2, True)  # faster even at its p90
    assert Strategy([clearly, steady], Predictor(), Constraints()).best() is clearly
    bound = Strategy([noisy], Predictor(), Constraints(max_latency_ms=1.5))
    assert bound.best() is None and bound.blockers(noisy) == ["p90 (unstable) 2.000 ms > 1.5 ms"]


def test_json_is_strict() -> None:
    text = dumps({"p50": float("nan"), "runs": [np.float32(1.5), np.float64("inf")], "shape": (1, 2)})
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"p50": None, "runs": [1.5, None],
                                                                         "shape": [1, 2]}
