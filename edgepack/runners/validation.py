"""A board's figures are checked where they are parsed, before anything believes them.

The harness runs on a machine edgepack does not control: its Python, its numpy, its runtime may be
broken, old, or lying. A latency that is not finite and positive, percentiles out of order or not those
of the runs sent, a run count other than the one asked for, a negative or infinite memory figure,
outputs of the wrong shape or dtype, a stop that does not follow from its runs (more runs than asked
for, fewer than the minimum, a median interval that is not the runs' or not tight enough to stop on):
each makes the whole result an error naming the board and the
field ("board root@host:22 returned p50 -1.018 ms: not a latency"), never a record and never a
candidate's figure.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

PERCENTILES = {"p50": 50, "p90": 90, "p99": 99}
ORDER = ("min", "p50", "p90", "p99", "max")
#: the harness rounds each run to 6 decimals (a nanosecond); its percentiles are of the unrounded runs
RUNS_ROUNDING_MS = 1e-6


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _said(value: Any) -> str:
    """A board's value, short and printable (it may be anything)."""
    text = repr(value) if not isinstance(value, float) else f"{value:g}"
    return "".join(c if c.isprintable() else "?" for c in text)[:40]


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 2 * RUNS_ROUNDING_MS + 1e-9 * max(abs(a), abs(b))


def latency_problem(latency: Any, runs_asked: int | None, stopping: Any = None) -> str | None:
    """Why a ``latency_ms`` block cannot be believed, or None. ``stopping``: the harness's "stopping" block,
    when it sent one: it may have stopped before ``runs_asked``, after the runs it says it did (the rest of
    the block is checked by :func:`stopping_problem`)."""
    adaptive = stopping is not None
    if not isinstance(latency, dict):
        return f"latency_ms {_said(latency)}: not a set of latencies"
    for key in ("p50", "p90", "p99", "mean", "min", "max"):
        value = latency.get(key)
        if not _finite(value) or value <= 0:
            return f"{key} {_said(value)} ms: not a latency"
    std = latency.get("std")
    if std is not None and (not _finite(std) or std < 0):
        return f"std {_said(std)} ms: not a spread"
    for low, high in itertools.pairwise(ORDER):
        if latency[low] > latency[high] * (1 + 1e-9):
            return f"{low} {latency[low]:g} ms above {high} {latency[high]:g} ms: percentiles out of order"
    runs = latency.get("runs")
    if runs is None:
        return "no runs: the percentiles cannot be checked"
    if not isinstance(runs, list) or not all(_finite(v) and v > 0 for v in runs):
        bad = next((v for v in runs if not (_finite(v) and v > 0)), runs) if isinstance(runs, list) else runs
        return f"a run of {_said(bad)} ms: not a latency"
    if runs_asked is not None and (len(runs) > runs_asked if adaptive else len(runs) != runs_asked):
        return f"{len(runs)} runs, {runs_asked} asked for" + (" at most" if adaptive else "")
    done = stopping.get("runs_done") if isinstance(stopping, dict) else None
    if adaptive and (not isinstance(done, int) or isinstance(done, bool) or done != len(runs)):
        return f"{len(runs)} runs sent, but runs_done {_said(done)}"
    if not runs:
        return "no runs"
    values = np.asarray(runs, dtype=np.float64)
    expected = {k: float(np.percentile(values, q)) for k, q in PERCENTILES.items()}
    expected.update(min=float(values.min()), max=float(values.max()), mean=float(values.mean()))
    for key, value in expected.items():
        if not _close(float(latency[key]), value):
            return f"{key} {latency[key]:g} ms, but its runs give {value:g} ms: not the runs' figure"
    return None


def stopping_problem(stopping: Any, runs: list[float], runs_asked: int | None,
                     stop: tuple[int, float] | None) -> str | None:
    """Why the harness's "stopping" block does not follow from its runs, or None. ``stop``: the request's
    (min_runs, target_ci; 0 for every run), or None when not known (then only what the block says of
    itself is checked). The interval is computed again here, from the runs as received."""
    from edgepack.runners.harness import STOPPED_BY, ci_rel, median_ci  # the harness's own arithmetic, run here

    if not isinstance(stopping, dict):
        return f"stopping {_said(stopping)}: not a stop record"
    done, why = stopping.get("runs_done"), stopping.get("stopped_by")
    if not isinstance(done, int) or isinstance(done, bool) or done != len(runs):
        return f"{len(runs)} runs sent, but runs_done {_said(done)}"
    if why not in STOPPED_BY:
        return f"stopped_by {_said(why)}: not a reason to stop"
    min_runs, target = stop if stop is not None else (None, stopping.get("target_ci") or 0.0)
    if runs_asked is not None and why == "max runs" and done != runs_asked:
        return f"stopped at {done} runs for reaching the maximum, {runs_asked} asked for"
    if min_runs is not None and runs_asked is not None and why != "time" and done < min(min_runs, runs_asked):
        return f"stopped ({why}) after {done} runs, at least {min(min_runs, runs_asked)} asked for"
    given, expected = stopping.get("median_ci_ms"), median_ci(runs)  # type: ignore[no-untyped-call]
    if (list(expected) if expected else None) != given:
        return f"median_ci_ms {_said(given)}, but its runs give {_said(list(expected) if expected else None)}"
    rel, said = ci_rel(runs), stopping.get("median_ci_rel")  # type: ignore[no-untyped-call]
    if (rel is None) != (said is None) or (rel is not None and not (_finite(said) and abs(said - rel) <= 1e-9)):
        return f"median_ci_rel {_said(said)}, but its runs give {_said(rel)}"
    if why == "ci":
        if not _finite(target) or target <= 0:
            return "stopped on the median's interval, but every run was asked for"
        if rel is None or rel > target * (1 + 1e-9):
            return f"stopped on the median's interval, but its runs give {_said(rel)}, over the {target:g} asked"
    return None


def _memory_problem(raw: dict[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not _finite(value) or value < 0:
        return f"{key} {_said(value)}: not a memory figure"
    return None


def _conditions_problem(conditions: Any) -> str | None:
    if conditions is None:
        return None
    if not isinstance(conditions, dict):
        return f"conditions {_said(conditions)}: not a set of readings"
    for key in ("cur_khz", "max_khz", "scaling_max_khz", "temperature_c", "throttled"):
        values = conditions.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or not all(v is None or _finite(v) for v in values):
            return f"conditions.{key} {_said(values)}: not a list of readings"
        if key != "temperature_c" and any(v is not None and v < 0 for v in values):
            return f"conditions.{key} {_said(values)}: negative"
        if key == "temperature_c" and any(v is not None and not -60 <= v <= 200 for v in values):
            return f"conditions.temperature_c {_said(values)}: not a temperature"
    busy = conditions.get("busy")
    if busy is not None and not (isinstance(busy, list) and all(
            isinstance(b, dict) and _finite(b.get("cpu_pct")) and b["cpu_pct"] >= 0 for b in busy)):
        return f"conditions.busy {_said(busy)}: not a list of processes"
    return None


def result_problem(raw: dict[str, Any], runs_asked: int | None, threads_asked: int | None = None,
                   stop: tuple[int, float] | None = None) -> str | None:
    """Why a harness result (its JSON, parsed) cannot be believed, or None. A result without a
    ``latency_ms`` block is a runtime's error or a description, checked elsewhere. ``stop``: the request's
    (min_runs, target_ci; 0 for every run). A result with no "stopping" block (a harness before version 5)
    must hold exactly the runs asked for."""
    if "latency_ms" in raw:
        problem = latency_problem(raw["latency_ms"], runs_asked, raw.get("stopping"))
        if problem:
            return problem
        if "stopping" in raw:
            problem = stopping_problem(raw["stopping"], raw["latency_ms"]["runs"], runs_asked, stop)
            if problem:
                return problem
    for key in ("peak_rss_mb", "rss_before_load_mb", "load_ms"):
        problem = _memory_problem(raw, key)
        if problem:
            return problem.replace("memory figure", "duration") if key == "load_ms" else problem
    if threads_asked is not None and raw.get("threads") not in (None, threads_asked):
        return f"threads {_said(raw.get('threads'))}, {threads_asked} asked for"
    arena = raw.get("arena_bytes")
    if arena is not None and not (isinstance(arena, int) and not isinstance(arena, bool) and arena >= 0):
        return f"arena_bytes {_said(arena)}: not a size"
    ops = (raw.get("op_profile") or {}).get("ops") if isinstance(raw.get("op_profile"), dict) else None
    if ops is not None and not (isinstance(ops, list) and all(
            isinstance(o, dict) and _finite(o.get("ms")) and o["ms"] >= 0 for o in ops)):
        return "op_profile: an op time that is not a duration"
    if ops and not all(o.get("dtype") is None or (isinstance(o["dtype"], str) and o["dtype"].isidentifier()
                                                  and len(o["dtype"]) <= 16) for o in ops):
        return "op_profile: an op's dtype that is not a type name"
    return _conditions_problem(raw.get("conditions"))


def outputs_problem(outputs: dict[str, Any] | None,
                    expected: tuple[tuple[tuple[int, ...], str], ...] | None) -> str | None:
    """Why the outputs a board sent back are not the model's (count, shapes, dtypes), or None. The
    runtime's output order may differ from the artifact's record: they are matched as a set."""
    if expected is None:
        return None
    if outputs is None:
        return "no outputs sent back"
    if len(outputs) != len(expected):
        return f"{len(outputs)} outputs, the model has {len(expected)}"
    wanted = [(tuple(int(d) for d in shape), np.dtype(dtype).name) for shape, dtype in expected]
    for name, value in outputs.items():
        got = np.asarray(value)
        found = (tuple(got.shape), got.dtype.name)
        if found not in wanted:
            return (f"{_said(name)} of shape {list(found[0])} and dtype {found[1]}, the model's are "
                    + ", ".join(f"{list(s)} {d}" for s, d in wanted))
        wanted.remove(found)
    return None
