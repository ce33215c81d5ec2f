"""Device profiles: what a board has and runs, validated from ``device_profiles/*.toml``.

A profile is data only. It is looked up by name among, in increasing priority: the profiles shipped
with edgepack, the user's ``$XDG_CONFIG_HOME/edgepack/devices/*.toml`` (default ``~/.config``), and
files given with ``--profile FILE``. The file's stem is the profile's name. Unknown keys are errors.
"""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgepack.errors import ProfileError, UnknownDeviceError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

Precision = Literal["fp32", "fp16", "int8", "dynamic"]
Runtime = Literal["tflite", "tflite-gpu", "tflite-edgetpu", "tflite-micro", "onnxruntime"]
Accelerator = Literal["ethos-u55-32", "ethos-u55-64", "ethos-u55-128", "ethos-u55-256", "ethos-u65-256",
                      "ethos-u65-512", "ethos-u85-128", "ethos-u85-256", "ethos-u85-512", "ethos-u85-1024",
                      "ethos-u85-2048"]
ConvertRoute = Literal["onnx2tf", "litert-torch", "tflite-converter", "torch.onnx", "tf2onnx",
                       "onnx-to-torch", "keras-export"]
IoDtype = Literal["float32", "float16", "int8", "uint8"]
Positive = Annotated[float, Field(gt=0)]

#: Where the profiles shipped with edgepack live (a checkout or an editable install).
BUILTIN_DIR = Path(__file__).resolve().parent.parent / "device_profiles"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Precisions(_Strict):
    supported: list[Precision] = Field(min_length=1)
    required: list[Precision] = []
    io_dtypes: list[IoDtype] = ["float32"]


class Ops(_Strict):
    """Ops the device's runtimes execute. ``"all"``: every builtin op of that runtime."""

    source: str = Field(min_length=1)
    tflite: list[str] | Literal["all"] | None = None
    onnx: list[str] | Literal["all"] | None = None
    notes: str = ""


class SshDefaults(_Strict):
    user: str = "pi"
    port: int = Field(default=22, ge=1, le=65535)
    python: str = "python3"


class BenchmarkDefaults(_Strict):
    warmup: int = Field(default=10, ge=0)
    runs: int = Field(default=50, ge=1)
    threads: int = Field(default=1, ge=1)
    # When a measurement is unstable (edgepack.runners.conditions): the cores' clock against clock_ghz
    # (off where the profile's clock is not a fixed figure), the runs' spread (median absolute deviation,
    # % of the median), and what is done about it: a cool-down of at most cool_down_s, then measured again.
    judge_clock: bool = True
    max_spread_pct: float = Field(default=25.0, gt=0)
    cool_down_s: float = Field(default=30.0, ge=0)
    unstable_retries: int = Field(default=1, ge=0)


class Roofline(_Strict):
    """Peak figures for a roofline estimate; a lower bound on latency, never a measurement."""

    fp32_gflops: float = Field(ge=0)
    fp16_gflops: float | None = Field(default=None, ge=0)
    int8_gops: float = Field(ge=0)
    memory_gbps: Positive
    source: str = Field(min_length=1)


class Tolerances(_Strict):
    """How close a converted model must stay to its source (fp32 conversions)."""

    max_abs_error_rel: Positive = 1e-4
    min_cosine: float = Field(default=0.9999, ge=-1, le=1)
    min_top1_agreement: float = Field(default=1.0, ge=0, le=1)


class Vela(_Strict):
    """Arm Vela's view of an Ethos-U system: what ``vela --config`` reads, written from here.
    ``system_config`` holds the keys of a ``[System_Config.*]`` section (core_clock, axi0_port, ...)."""

    accelerator: Accelerator
    system_config: dict[str, float | str]
    memory_mode: Literal["Shared_Sram", "Dedicated_Sram", "Sram_Only"]
    arena_cache_size_kb: Positive | None = None
    #: On a Linux board (i.MX 93): the TFLite external delegate that hands Vela's custom op to the NPU.
    delegate: str | None = None
    source: str = Field(min_length=1)


class Microcontroller(_Strict):
    """A microcontroller's memories and the TFLite Micro build that runs on it."""

    cpu: str = Field(min_length=1)
    flash_kb: Positive
    sram_kb: Positive
    psram_kb: float = Field(default=0, ge=0)
    #: Flash and SRAM the firmware takes besides the model and its arena (TFLM, kernels, the app).
    runtime_flash_kb: float = Field(ge=0)
    runtime_sram_kb: float = Field(default=0, ge=0)
    kernels: str = Field(min_length=1)
    #: For the latency estimate of CPU-run ops: int8 multiply-accumulates take this many core cycles.
    cycles_per_mac: Positive
    #: arm-none-eabi-gcc flags for this core; empty when that compiler does not target it (Xtensa).
    gcc_flags: list[str] = []
    source: str = Field(min_length=1)

    @property
    def model_flash_kb(self) -> float:
        return self.flash_kb - self.runtime_flash_kb


class DeviceProfile(_Strict):
    name: str
    path: Path
    description: str
    device_class: Literal["cpu", "gpu", "npu"] = Field(alias="class")
    architecture: Literal["aarch64", "armv7l", "x86_64", "riscv64", "cortex-m", "xtensa"]
    cores: int = Field(ge=1)
    clock_ghz: Positive
    ram_mb: Positive
    memory_budget_mb: Positive
    on_chip_memory_mb: float | None = Field(default=None, gt=0)
    runtimes: list[Runtime] = Field(min_length=1)
    precisions: Precisions
    ops: Ops
    ssh: SshDefaults = SshDefaults()
    benchmark: BenchmarkDefaults = BenchmarkDefaults()
    roofline: Roofline
    tolerances: Tolerances = Tolerances()
    #: Conversion routes in order of preference (direct routes first). All available routes to a
    #: format are tried and the one closest to the source is kept; this order breaks ties.
    #: The accelerator's own compiler, run on every int8 candidate (its figures are its estimates).
    compiler: Literal["vela"] | None = None
    vela: Vela | None = None
    microcontroller: Microcontroller | None = None
    #: Who says which ops the GPU delegate runs: TFLite's analyzer (the op list is the fallback).
    gpu_check: Literal["tflite-analyzer"] | None = None
    convert_routes: list[ConvertRoute] = ["tflite-converter", "litert-torch", "keras-export", "onnx2tf",
                                          "torch.onnx", "tf2onnx", "onnx-to-torch"]

    @model_validator(mode="after")
    def _toolchains_configured(self) -> DeviceProfile:
        if self.compiler == "vela" and self.vela is None:
            raise ValueError("compiler = \"vela\" needs a [vela] section")
        if "tflite-micro" in self.runtimes and self.microcontroller is None:
            raise ValueError("runtime tflite-micro needs a [microcontroller] section")
        return self

    @property
    def is_microcontroller(self) -> bool:
        return self.microcontroller is not None

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "class": self.device_class,
            "architecture": self.architecture,
            "cores": self.cores,
            "ram_mb": self.ram_mb,
            "memory_budget_mb": self.memory_budget_mb,
            "runtimes": list(self.runtimes),
            "precisions": list(self.precisions.supported),
            "description": self.description,
        }

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json", by_alias=True)
        data["path"] = str(self.path)
        return data


def load_profile(path: Path) -> DeviceProfile:
    """Read and validate one profile file. Raises :class:`ProfileError` naming the file and key."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProfileError(path, "", "no such file") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(path, "", f"not valid TOML ({exc})") from None
    for reserved in ("name", "path"):
        if reserved in raw:
            raise ProfileError(path, reserved, "set by edgepack (the file's name); remove it")
    try:
        return DeviceProfile(name=path.stem, path=path, **raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        problem = first["msg"]
        if first["type"] == "extra_forbidden":
            problem = "unknown key"
        raise ProfileError(path, key, problem) from None


def user_profiles_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgepack" / "devices"


class ProfileRegistry:
    """All profiles edgepack can see, by name; later sources override earlier ones."""

    def __init__(self, profiles: dict[str, DeviceProfile]) -> None:
        self._profiles = profiles

    @classmethod
    def discover(cls, extra_files: list[Path] | tuple[Path, ...] = ()) -> ProfileRegistry:
        files: list[Path] = []
        for directory in (BUILTIN_DIR, user_profiles_dir()):
            if directory.is_dir():
                files.extend(sorted(directory.glob("*.toml")))
        files.extend(Path(f) for f in extra_files)
        profiles: dict[str, DeviceProfile] = {}
        for file in files:
            profile = load_profile(file)
            profiles[profile.name] = profile
        return cls(profiles)

    def names(self) -> list[str]:
        return sorted(self._profiles)

    def all(self) -> list[DeviceProfile]:
        return [self._profiles[name] for name in self.names()]

    def get(self, name: str) -> DeviceProfile:
        try:
            return self._profiles[name]
        except KeyError:
            close = difflib.get_close_matches(name, self.names(), n=1, cutoff=0.5)
            raise UnknownDeviceError(name, self.names(), close[0] if close else None) from None
