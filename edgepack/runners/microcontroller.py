"""The board of a microcontroller profile, as far as this machine can be it: its toolchains.

A microcontroller is not reached over SSH. Each model runs here under TFLite Micro's own interpreter
(the tflite-micro wheel: TFLM's reference kernels, which CMSIS-NN and ESP-NN match bit for bit), on
the held-out samples when given: its outputs, and the exact arena TFLM planned. The latency is an
estimate, labelled so everywhere: Vela's for an Ethos-U profile (the compiler's estimate of the NPU,
plus the profile's cycles per MAC for ops left on the CPU), else the profile's cycles per MAC at its
clock. The memory figure is the arena (for Ethos-U: Vela's SRAM, which holds TFLM's arena there).
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgepack.latency import LatencySource
from edgepack.profiles import DeviceProfile
from edgepack.runners.base import HarnessResult, Measurement, Runner, RunRequest
from edgepack.runners.local import LocalRunner


class MicrocontrollerRunner(Runner):
    """Runs each model under TFLite Micro here; its speed figures are estimates, never measurements."""

    def __init__(self, profile: DeviceProfile) -> None:
        assert profile.microcontroller is not None
        self.profile, self.mcu = profile, profile.microcontroller
        self.local = LocalRunner()
        tool = "Vela + TFLite Micro" if profile.compiler == "vela" else "TFLite Micro"
        self.label = f"{profile.name} ({tool} on this machine; latency estimated)"

    @property
    def op_profile_unavailable(self) -> str | None:
        return "a microcontroller: TFLite Micro's times here are this machine's" + (
            "; Vela's cycles per op are in vela_per-layer.csv" if self.profile.compiler else "")

    def identity(self) -> str:
        """The profile's content: a changed clock or Vela setting is estimated again, not looked up."""
        digest = hashlib.sha256(self.profile.path.read_bytes()).hexdigest()[:12]
        return f"toolchain:{self.profile.name}:{digest}"

    def describe(self) -> HarnessResult:
        from edgepack.toolchains.vela import vela_version

        found = self.local.describe().raw
        environment = dict(found.get("environment") or {})
        environment["toolchain"] = {"tflite-micro": "this machine", "vela": vela_version()} \
            if self.profile.compiler == "vela" else {"tflite-micro": "this machine"}
        return HarnessResult({**found, "environment": environment})

    def run(self, requests: list[RunRequest]) -> list[Measurement]:
        return [self._one(r) for r in requests]

    def _one(self, request: RunRequest) -> Measurement:
        if request.model.suffix != ".tflite":
            return Measurement(request, self.label, HarnessResult(),
                               "a microcontroller runs TFLite models only (TFLite Micro)")
        measurement = self.local.run([replace(request, runtime="tflite-micro", warmup=0, runs=1,
                                              op_profile=False)])[0]
        measurement.device = self.label
        if not measurement.ok:
            return measurement
        try:
            figures = self.estimate(request.model, measurement.result.raw)
        except Exception as exc:
            measurement.error = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            return measurement
        measurement.result = HarnessResult({**measurement.result.raw, **figures})
        return measurement

    def estimate(self, model: Path, raw: dict[str, Any]) -> dict[str, Any]:
        """The figures that replace the host's timing: latency estimate, memory, flash."""
        from edgepack.analysis.tflite_graph import summarize_tflite

        arena = raw.get("arena_bytes")
        figures: dict[str, Any] = {"host_latency_ms": raw.get("latency_ms"),
                                   "flash_kb": model.stat().st_size / 1024 + self.mcu.runtime_flash_kb}
        if self.profile.compiler == "vela":
            from edgepack.toolchains.vela import compile_model

            with tempfile.TemporaryDirectory(prefix="edgepack-vela-") as folder:
                report = compile_model(model, self.profile, Path(folder))
            cpu_macs = sum(op.macs for op in report.cpu_ops)
            p50 = report.inference_ms + self._cpu_ms(cpu_macs)
            ram_kb = max(report.sram_kb, (arena or 0) / 1024)
            figures.update(vela=report.to_dict(), flash_kb=report.flash_kb + self.mcu.runtime_flash_kb,
                           latency_source=LatencySource.COMPILER_ESTIMATE.label(f"Vela {report.version}"))
        else:
            p50 = self._cpu_ms(summarize_tflite(model).macs)
            ram_kb = (arena or 0) / 1024
            figures["latency_source"] = LatencySource.CYCLE_ESTIMATE.label()
        figures["latency_ms"] = {"p50": p50, "p90": p50, "runs": [p50]}
        figures["peak_rss_mb"] = (ram_kb + self.mcu.runtime_sram_kb) / 1024
        figures["sram_kb"] = ram_kb + self.mcu.runtime_sram_kb
        return figures

    def _cpu_ms(self, macs: int) -> float:
        return macs * self.mcu.cycles_per_mac / (self.profile.clock_ghz * 1e9) * 1000.0
