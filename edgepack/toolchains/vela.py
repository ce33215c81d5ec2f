"""Arm Vela, the Ethos-U NPU compiler, run on an int8 TFLite model with a profile's system.

Vela maps each op to the NPU or leaves it to the CPU, places tensors in SRAM and flash (or DRAM) and
estimates the NPU's cycles. Its figures are the compiler's estimates: they are labelled so everywhere,
never called measurements. The profile's ``[vela]`` section is written as the ``.ini`` Vela reads.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepack.errors import EdgepackError
from edgepack.latency import LatencySource
from edgepack.profiles import DeviceProfile, Vela

COMPILER_ESTIMATE = LatencySource.COMPILER_ESTIMATE.value
VELA_MAIN = "import sys; from ethosu.vela.vela import main; sys.exit(main())"  # the `vela` script's body


class VelaError(EdgepackError):
    """Vela could not compile the model (or is not installed)."""


def vela_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ethos-u-vela")
    except PackageNotFoundError:
        return None


@dataclass(frozen=True)
class VelaOp:
    """One op of the model as Vela placed it: on the NPU or left to the CPU."""

    name: str
    op: str
    target: str  # "NPU" or "CPU"
    cycles: float
    macs: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class VelaReport:
    """What Vela said about one model: the compiled file, the per-op placement and its estimates."""

    compiled: Path
    per_layer_csv: Path
    summary_csv: Path
    accelerator: str
    memory_mode: str
    ops: list[VelaOp]
    summary: dict[str, str] = field(repr=False)
    version: str = ""

    @property
    def npu_ops(self) -> int:
        return sum(op.target == "NPU" for op in self.ops)

    @property
    def cpu_ops(self) -> list[VelaOp]:
        return [op for op in self.ops if op.target != "NPU"]

    def _number(self, key: str) -> float:
        try:
            return float(self.summary.get(key, "nan"))
        except ValueError:
            return float("nan")

    @property
    def inference_ms(self) -> float:
        """The NPU's estimated time per inference (ops left to the CPU are not in it)."""
        return self._number("inference_time") * 1000.0

    @property
    def sram_kb(self) -> float:
        return self._number("sram_memory_used")

    @property
    def flash_kb(self) -> float:
        """Where the weights and the command stream live: on- and off-chip flash, or DRAM."""
        return sum(self._number(k) for k in ("on_chip_flash_memory_used", "off_chip_flash_memory_used",
                                              "dram_memory_used"))

    @property
    def macs(self) -> int:
        return int(self._number("nn_macs"))

    def to_dict(self) -> dict[str, Any]:
        return {"latency_source": COMPILER_ESTIMATE, "compiler": f"vela {self.version}".strip(),
                "accelerator": self.accelerator, "memory_mode": self.memory_mode,
                "inference_ms": self.inference_ms, "sram_kb": self.sram_kb, "flash_kb": self.flash_kb,
                "npu_ops": self.npu_ops, "cpu_ops": [op.to_dict() for op in self.cpu_ops],
                "ops": len(self.ops), "macs": self.macs}


#: Where a memory mode puts the weights (const), the arena and the cache: Vela's own definitions.
MEMORY_AREAS = {"Sram_Only": ("Axi0", "Axi0", "Axi0"), "Shared_Sram": ("Axi1", "Axi0", "Axi0"),
                "Dedicated_Sram": ("Axi1", "Axi1", "Axi0")}


def write_config(profile: DeviceProfile, path: Path) -> str:
    """The profile's ``[vela]`` as a Vela ``.ini``; returns the name of its system config and memory mode."""
    vela = _settings(profile)
    name = f"edgepack_{profile.name}"
    const, arena, cache = MEMORY_AREAS[vela.memory_mode]
    lines = [f"; written by edgepack from the {profile.name} profile ({vela.source})",
             f"[System_Config.{name}]"]
    lines += [f"{key}={_ini_value(value)}" for key, value in vela.system_config.items()]
    lines += ["", f"; {vela.memory_mode}", f"[Memory_Mode.{name}]", f"const_mem_area={const}",
              f"arena_mem_area={arena}", f"cache_mem_area={cache}"]
    if vela.arena_cache_size_kb:
        lines.append(f"arena_cache_size={int(vela.arena_cache_size_kb * 1024)}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return name


def _ini_value(value: float | str) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _settings(profile: DeviceProfile) -> Vela:
    if profile.vela is None:
        raise VelaError(f"{profile.name} has no [vela] section", "use an Ethos-U profile (edgepack devices)")
    return profile.vela


def compile_model(model: Path, profile: DeviceProfile, out_dir: Path, timeout_s: float = 600.0) -> VelaReport:
    """Run Vela on ``model`` for the profile's Ethos-U; its outputs go to ``out_dir``."""
    vela = _settings(profile)
    out_dir.mkdir(parents=True, exist_ok=True)
    if vela_version() is None:
        raise VelaError("Arm Vela is not installed", "pip install ethos-u-vela")
    config = out_dir / f"{profile.name}_vela.ini"
    name = write_config(profile, config)
    argv = [sys.executable, "-c", VELA_MAIN, str(model.resolve()), "--output-dir", str(out_dir),
            "--accelerator-config", vela.accelerator, "--config", str(config.resolve()),
            "--system-config", name, "--memory-mode", name, "--verbose-performance"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, cwd=out_dir)
    except subprocess.TimeoutExpired:
        raise VelaError(f"Vela did not finish compiling {model.name} in {timeout_s:g} s") from None
    stem = model.stem
    compiled = out_dir / f"{stem}_vela.tflite"
    per_layer = out_dir / f"{stem}_per-layer.csv"
    summaries = sorted(out_dir.glob(f"{stem}_summary_*.csv"))
    if done.returncode != 0 or not compiled.exists() or not per_layer.exists() or not summaries:
        tail = (done.stderr.strip().splitlines() or done.stdout.strip().splitlines() or ["no output"])[-1]
        raise VelaError(f"Vela could not compile {model.name}: {tail[:300]}")
    return VelaReport(compiled, per_layer, summaries[0], vela.accelerator, vela.memory_mode,
                      read_per_layer(per_layer), read_summary(summaries[0]), vela_version() or "")


def read_summary(path: Path) -> dict[str, str]:
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return dict(zip(rows[0], rows[1], strict=False)) if len(rows) >= 2 else {}


def read_per_layer(path: Path) -> list[VelaOp]:
    """One VelaOp per op of the model: Vela lists an op's fused parts (a conv's ReLU) as extra rows
    under the same name; they are folded into the op they belong to."""
    ops: dict[str, VelaOp] = {}
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            name = (row.get("Name") or "").strip()
            cycles, macs = _float(row.get("Op Cycles")), int(_float(row.get("MAC Count")))
            found = ops.get(name)
            if found is None:
                ops[name] = VelaOp(name, (row.get("Original Operator") or "").strip(),
                                   (row.get("Target") or "").strip(), cycles, macs)
            else:
                ops[name] = VelaOp(name, found.op, found.target, found.cycles + cycles, found.macs + macs)
    return list(ops.values())


def _float(text: str | None) -> float:
    try:
        return float(text or 0)
    except ValueError:
        return 0.0
