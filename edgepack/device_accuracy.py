"""Accuracy checked ON the device: the held-out samples go to the board in the artifact's layout and
dtype, the board's own runtime runs every one, and the outputs come back to be scored here against the
labels (or against the original model's answers). A simulator's figure is not the board's figure:
another runtime build, another CPU, another delegate can each change the answers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.artifact import Artifact, Binding
from edgepack.data import Dataset
from edgepack.engines import Engine, dequantize_output, quantize_input
from edgepack.measurer import Job, Measurer
from edgepack.records import Purpose
from edgepack.runners.base import RunRequest

MAX_UPLOAD_BYTES = 8_000_000
MAX_SAMPLES = 500


@dataclass(frozen=True)
class OutputCheck:
    """One output's answers on the board against the original's (edgepack.fidelity)."""

    kind: str
    agreement: float | None
    channel_error_rel: float
    figure: str  # the deciding figure, in words


@dataclass
class DeviceAccuracy:
    """The chosen artifact's answers on the board, scored here. ``error``: the check could not run;
    ``skipped``: the user asked for none (--skip-device-check)."""

    samples: int = 0
    outputs: dict[str, OutputCheck] = field(default_factory=dict)
    top1_agreement: float | None = None
    accuracy: float | None = None  # with labels: on the board ...
    source_accuracy: float | None = None  # ... and the original's, on the same samples
    accuracy_drop_pts: float | None = None  # the worst loss in points
    error: str | None = None
    skipped: str | None = None

    @property
    def ran(self) -> bool:
        return self.error is None and self.skipped is None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeviceAccuracy:
        found = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        found["outputs"] = {name: OutputCheck(**o) for name, o in (found.get("outputs") or {}).items()}
        return cls(**found)


def _detail(binding: Binding) -> dict[str, Any]:
    """A binding in the shape of a TFLite tensor detail, for the engines' (de)quantization helpers."""
    return {"dtype": binding.dtype, "quantization": (binding.scale or 0.0, binding.zero_point or 0)}


def _to_artifact(binding: Binding, sample: np.ndarray) -> np.ndarray:
    return quantize_input(binding.from_source(sample), _detail(binding))


def write_inputs(artifact: Artifact, data: Dataset, path: Path) -> int:
    """An .npz of up to MAX_SAMPLES samples per input, stacked on a new first axis; returns how many."""
    names = [b.source_name for b in artifact.inputs]
    per_sample = sum(int(np.prod(b.shape)) * np.dtype(b.dtype).itemsize for b in artifact.inputs) or 1
    count = min(len(data), MAX_SAMPLES, max(1, MAX_UPLOAD_BYTES // per_sample))
    # by position (arr_0, arr_1, ...): the runtime's own input names may differ from the recorded ones
    arrays = [np.stack([_to_artifact(b, data.batch(names, i)[k]) for i in range(count)])
              for k, b in enumerate(artifact.inputs)]
    np.savez(path, *arrays)
    return count


def score(artifact: Artifact, outputs: dict[str, Any], data: Dataset, count: int, source: Engine,
          kinds: dict[str, str] | None = None) -> DeviceAccuracy:
    """Every output the device returned against the original's, by its kind (edgepack.fidelity); with
    labels and a scores output, accuracy too. ``accuracy_drop_pts`` is the worst loss in points."""
    from edgepack.convert.validate import by_binding
    from edgepack.engines import engine_for_file
    from edgepack.fidelity import drift

    local = engine_for_file(artifact.path, artifact.format)  # names the device's outputs, in its order
    raw = [np.asarray(outputs[f"output_{i}"]) for i in range(len(artifact.outputs))]
    names = [b.source_name for b in artifact.inputs]
    references = [source.run(data.batch(names, i)) for i in range(count)]
    result = DeviceAccuracy(count)
    losses = []
    for k, (binding, got) in enumerate(zip(artifact.outputs, by_binding(local, raw, artifact.outputs), strict=True)):
        got = dequantize_output(got, _detail(binding))
        got = np.stack([binding.to_source(g) for g in got]).astype(np.float64)
        reference = np.stack([r[k] for r in references]).astype(np.float64).reshape(got.shape)
        d = drift(binding.source_name, reference, got, (kinds or {}).get(binding.source_name))
        result.outputs[binding.source_name] = OutputCheck(d.kind, d.agreement, d.channel_error_rel, d.describe())
        if d.loss_pts is not None:
            losses.append(d.loss_pts)
        if d.kind == "scores" and result.top1_agreement is None:
            result.top1_agreement = d.agreement
            if data.labels is not None:
                labels = data.labels[:count]
                result.accuracy = float(np.mean(got.reshape(count, -1).argmax(1) == labels))
                result.source_accuracy = float(np.mean(reference.reshape(count, -1).argmax(1) == labels))
    if result.accuracy is not None and result.source_accuracy is not None:
        result.accuracy_drop_pts = 100.0 * (result.source_accuracy - result.accuracy)
    elif losses:
        result.accuracy_drop_pts = max(losses)
    return result


def check_on_device(artifact: Artifact, threads: int, data: Dataset, measurer: Measurer, source: Engine,
                    kinds: dict[str, str] | None, timeout_s: float, say: Callable[[str], None]) -> DeviceAccuracy:
    """Run the held-out samples through ``artifact`` on a board of the pool and score the answers here
    (from the records when this artifact was checked on this pool's boards before)."""
    import tempfile

    probe = Job(RunRequest(artifact.path, threads=threads), artifact.sha256, Purpose.ACCURACY)
    found = measurer.lookup(probe)
    if found is not None:
        return DeviceAccuracy.from_dict(found[1])
    with tempfile.TemporaryDirectory(prefix="edgepack-check-") as tmp:
        inputs = Path(tmp) / "samples.npz"
        count = write_inputs(artifact, data, inputs)
        where = "this machine" if measurer.here else "the board"
        say(f"checking accuracy on {where}: {count} held-out samples through {artifact.path.name}")
        expected = tuple(((count, *b.shape), b.dtype) for b in artifact.outputs)
        request = RunRequest(artifact.path, threads=threads, warmup=0, runs=1, inputs=inputs, want_outputs=True,
                             timeout_s=timeout_s, expected_outputs=expected)
        outcome = measurer.measure([Job(request, artifact.sha256, Purpose.ACCURACY)], use_records=False)[0]
    if not outcome.ok or not outcome.outputs or outcome.board is None:
        return DeviceAccuracy(error=outcome.error or "the board sent no outputs back")
    check = score(artifact, outcome.outputs, data, count, source, kinds)
    measurer.store(probe, outcome.board, check.to_dict())
    return check
