"""The Measurer and the loop's batch logic with a synthetic runner (TableRunner: deterministic latencies,
no model run): batching over boards, a lost board, records, counters, confirmation on one board."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgepack.latency import LatencySource
from edgepack.measurer import Job, Measurer, NoBoardLeft
from edgepack.predict import Features, Predictor
from edgepack.records import Purpose, Records
from edgepack.runners.base import HarnessResult, RunRequest
from edgepack.runners.table import TableRunner
from edgepack.search.candidate import Latency, Status
from edgepack.search.confirm import confirm
from edgepack.search.space import CompressionPlan, Constraints
from edgepack.search.strategy import Candidate, Strategy

TABLE = {f"m{i}.onnx": 1.0 + i for i in range(6)}


def jobs(count: int, **kw) -> list[Job]:
    return [Job(RunRequest(Path(f"m{i}.onnx")), f"sha{i}", **kw) for i in range(count)]


def test_a_batch_is_spread_over_the_boards_and_comes_back_in_order(tmp_path: Path):
    boards = [TableRunner(TABLE, "a"), TableRunner(TABLE, "b")]
    measurer = Measurer(boards, Records(tmp_path), "host")
    outcomes = measurer.measure(jobs(6))
    assert [o.result.p50_ms for o in outcomes if o.result] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert sorted(boards[0].runs + boards[1].runs) == sorted(TABLE) and boards[0].runs and boards[1].runs
    assert measurer.counts.to_dict()["by_purpose"]["latency"] == {"new": 6, "cached": 0}


def test_a_rerun_reads_the_records_and_measures_nothing(tmp_path: Path):
    Measurer([TableRunner(TABLE, "a")], Records(tmp_path), "host").measure(jobs(3))
    again = TableRunner(TABLE, "a")
    measurer = Measurer([again], Records(tmp_path), "host")
    outcomes = measurer.measure(jobs(3))
    assert again.runs == [] and all(o.recorded for o in outcomes) and outcomes[2].result.p50_ms == 3.0
    assert measurer.counts.new == {} and measurer.counts.recorded == {"latency": 3}
    # another purpose is another record
    measurer.measure(jobs(1, purpose=Purpose.OP_PROFILE))
    assert again.runs == ["m0.onnx"] and measurer.counts.new == {"op-profile": 1}


def test_a_lost_board_is_dropped_once_and_its_work_goes_to_the_others(tmp_path: Path):
    said: list[str] = []
    lost = TableRunner(TABLE, "b", lost_after=1)
    measurer = Measurer([TableRunner(TABLE, "a"), lost], Records(tmp_path), "host", said.append)
    outcomes = measurer.measure(jobs(6))
    assert all(o.ok for o in outcomes) and [o.result.p50_ms for o in outcomes if o.result] == list(TABLE.values())
    assert list(measurer.boards) == ["a"] and len([s for s in said if "lost" in s]) == 1
    assert len(lost.runs) == 1


def test_no_board_left_ends_the_build(tmp_path: Path):
    measurer = Measurer([TableRunner(TABLE, "a", lost_after=1)], Records(tmp_path), "host")
    with pytest.raises(NoBoardLeft, match="every board was lost"):
        measurer.measure(jobs(2))


def test_a_model_that_fails_is_an_outcome_not_an_exception(tmp_path: Path):
    measurer = Measurer([TableRunner({}, "a")], Records(tmp_path), "host")
    outcome, = measurer.measure(jobs(1))
    assert not outcome.ok and "no latency" in (outcome.error or "")
    assert Records(tmp_path).get(measurer.key(outcome.job, "a")) is None  # failures are not recorded


def test_jobs_pinned_to_a_board_run_there_in_order(tmp_path: Path):
    a, b = TableRunner(TABLE, "a"), TableRunner(TABLE, "b")
    Measurer([a, b], Records(tmp_path), "host").measure(jobs(4, board="b"))
    assert a.runs == [] and b.runs == ["m0.onnx", "m1.onnx", "m2.onnx", "m3.onnx"]


def candidate(i: int, latency: float, board: str) -> Candidate:
    c = Candidate(CompressionPlan("onnx", "fp32", 0.1 * i), Features(1.0, 10, "fp32", 1000, 1000), 1.0,
                  status=Status.PREDICTED)
    c.measured_as(Latency(latency, LatencySource.MEASURED), HarnessResult({"latency_ms": {"p50": latency}}), board)
    return c


def test_confirmation_rounds_compare_contenders_on_one_board(tmp_path: Path):
    table = {"m0.onnx": 1.0, "m1.onnx": 1.05, "m2.onnx": 2.0}
    a, b = TableRunner(table, "a"), TableRunner(table, "b")
    measurer = Measurer([a, b], Records(tmp_path), "host")
    pool = [candidate(0, 1.0, "a"), candidate(1, 1.05, "b"), candidate(2, 2.0, "a")]
    strategy = Strategy(pool, Predictor(), Constraints())

    def job_for(c: Candidate, repeat: int, board: str) -> Job:
        i = pool.index(c)
        return Job(RunRequest(Path(f"m{i}.onnx")), f"sha{i}", repeat=repeat, board=board)

    said: list[str] = []
    for confirmed in confirm(strategy, measurer, job_for, 2, said.append):
        confirmed.apply()
    # the two within 15% are confirmed on the best one's board; the one first measured elsewhere gets
    # one round more, so both have three figures from board a; the third is not a contender
    assert b.runs == [] and a.runs == ["m0.onnx", "m1.onnx", "m0.onnx", "m1.onnx", "m1.onnx"]
    assert pool[1].board == "a" and pool[1].p50_rounds_ms == [1.05] * 3 and pool[0].p50_rounds_ms == [1.0] * 3
    assert pool[2].p50_rounds_ms == [] and any("confirming 2 contenders" in s for s in said)


def test_propose_gives_a_batch_of_distinct_candidates():
    pool = [Candidate(CompressionPlan(f, "fp32", 0.0, t), Features(1.0 * t, 10, "fp32", 1000, 1000, f, t), 1.0,
                      status=Status.PREDICTED)
            for f in ("onnx", "tflite") for t in (1, 2)]
    strategy = Strategy(pool, Predictor(), Constraints(), max_measurements=3, source_format="onnx")
    batch = strategy.propose(3)
    assert len(batch) == 3 and len({id(c) for c in batch}) == 3
    assert batch[0].plan.format == "onnx" and batch[1].plan.format == "tflite"  # baseline, then the unseen runtime
    for c in batch:
        strategy.observe(c, 1.0)
    assert strategy.propose(3) == []  # max_measurements spent
