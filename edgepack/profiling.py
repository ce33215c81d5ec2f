"""``edgepack profile``: measure one model on one or more boards (or this machine)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.errors import ModelFileError, UsageError
from edgepack.model import ModelHandle
from edgepack.profiles import DeviceProfile
from edgepack.runners.base import DEFAULT_TARGET_CI, Measurement, RunRequest
from edgepack.runners.conditions import Conditions, Judge, measure_steady
from edgepack.runners.factory import SshOptions, runners_for
from edgepack.runners.pool import in_parallel

if TYPE_CHECKING:
    from edgepack.artifact import Artifact
    from edgepack.data import Dataset


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
            "latency_source": first.result.latency_source,
            "peak_rss_mb": first.result.peak_rss_mb,
            "runtime": first.result.runtime,
            "runtime_version": first.result.runtime_version,
            "load_ms": first.result.load_ms,
            "environment": first.result.raw.get("environment"),
            "conditions": first.result.raw.get("conditions"),
            "conditions_line": conditions.line() if (conditions := Conditions.of(first.result)) else None,
            "unstable": first.result.unstable,
            "op_profile": first.result.raw.get("op_profile"),
            "measurements": [m.to_dict() for m in self.measurements],
        }
        return data


def profile_model(model: Path, profile: DeviceProfile, options: SshOptions, *, runs: int | None = None,
                  warmup: int | None = None, threads: int | None = None, timeout_s: float = 300.0,
                  say: Callable[[str], None] = lambda _: None, input_shape: str | None = None,
                  input_value: str | None = None) -> ProfileReport:
    """Time ``model`` on every board (no profiler on during the timed runs; the per-op profile comes
    from a separate session). The file is opened here first: a corrupt model is the user's to fix.
    Inputs are random, of the model's shapes (or ``--input-shape``'s); an input that is not a sample
    input gets its ``--input-value`` or is refused, never a made-up value."""
    from edgepack.engines import engine_for
    from edgepack.model import load_model

    if not model.is_file():
        raise ModelFileError(model, "no such file", "check the path")
    if model.suffix not in (".onnx", ".tflite"):
        raise UsageError(f"{model}: profile measures .onnx and .tflite files",
                         f"convert it first: edgepack convert {model} --to tflite")
    handle = load_model(model, input_shape=input_shape, input_value=input_value)
    engine_for(handle)  # opened by this machine's runtime: a corrupt file never reaches a board
    bench = profile.benchmark
    with tempfile.TemporaryDirectory(prefix="edgepack-profile-") as tmp:
        request = RunRequest(model, threads=threads or bench.threads,
                             warmup=bench.warmup if warmup is None else warmup, runs=runs or bench.runs,
                             target_ci=None if runs else DEFAULT_TARGET_CI,  # the user's count: every run
                             op_profile=True, timeout_s=timeout_s, inputs=_inputs_file(handle, Path(tmp)))
        boards = runners_for(profile, options, say)
        try:
            for runner in boards:
                runner.identity()  # connects: an unreachable board or a port that is no sshd is one line, exit 2
            judge = Judge.for_profile(profile)
            found: list[Measurement | None] = [None] * len(boards)

            def one(i: int) -> None:
                found[i] = measure_steady(boards[i], request, judge, say)

            in_parallel([lambda i=i: one(i) for i in range(len(boards))])  # the same request on each board at once
            return ProfileReport(profile, [m for m in found if m is not None])
        finally:
            for runner in boards:
                runner.close()


def _inputs_file(handle: ModelHandle, work: Path) -> Path | None:
    """An .npz of inputs when the harness cannot make them from the file alone (dynamic dimensions
    given by --input-shape, inputs fed whole); None: it draws random inputs of the file's shapes."""
    import numpy as np

    from edgepack.data import random_dataset
    from edgepack.model import load_model

    assert handle.path is not None
    if all(t.is_static and t.is_sample for t in load_model(handle.path).inputs):  # as the file declares them
        return None
    dynamic = [t for t in handle.inputs if not t.is_static]
    if dynamic:
        raise UsageError(f"input '{dynamic[0].name}' has dynamic dimensions {list(dynamic[0].shape)}",
                         f"give them: --input-shape {dynamic[0].name}:" +
                         ",".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in dynamic[0].shape))
    names = [t.name for t in handle.inputs]
    path = work / "inputs.npz"
    np.savez(path, **dict(zip(names, random_dataset(handle.inputs, 1).batch(names, 0), strict=True)))
    return path


def held_out_inputs(handle: ModelHandle, artifact: Artifact, data: Dataset) -> Path | None:
    """For a build: a held-out sample in the artifact's layout when the model has inputs fed whole (their
    values are the user's, never the harness's random ones), written beside the artifact once; None:
    random inputs of the file's shapes."""
    if all(s.is_sample for s in handle.inputs):
        return None
    import numpy as np

    names = [s.name for s in handle.inputs]
    sample = dict(zip(names, data.batch(names, 0), strict=True))
    path = artifact.path.parent / "inputs.npz"
    if not path.exists():
        np.savez(path, **{b.name: b.from_source(sample[b.source_name]) for b in artifact.inputs})
    return path
