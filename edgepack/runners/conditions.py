"""Measuring conditions: what the board said about how it ran, and whether the figure can be trusted.

The harness reports, with every timing, the governor and clock of the cores it could use, the
temperature before and after, the Raspberry Pi firmware's throttle flags, the load average and the
other processes that took CPU while it timed. Here they are read into :class:`Conditions` and judged
(:class:`Judge`): a measurement taken while throttled, with the cores under-clocked against the
profile's figure, or with a spread between runs past the profile's bound is **unstable**. It is taken
again after a cool-down (bounded: ``cool_down_s``, ``unstable_retries``), and one that stays bad is kept
but labelled unstable wherever it appears; the search judges it by its p90, so noise is never the
reason it wins (:func:`measure_steady`).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgepack.runners.base import HarnessResult, Measurement, Runner, RunRequest
from edgepack.text import printable

if TYPE_CHECKING:
    from edgepack.profiles import DeviceProfile

#: the firmware's "now" bits (16-19 are the same, "since boot": recorded, not judged)
THROTTLE_NOW = {0x1: "under-voltage", 0x2: "ARM clock capped", 0x4: "throttled", 0x8: "soft temperature limit"}
UNDER_CLOCK = 0.9  # the cores ran below this share of the profile's clock
CLOCK_WINDOW_S = 0.2  # a shorter timed stretch may end before the governor raised the clock: not judged
SPREAD_MIN_RUNS = 5  # fewer runs say nothing about their spread
QUIET_PAUSE_S = 5.0  # the cool-down of a board that reports neither temperature nor throttling


def spread_pct(runs: list[float]) -> float | None:
    """The runs' median absolute deviation, in % of their median: robust to the odd slow run (a page
    fault, a timer tick), large when the board's speed itself wanders."""
    if len(runs) < 2:
        return None
    median = statistics.median(runs)
    return 100.0 * statistics.median(abs(r - median) for r in runs) / median if median > 0 else None


def throttle_words(flags: int) -> list[str]:
    return [word for bit, word in THROTTLE_NOW.items() if flags & bit]


def _pair(values: Any) -> tuple[Any, Any]:
    return (values[0], values[-1]) if isinstance(values, list) and values else (None, None)


def _readings(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values if v is not None) if isinstance(values, list) else ()


@dataclass(frozen=True)
class Conditions:
    """One measurement's conditions (validated already, in edgepack.runners.validation)."""

    cores: tuple[int, ...] = ()
    governor: tuple[str, ...] = ()
    cur_khz: tuple[int, ...] = ()  # the cores' clock just after the last timed run
    max_khz: tuple[int, ...] = ()  # what the cores can do (cpuinfo_max_freq)
    scaling_max_khz: tuple[int, ...] = ()  # what the governor allows
    temperature_c: tuple[float | None, float | None] = (None, None)  # before, after
    throttled: tuple[int | None, int | None] = (None, None)  # the firmware's flags, before and after
    throttled_source: str | None = None
    load_avg: tuple[float, ...] = ()
    busy: tuple[dict[str, Any], ...] | None = None  # other processes over 10% of a core; None: not measured
    seconds: float = 0.0  # the timed stretch
    spread_pct: float | None = None  # of the timed runs

    @classmethod
    def of(cls, result: HarnessResult) -> Conditions | None:
        raw = result.raw.get("conditions")
        if not isinstance(raw, dict):
            return None
        busy = raw.get("busy")
        return cls(
            cores=tuple(int(c) for c in raw.get("cores") or () if isinstance(c, int)),
            governor=tuple(str(g) for g in raw.get("governor") or ()),
            cur_khz=_readings(raw.get("cur_khz")), max_khz=_readings(raw.get("max_khz")),
            scaling_max_khz=_readings(raw.get("scaling_max_khz")),
            temperature_c=_pair(raw.get("temperature_c")), throttled=_pair(raw.get("throttled")),
            throttled_source=raw.get("throttled_source"),
            load_avg=tuple(float(v) for v in raw.get("load_avg") or ()),
            busy=tuple(b for b in busy if isinstance(b, dict)) if isinstance(busy, list) else None,
            seconds=float(raw.get("seconds") or 0.0), spread_pct=spread_pct(result.runs_ms))

    @property
    def throttled_now(self) -> int:
        return (self.throttled[0] or 0) | (self.throttled[1] or 0)

    def line(self) -> str:
        """One line for a person: governor, clock, temperature, throttling, load, busy processes, spread."""
        parts = []
        if self.governor:
            parts.append("governor " + "/".join(self.governor))
        if self.cur_khz:
            top = f"/{max(self.max_khz) / 1e6:.2f}" if self.max_khz else ""
            parts.append(f"clock {max(self.cur_khz) / 1e6:.2f}{top} GHz")
        before, after = self.temperature_c
        if after is not None:
            parts.append(f"{before if before is not None else '?'}->{after} C")
        if self.throttled[1] is not None or self.throttled[0] is not None:
            flags = self.throttled_now
            parts.append(f"throttled {flags:#x} ({', '.join(throttle_words(flags))})" if flags & 0xF
                         else "not throttled")
        if self.load_avg:
            parts.append(f"load {self.load_avg[0]:.2f}")
        if self.busy:
            parts.append("busy: " + ", ".join(f"{printable(str(b.get('name')), 40)} {b.get('cpu_pct')}%"
                                              for b in self.busy[:3]))
        if self.spread_pct is not None:
            parts.append(f"spread {self.spread_pct:.1f}%")
        return "; ".join(parts) or "no readings"


@dataclass(frozen=True)
class Judge:
    """When a measurement is unstable, and what is done about it (a profile's ``[benchmark]``)."""

    clock_ghz: float | None = None  # the profile's clock; None: not judged (this machine's is not fixed)
    max_spread_pct: float = 25.0
    cool_down_s: float = 30.0
    retries: int = 1

    @classmethod
    def for_profile(cls, profile: DeviceProfile) -> Judge:
        bench = profile.benchmark
        return cls(profile.clock_ghz if bench.judge_clock else None, bench.max_spread_pct,
                   bench.cool_down_s, bench.unstable_retries)

    def reasons(self, result: HarnessResult) -> list[str]:
        """Why this measurement is unstable (none: it is not)."""
        found = Conditions.of(result)
        if found is None:
            return []
        why = []
        if found.throttled_now & 0xF:
            why.append(f"throttled ({', '.join(throttle_words(found.throttled_now))}: "
                       f"{found.throttled_source} {found.throttled_now:#x})")
        if self.clock_ghz:
            want_khz = self.clock_ghz * 1e6
            if found.scaling_max_khz and max(found.scaling_max_khz) < want_khz * 0.95:
                why.append(f"clock capped at {max(found.scaling_max_khz) / 1e6:.2f} GHz by the governor, "
                           f"the profile's is {self.clock_ghz:g} GHz")
            elif found.cur_khz and found.seconds >= CLOCK_WINDOW_S and max(found.cur_khz) < want_khz * UNDER_CLOCK:
                why.append(f"under-clocked: the cores ran at {max(found.cur_khz) / 1e6:.2f} GHz, the profile's "
                           f"clock is {self.clock_ghz:g} GHz")
        runs = result.runs_ms
        if found.spread_pct is not None and len(runs) >= SPREAD_MIN_RUNS and found.spread_pct > self.max_spread_pct:
            why.append(f"spread {found.spread_pct:.0f}% between runs (over {self.max_spread_pct:g}%)")
        return why


def cool_down(runner: Runner, judge: Judge, started_c: float | None) -> float:
    """Wait until the board says it is no longer throttled and no warmer than when the measurement
    started (``harness.py --describe``'s "now"), at most ``judge.cool_down_s``; seconds waited. A board
    that reports neither is given a short pause."""
    start = time.monotonic()
    deadline = start + judge.cool_down_s
    while (left := deadline - time.monotonic()) > 0:
        now = runner.describe().raw.get("now")
        now = now if isinstance(now, dict) else {}
        flags, temp = now.get("throttled"), now.get("temperature_c")
        if flags is None and temp is None:
            time.sleep(min(QUIET_PAUSE_S, left))
            break
        cool = (not isinstance(flags, int) or not flags & 0xF) and (
            not isinstance(temp, int | float) or started_c is None or temp <= started_c + 1.0)
        if cool:
            break
        time.sleep(min(2.0, left))
    return time.monotonic() - start


def measure_steady(runner: Runner, request: RunRequest, judge: Judge,
                   say: Callable[[str], None] = lambda _: None) -> Measurement:
    """Measure; while the conditions make it unstable, cool down and measure again (``judge.retries``
    times at most). The result says its conditions' verdict (``stability``): stable, or unstable with why
    and after how many attempts. A failure on the board is returned as it is."""
    measurement = runner.run([request])[0]
    attempts = 1
    while measurement.ok and (why := judge.reasons(measurement.result)):
        if attempts > judge.retries:
            say(f"{measurement.device}: kept as UNSTABLE after {attempts} attempts ({'; '.join(why)})")
            return _with_stability(measurement, why, attempts)
        conditions = Conditions.of(measurement.result)
        say(f"{measurement.device}: {request.model.name} measured while {'; '.join(why)}: cooling down "
            f"(at most {judge.cool_down_s:g} s), then measuring again")
        cool_down(runner, judge, conditions.temperature_c[0] if conditions else None)
        again = runner.run([request])[0]
        attempts += 1
        if not again.ok:
            return again
        measurement = again
    return _with_stability(measurement, [], attempts) if measurement.ok else measurement


def _with_stability(measurement: Measurement, why: list[str], attempts: int) -> Measurement:
    measurement.result = HarnessResult({**measurement.result.raw,
                                        "stability": {"unstable": why, "attempts": attempts}})
    return measurement
