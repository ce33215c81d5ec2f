"""The runner seam: ``Runner.run(requests) -> list[Measurement]``.

A failure on the device (timeout, crash, out of memory, missing runtime, lost connection) is a
Measurement with ``error`` set, never an exception: one bad candidate must not end a search.
Exceptions are for the user's own mistakes (unknown host key, bad identity file, missing model).
"""

from __future__ import annotations

import abc
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from edgepack.errors import EdgepackError
from edgepack.latency import LatencySource

HARNESS = Path(__file__).resolve().parent / "harness.py"
EMULATED = LatencySource.EMULATED.value  # the label of every timing taken on an emulated board
#: the median's 95% interval, half-width over the median, at which the timed runs stop (issue 27)
DEFAULT_TARGET_CI = 0.02
DEFAULT_MIN_RUNS = 10


class StopReason(str, Enum):
    """Why the harness stopped timing: the median's interval was tight enough, every run asked for was
    done, or the time allowed (``max_seconds``) ran out."""

    CI = "ci"
    MAX_RUNS = "max runs"
    TIME = "time"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class RunRequest:
    """One benchmark of one model file. ``inputs``: an .npz of input arrays, else random inputs.

    ``runs`` is the most timed runs. From ``min_runs`` on, the harness stops as soon as the half-width
    of the median's 95% confidence interval (distribution-free, from order statistics) is at most
    ``target_ci`` of the median (0.02: the median known to about +-2%); ``target_ci=None`` times every one of
    ``runs`` (what a test that needs a long run, or a fixed count, asks for). ``max_seconds`` stops the
    timed runs after that long (None: no limit; the runner's ``timeout_s`` still kills the whole run).
    """

    model: Path
    threads: int = 1
    warmup: int = 10
    runs: int = 50
    min_runs: int = DEFAULT_MIN_RUNS
    target_ci: float | None = DEFAULT_TARGET_CI
    max_seconds: float | None = None
    inputs: Path | None = None
    want_outputs: bool = False
    op_profile: bool = False
    timeout_s: float = 300.0
    runtime: str = "auto"
    delegate: str | None = None  # a TFLite external delegate on the board (the i.MX 93's Ethos-U), if there
    #: with want_outputs: each output's (shape, dtype) as the board must send it back, in order
    expected_outputs: tuple[tuple[tuple[int, ...], str], ...] | None = None


    def harness_args(self, model: str, inputs: str | None, outputs: str | None,
                     model_sha256: str | None = None) -> list[str]:
        args = ["--model", model, "--runtime", self.runtime, "--threads", str(self.threads),
                "--warmup", str(self.warmup), "--runs", str(self.runs), "--min-runs", str(self.min_runs),
                "--target-ci", repr(float(self.target_ci or 0.0))]
        if self.max_seconds:
            args += ["--max-seconds", repr(float(self.max_seconds))]
        if model_sha256:
            args += ["--model-sha256", model_sha256]
        if inputs:
            args += ["--inputs", inputs]
        if outputs:
            args += ["--save-outputs", outputs]
        if self.op_profile:
            args.append("--op-profile")
        if self.delegate and Path(model).suffix == ".tflite":
            args += ["--delegate", self.delegate]
        return args


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class OpTime:
    """One op's time per run (ms). ``dtype``: the element type it produced ("uint8", "float", "float16"),
    which says whether the runtime ran it on quantized data; None where the profiler does not say
    (TFLite's benchmark_model)."""

    name: str
    type: str
    ms: float
    dtype: str | None = None


@dataclass(frozen=True)
class OpProfile:
    """Per-op times of one model on a board, slowest first; or why there are none."""

    ops: tuple[OpTime, ...] = ()
    unavailable: str | None = None

    @classmethod
    def from_dict(cls, data: Any) -> OpProfile | None:
        if not isinstance(data, dict):
            return None
        ops = tuple(OpTime(str(o.get("name")), str(o.get("type")), float(o.get("ms") or 0.0),
                           str(o["dtype"]) if o.get("dtype") is not None else None)
                    for o in data.get("ops") or [] if isinstance(o, dict))
        why = data.get("unavailable")
        return cls(ops, str(why) if why else None)

    def to_dict(self) -> dict[str, Any]:
        return {"ops": [o.__dict__ for o in self.ops]} if self.ops or not self.unavailable else \
            {"unavailable": self.unavailable}


@dataclass(frozen=True)
class ToolchainFigures:
    """A microcontroller's figures from its toolchains: TFLM's arena, SRAM and flash with the firmware's,
    and (Ethos-U) Vela's report as Vela's own figures."""

    arena_bytes: int
    sram_kb: float
    flash_kb: float
    latency_source: str
    vela: dict[str, Any] | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ToolchainFigures:
        vela = raw.get("vela")
        return cls(int(raw.get("arena_bytes") or 0), float(raw.get("sram_kb") or 0.0),
                   float(raw.get("flash_kb") or 0.0), str(raw.get("latency_source") or ""),
                   vela if isinstance(vela, dict) else None)

    def to_dict(self) -> dict[str, Any]:
        return {"arena_bytes": self.arena_bytes, "sram_kb": self.sram_kb, "flash_kb": self.flash_kb,
                **({"vela": self.vela} if self.vela else {}), "latency_source": self.latency_source}


@dataclass(frozen=True)
class Environment:
    """What the harness says of the device it ran on (``environment``)."""

    uname: str | None = None
    cpu_model: str | None = None
    cpu_count: int | None = None
    cpu_governor: str | None = None
    temperature_c: float | None = None
    python: str | None = None
    numpy: str | None = None
    emulated: bool = False

    @classmethod
    def from_dict(cls, data: Any) -> Environment:
        found = data if isinstance(data, dict) else {}
        text = {k: str(found[k]) if found.get(k) is not None else None
                for k in ("uname", "cpu_model", "cpu_governor", "python", "numpy")}
        count = found.get("cpu_count")
        return cls(**text, cpu_count=count if isinstance(count, int) else None,
                   temperature_c=_number(found.get("temperature_c")), emulated=found.get("emulated") is True)

    def line(self) -> str:
        """The figures a person compares boards by, in the order a report lists them."""
        return ", ".join(f"{k} {v}" for k, v in (("uname", self.uname), ("cpu_model", self.cpu_model),
                                                  ("cpu_count", self.cpu_count), ("python", self.python),
                                                  ("numpy", self.numpy)) if v is not None)


@dataclass(frozen=True)
class HarnessResult:
    """The harness's JSON, parsed once, here. ``raw`` keeps every field it printed (for the records,
    ``--json`` and the manifest); the fields are what edgepack itself reads."""

    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, data: Any) -> HarnessResult:
        return cls(dict(data) if isinstance(data, dict) else {})

    @property
    def latency_ms(self) -> dict[str, float]:
        """p50, p90, p99, mean, std, min, max over the timed runs (milliseconds)."""
        return {k: float(v) for k, v in self._block("latency_ms").items() if k != "runs" and _number(v) is not None}

    @property
    def p50_ms(self) -> float | None:
        return self.latency_ms.get("p50")

    @property
    def p90_ms(self) -> float | None:
        return self.latency_ms.get("p90")

    @property
    def runs_ms(self) -> list[float]:
        """Every timed run's latency, in order."""
        runs = self._block("latency_ms").get("runs")
        return [float(v) for v in runs] if isinstance(runs, list) else []

    @property
    def stopping(self) -> dict[str, Any]:
        """The harness's "stopping" block (validated in edgepack.runners.validation); {}: an older harness."""
        return self._block("stopping")

    @property
    def runs_done(self) -> int:
        """How many timed runs the figures are of (at most the request's ``runs``)."""
        found = self.stopping.get("runs_done")
        return found if isinstance(found, int) and not isinstance(found, bool) else len(self.runs_ms)

    @property
    def median_ci_ms(self) -> tuple[float, float] | None:
        """The 95% confidence interval of the median latency (ms); None: too few runs (under 6) for one."""
        found = self.stopping.get("median_ci_ms")
        if isinstance(found, list) and len(found) == 2 and all(_number(v) is not None for v in found):
            return float(found[0]), float(found[1])
        return None

    @property
    def median_ci_rel(self) -> float | None:
        """That interval's half-width over the median (0.02: the median is known to +-2%)."""
        return _number(self.stopping.get("median_ci_rel"))

    @property
    def stopped_by(self) -> StopReason | None:
        """Why the timed runs stopped; None: the harness did not say (an older one, or no timing)."""
        found = self.stopping.get("stopped_by")
        return StopReason(found) if found in {r.value for r in StopReason} else None

    @property
    def peak_rss_mb(self) -> float | None:
        return _number(self.raw.get("peak_rss_mb"))

    @property
    def runtime(self) -> str | None:
        return self.raw.get("runtime")

    @property
    def op_profile(self) -> OpProfile | None:
        return OpProfile.from_dict(self.raw.get("op_profile"))

    @property
    def runtime_version(self) -> str | None:
        found = self.raw.get("runtime_version")
        return str(found) if found is not None else None

    @property
    def threads(self) -> int | None:
        found = self.raw.get("threads")
        return found if isinstance(found, int) else None

    @property
    def load_ms(self) -> float | None:
        return _number(self.raw.get("load_ms"))

    @property
    def attempts(self) -> int:
        """How many times it was measured before these figures (edgepack.runners.conditions)."""
        found = self.raw.get("stability")
        tries = found.get("attempts") if isinstance(found, dict) else None
        return tries if isinstance(tries, int) else 1

    @property
    def delegate_problem(self) -> str | None:
        """Why the board's NPU delegate did not load (the model ran on the CPU); None: loaded, or none asked."""
        found = self.raw.get("delegate")
        if isinstance(found, dict) and found.get("loaded") is False:
            return f"{found.get('path')} {found.get('why')}"
        return None

    @property
    def toolchain(self) -> ToolchainFigures | None:
        """A microcontroller's figures (its runner puts them here), else None."""
        return ToolchainFigures.from_dict(self.raw) if "arena_bytes" in self.raw else None

    @property
    def environment(self) -> dict[str, Any]:
        return self._block("environment")

    def _block(self, key: str) -> dict[str, Any]:
        """The result's ``key`` object ({} when it is missing or not an object)."""
        found = self.raw.get(key)
        return found if isinstance(found, dict) else {}

    @property
    def device(self) -> Environment:
        """The environment, typed."""
        return Environment.from_dict(self.raw.get("environment"))

    @property
    def emulated(self) -> bool:
        """Measured under emulation (an arm64 userland on an x86 CPU): right for outputs, not for speed."""
        return self.device.emulated

    @property
    def latency_source(self) -> str:
        """Where the latency came from, in words: "measured", the emulated label, or the toolchain's
        estimate ("compiler estimate (Vela ...)"); :attr:`source` is the same as a LatencySource."""
        found = self.raw.get("latency_source")
        return str(found) if found else EMULATED if self.emulated else LatencySource.MEASURED.value

    @property
    def source(self) -> LatencySource:
        return LatencySource.of_label(self.latency_source)

    @property
    def error_kind(self) -> str | None:
        return self.raw.get("error_kind")

    @property
    def unstable(self) -> list[str]:
        """Why the measuring conditions make these figures unstable (edgepack.runners.conditions); empty:
        stable, or not judged."""
        found = self.raw.get("stability")
        why = found.get("unstable") if isinstance(found, dict) else None
        return [str(w) for w in why] if isinstance(why, list) else []



@dataclass
class Measurement:
    """What the harness reported (``result``), or why there is nothing (``error``). ``board_lost``:
    the board itself failed (connection lost, unreachable), not the model: a pool moves the request to
    another board."""

    request: RunRequest
    device: str  # "local" or user@host:port
    result: HarnessResult = field(default_factory=HarnessResult)
    error: str | None = None
    outputs: dict[str, Any] | None = None
    wall_s: float = 0.0  # from the runner's side, transfers included
    uploaded_bytes: int = 0
    board_lost: bool = False
    measured_at: tuple[float, float] | None = None  # wall clock (epoch s) while the board was held

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def error_kind(self) -> str | None:
        """The harness's word for what failed (missing_runtime, model_changed, ...), when it said one."""
        return self.result.error_kind

    @property
    def latency_ms(self) -> dict[str, float]:
        return self.result.latency_ms

    @property
    def p50_ms(self) -> float | None:
        return self.result.p50_ms

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "model": str(self.request.model), "error": self.error,
                "wall_s": self.wall_s, "uploaded_bytes": self.uploaded_bytes,
                **self.result.raw, "latency_source": self.result.latency_source}


class DeviceSetupError(EdgepackError):
    """The board lacks what every measurement needs (its Python, numpy): no candidate can run there."""


def raise_for_setup(measurement: Measurement) -> Measurement:
    """A board without numpy fails every request alike: that is the user's to fix, said once, not a
    failed candidate (a missing runtime only fails the candidates of that runtime)."""
    if measurement.error_kind == "missing_numpy":
        raise DeviceSetupError(f"{measurement.device}: {measurement.error}")
    return measurement


class Runner(abc.ABC):
    """Measures models on one device."""

    label: str

    @abc.abstractmethod
    def run(self, requests: list[RunRequest]) -> list[Measurement]:
        """Measure each request in order; never raises for failures on the device."""

    def identity(self) -> str:
        """What identifies the device in the records ("local", or its SSH host key fingerprint)."""
        return self.label

    @property
    def op_profile_unavailable(self) -> str | None:
        """Why this device gives no per-op times of its own; None: it does (the harness's profilers)."""
        return None

    def describe(self) -> HarnessResult:
        """The device's environment as the harness reports it (``--describe``): Python, CPU, emulated."""
        return HarnessResult()

    def close(self) -> None:  # noqa: B027 - optional for runners that hold no connection
        """Release connections; the runner may be used again afterwards."""


def _printed_json(stdout: str) -> dict[str, Any]:
    """The harness's one JSON object (its last line starting with "{"), or {} when there is none."""
    line = next((ln for ln in reversed(stdout.strip().splitlines()) if ln.startswith("{")), "")
    try:
        result = json.loads(line) if line else {}
    except json.JSONDecodeError:
        result = {}
    return result if isinstance(result, dict) else {}


def parse_description(stdout: str) -> HarnessResult:
    """What ``harness.py --describe`` printed (an empty result when it printed no JSON)."""
    return HarnessResult(_printed_json(stdout))


def parse_harness_output(request: RunRequest, device: str, stdout: str, stderr: str, code: int | None,
                         wall_s: float) -> Measurement:
    """The harness prints one JSON object (last line of stdout); anything else is an error Measurement,
    and so is a result whose figures cannot be believed (edgepack.runners.validation): a board's numbers
    are checked here, before anything records or compares them."""
    from edgepack.runners.validation import result_problem
    from edgepack.text import printable

    result = _printed_json(stdout)
    if result.get("error"):
        message = printable(str(result["error"]))
        if result.get("install"):  # the board's words, never printed as a command to run
            message += f" (the board suggests: {printable(str(result['install']), 120)!r})"
        kind = result.get("error_kind")
        return Measurement(request, device, HarnessResult({"error_kind": kind} if isinstance(kind, str) else {}),
                           message, wall_s=wall_s)
    if not result:
        tail = printable((stderr.strip().splitlines() or ["no output"])[-1])
        return Measurement(request, device, HarnessResult(), f"harness exited with code {code}: {tail}",
                           wall_s=wall_s)
    problem = result_problem(result, request.runs, request.threads,
                             stop=(request.min_runs, request.target_ci or 0.0))
    if problem:
        who = "this machine" if device == "local" else f"board {device}"
        return Measurement(request, device, HarnessResult({"error_kind": "bad_figures"}),
                           f"{who} returned {problem}", wall_s=wall_s)
    return Measurement(request, device, HarnessResult(result), None, wall_s=wall_s)
