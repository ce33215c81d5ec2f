"""``edgepack profile``: measure one model on one or more boards (or this machine)."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.errors import ModelFileError, UsageError
from edgepack.profiles import DeviceProfile
from edgepack.runners.base import Measurement, Runner, RunRequest
from edgepack.runners.factory import SshOptions, runners_for


@dataclass
class ProfileReport:
    device: DeviceProfile
    measurements: list[Measurement]

    def to_dict(self) -> dict[str, Any]:
        first = self.measurements[0]
        data: dict[str, Any] = {
            "device": self.device.name,
            "host": first.device,
            "error": first.error,
            "latency_ms": first.latency_ms,
            "peak_rss_mb": first.result.get("peak_rss_mb"),
            "runtime": first.result.get("runtime"),
            "runtime_version": first.result.get("runtime_version"),
            "load_ms": first.result.get("load_ms"),
            "environment": first.result.get("environment"),
            "op_profile": first.result.get("op_profile"),
            "measurements": [m.to_dict() for m in self.measurements],
        }
        return data


def profile_model(model: Path, profile: DeviceProfile, options: SshOptions, *, runs: int | None = None,
                  warmup: int | None = None, threads: int | None = None, timeout_s: float = 300.0) -> ProfileReport:
    if not model.is_file():
        raise ModelFileError(model, "no such file", "check the path")
    if model.suffix not in (".onnx", ".tflite"):
        raise UsageError(f"{model}: profile measures .onnx and .tflite files",
                         f"convert it first: edgepack convert {model} --to tflite")
    bench = profile.benchmark
    request = RunRequest(model, threads=threads or bench.threads, warmup=bench.warmup if warmup is None else warmup,
                         runs=runs or bench.runs, op_profile=True, timeout_s=timeout_s)
    runners = runners_for(profile, options)
    try:
        return ProfileReport(profile, _on_every_runner(runners, request))
    finally:
        for runner in runners:
            runner.close()


def _on_every_runner(runners: list[Runner], request: RunRequest) -> list[Measurement]:
    """The same request on every board, in parallel: one measurement per board."""
    results: list[Measurement | None] = [None] * len(runners)
    errors: list[BaseException] = []

    def work(index: int, runner: Runner) -> None:
        try:
            results[index] = runner.run([request])[0]
        except BaseException as exc:  # user errors (host keys, bad flags) are re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i, r)) for i, r in enumerate(runners)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [m for m in results if m is not None]
