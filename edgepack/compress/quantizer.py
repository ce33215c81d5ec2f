"""The quantizer's interface, one implementation per format (``quantize_onnx.OnnxQuantizer``,
``quantize_tflite.TfliteQuantizer``): the fp32 model it starts from, a candidate with some layers kept
in float, and the layers ranked by how much quantizing them costs. ``edgepack.compress.quantize`` runs
the search over them (per-tensor then per-channel, then float layers until the gate holds)."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.artifact import Binding
from edgepack.compress.plan import Precision
from edgepack.convert.validate import bind
from edgepack.data import Dataset
from edgepack.engines import Engine
from edgepack.formats import ArtifactFormat
from edgepack.model import ModelHandle
from edgepack.profiles import DeviceProfile
from edgepack.stages import StageClock

#: A layer ranking (which layers to keep in float first) runs on a few samples: enough that each sample's
#: inputs together hold SENSITIVITY_VALUES values, 2 to 8 samples. It only orders the layers; every
#: candidate it leads to is judged on all held-out samples. A 640x640 image holds 1.2 million values (2
#: samples: running a graph with every intermediate tensor kept costs seconds per sample); an 8x8 one, 64.
SENSITIVITY_VALUES = 2_000_000
SENSITIVITY_SAMPLES = (2, 8)


def sensitivity_samples(feeds: list[dict[str, np.ndarray]]) -> int:
    """How many of ``feeds`` a layer ranking runs on (see SENSITIVITY_VALUES)."""
    least, most = SENSITIVITY_SAMPLES
    per_sample = max(1, sum(int(np.size(x)) for x in feeds[0].values())) if feeds else 1
    return min(len(feeds), max(least, min(most, -(-SENSITIVITY_VALUES // per_sample))))


@dataclass
class QuantizeBase:
    """The fp32 model the quantizer starts from, in the target's family, and how its I/O maps."""

    path: Path  # ONNX file or SavedModel directory
    inputs: list[Binding]
    outputs: list[Binding]


@dataclass
class FloatLayer:
    name: str  # a layer, or "output head (N nodes)"
    sensitivity: float | None  # None: kept first without ranking (the output head)
    size_cost_bytes: int  # how much larger the file is for keeping this layer in float
    nodes: list[str] = field(default_factory=list)  # what was excluded from quantization (default: [name])


def identity_bindings(handle: ModelHandle, source: Engine, sample: list[np.ndarray]
                      ) -> tuple[list[Binding], list[Binding]]:
    """Bindings for a base that is the source itself (same layout in and out)."""
    from edgepack.convert.convert import source_output_specs

    out_specs = source_output_specs(handle, source.run(sample))
    inputs = bind("identity", handle.inputs, [(tuple(int(d) for d in s.shape), s.dtype, s.name)  # type: ignore[arg-type]
                                              for s in handle.inputs], False)
    outputs = bind("identity", out_specs, [(tuple(int(d) for d in s.shape), s.dtype, s.name)  # type: ignore[arg-type]
                                           for s in out_specs], False)
    return inputs, outputs


def tflite_io(path: Path, inputs: list[Binding], outputs: list[Binding]) -> tuple[list[Binding], list[Binding]]:
    """A TFLite file's own I/O names, dtypes, scales and zero points; outputs found by their signature
    key (the converter lists them in its own order), else by position."""
    from edgepack.engines import signature_output_keys
    from edgepack.model_files import tflite_interpreter

    interpreter = tflite_interpreter(path, delegates=False)

    def with_details(bindings: list[Binding], details: list[dict[str, Any]]) -> list[Binding]:
        result = []
        for b, d in zip(bindings, details, strict=True):
            scale, zero_point = d.get("quantization", (0.0, 0))
            dtype = np.dtype(d["dtype"]).name
            result.append(replace(b, name=d["name"], dtype=dtype, scale=float(scale) if scale else None,
                                  zero_point=int(zero_point) if scale else None))
        return result

    details = interpreter.get_output_details()
    keys = signature_output_keys(interpreter, details)
    if keys and all(b.name in keys for b in outputs):
        details = [details[keys.index(b.name)] for b in outputs]
    return with_details(inputs, interpreter.get_input_details()), with_details(outputs, details)


class Quantizer(abc.ABC):
    """Candidates of one format from one fp32 base, calibrated on ``calib``."""

    format: ArtifactFormat

    def __init__(self, mode: Precision, base: QuantizeBase, calib: Dataset, work: Path, io: str,
                 profile: DeviceProfile, calibrate_method: str) -> None:
        self.mode, self.base, self.calib, self.work, self.io = mode, base, calib, work, io
        self.profile, self.calibrate_method = profile, calibrate_method
        self.count = 0
        self.per_channel = False
        self.per_channel_possible = False  # whether per-channel weights are a second try of their own
        self.notes: list[str] = []
        names = [b.source_name for b in base.inputs]
        self.feeds = [{b.name: b.from_source(x) for b, x in zip(base.inputs, calib.batch(names, i), strict=True)}
                      for i in range(len(calib))]

    @staticmethod
    @abc.abstractmethod
    def make_base(handle: ModelHandle, work: Path, profile: DeviceProfile, calib: Dataset, clock: StageClock,
                  source: Engine) -> QuantizeBase:
        """The fp32 model of this format's family that quantizing starts from (converted when needed, and
        checked against ``source``, ``handle``'s engine; the conversion and its check timed on ``clock``)."""

    @abc.abstractmethod
    def fp32_size(self) -> int:
        """Bytes of the fp32 file of this format: what the quantized one is compared with."""

    @abc.abstractmethod
    def build(self, float_layers: list[str]) -> Path:
        """A candidate file with these layers kept in float."""

    @abc.abstractmethod
    def ranking(self, held_out: Dataset, quantized: Path) -> list[FloatLayer]:
        """What to keep in float, in order."""

    def bindings(self, candidate: Path) -> tuple[list[Binding], list[Binding]]:
        """The candidate's I/O bindings (the base's, unless the file has its own I/O types)."""
        return self.base.inputs, self.base.outputs

    def activation_type(self) -> str | None:
        """int8: the activations' type; None for other modes."""
        return "int8" if self.mode is Precision.INT8 else None

    def next_path(self) -> Path:
        self.count += 1
        return self.work / f"candidate{self.count}{self.format.suffix}"
