"""Compare a converted model with its source on the same inputs.

A shape that cannot be matched (even allowing the NCHW<->NHWC transpose a route is known to make)
is fatal: :class:`ShapeMismatchError`. Numeric drift is a figure per output: max abs error, the
same relative to the source output's scale, cosine similarity and, for classifier-like outputs
(``[batch, classes]``), top-1 agreement. Tolerances come from the device profile.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgepack.artifact import Binding, channels_last_perm, layout_of_perm
from edgepack.convert.errors import ConversionError
from edgepack.data import Dataset
from edgepack.engines import Engine
from edgepack.model import TensorSpec
from edgepack.profiles import Tolerances


class ShapeMismatchError(ConversionError):
    """The converted model's inputs or outputs do not correspond to the source's."""


@dataclass
class OutputDrift:
    name: str
    max_abs_error: float
    scale: float
    max_abs_error_rel: float
    cosine: float
    top1_agreement: float | None

    def failure(self, tol: Tolerances) -> str | None:
        if self.max_abs_error_rel > tol.max_abs_error_rel:
            return (f"output '{self.name}' max abs error {self.max_abs_error:.3g} is "
                    f"{self.max_abs_error_rel:.3g} of its scale (tolerance {tol.max_abs_error_rel:g})")
        if self.cosine < tol.min_cosine:
            return f"output '{self.name}' cosine {self.cosine:.6f} < {tol.min_cosine}"
        if self.top1_agreement is not None and self.top1_agreement < tol.min_top1_agreement:
            return (f"output '{self.name}' top-1 agreement {self.top1_agreement:.2%} < "
                    f"{tol.min_top1_agreement:.0%}")
        return None


@dataclass
class ValidationReport:
    route: str
    samples: int
    data: str  # "calibration" or "random"
    outputs: list[OutputDrift]
    tolerances: Tolerances
    #: With labelled data and a classifier-like first output: accuracy of the source and of the result.
    source_accuracy: float | None = None
    accuracy: float | None = None

    @property
    def top1_agreement(self) -> float | None:
        return self.outputs[0].top1_agreement if self.outputs else None

    @property
    def first_failure(self) -> str | None:
        return next((f for o in self.outputs if (f := o.failure(self.tolerances))), None)

    @property
    def passed(self) -> bool:
        return self.first_failure is None

    @property
    def worst_rel_error(self) -> float:
        return max((o.max_abs_error_rel for o in self.outputs), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {"route": self.route, "samples": self.samples, "data": self.data, "passed": self.passed,
                "first_failure": self.first_failure, "tolerances": self.tolerances.model_dump(),
                "source_accuracy": self.source_accuracy, "accuracy": self.accuracy,
                "outputs": [asdict(o) for o in self.outputs]}


def bind(route: str, source: list[TensorSpec], artifact_shapes: list[tuple[tuple[int, ...], str, str]],
         channels_last: bool) -> list[Binding]:
    """Pair source tensors with artifact tensors (by order) and find each one's layout permutation.

    ``artifact_shapes``: (shape, dtype, name) per artifact tensor. ``channels_last``: the route moves
    channels last for rank 3-5 tensors (onnx2tf does), which decides symmetric shapes like 1x8x8x8.
    """
    if len(source) != len(artifact_shapes):
        raise ShapeMismatchError(route, f"the source has {len(source)} tensors, the result "
                                 f"{len(artifact_shapes)}")
    bindings = []
    for spec, (shape, dtype, name) in zip(source, artifact_shapes, strict=True):
        src = tuple(int(d) for d in spec.shape)  # type: ignore[arg-type]
        shape = tuple(int(d) for d in shape)
        perm: tuple[int, ...] | None = None
        cl = channels_last_perm(len(src)) if 3 <= len(src) <= 5 else None
        cl_shape = tuple(src[i] for i in cl) if cl else None
        if cl and channels_last and shape == cl_shape:
            perm = cl
        elif shape == src:
            perm = None
        elif cl and shape == cl_shape:
            perm = cl
        else:
            raise ShapeMismatchError(route, f"'{spec.name}' has shape {list(src)} in the source and "
                                     f"{list(shape)} in the result")
        bindings.append(Binding(name or spec.name, spec.name, shape, dtype, layout_of_perm(spec.layout, perm),
                                spec.layout, perm))
    return bindings


def compare(route: str, source: Engine, artifact: Engine, inputs: list[Binding], outputs: list[Binding],
            data: Dataset, data_kind: str, tolerances: Tolerances, max_samples: int = 32) -> ValidationReport:
    names = [b.source_name for b in inputs]
    refs: list[list[np.ndarray]] = [[] for _ in outputs]
    gots: list[list[np.ndarray]] = [[] for _ in outputs]
    count = min(len(data), max_samples)
    for index in range(count):
        sample = data.batch(names, index)
        expected = source.run(sample)
        got = artifact.run([b.from_source(x) for b, x in zip(inputs, sample, strict=True)])
        if len(got) != len(expected):
            raise ShapeMismatchError(route, f"{len(got)} outputs, the source gives {len(expected)}")
        for i, (binding, ref, value) in enumerate(zip(outputs, expected, got, strict=True)):
            value = binding.to_source(value)
            if value.shape != ref.shape:
                raise ShapeMismatchError(route, f"output '{binding.source_name}' has shape "
                                         f"{list(value.shape)}, the source {list(ref.shape)}")
            refs[i].append(ref.astype(np.float64))
            gots[i].append(value.astype(np.float64))
    drifts = [_drift(b.source_name, np.stack(r), np.stack(g)) for b, r, g in zip(outputs, refs, gots, strict=True)]
    report = ValidationReport(route, count, data_kind, drifts, tolerances)
    if data.labels is not None and drifts and drifts[0].top1_agreement is not None:
        labels = data.labels[:count]
        report.source_accuracy = float(np.mean(np.stack(refs[0]).reshape(count, -1).argmax(1) == labels))
        report.accuracy = float(np.mean(np.stack(gots[0]).reshape(count, -1).argmax(1) == labels))
    return report


def _drift(name: str, ref: np.ndarray, got: np.ndarray) -> OutputDrift:
    error = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    a, b = ref.reshape(-1), got.reshape(-1)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(a @ b / norms) if norms > 0 else float(np.array_equal(a, b))
    top1 = None
    per_sample = ref.reshape(ref.shape[0], -1, ref.shape[-1]) if ref.ndim >= 3 else ref
    if ref.ndim == 3 and ref.shape[1] == 1 and ref.shape[-1] > 1:  # [samples, batch 1, classes]
        top1 = float(np.mean(per_sample.argmax(-1) == got.reshape(per_sample.shape).argmax(-1)))
    return OutputDrift(name, error, scale, error / scale if scale > 0 else error, cosine, top1)
