"""Compare a converted model with its source on the same inputs.

A shape that cannot be matched (even allowing the NCHW<->NHWC transpose a route is known to make)
is fatal: :class:`ShapeMismatchError`. Numeric drift is a figure per output by its kind (see
:mod:`edgepack.fidelity`). An fp32 conversion is held to the profile's parity tolerances; a compressed
artifact to a :class:`Gate` (points of accuracy or agreement, error of value outputs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edgepack.artifact import Binding, channels_last_perm, layout_of_perm
from edgepack.conversion_error import ConversionError
from edgepack.data import Dataset
from edgepack.engines import Engine
from edgepack.fidelity import AGREEMENT_LABEL, OutputDrift, drift
from edgepack.profiles import Tolerances
from edgepack.tensor_spec import TensorSpec


class ShapeMismatchError(ConversionError):
    """The converted model's inputs or outputs do not correspond to the source's."""


PARITY_MIN_POSITIONS = 0.999  # agreement an fp32 conversion keeps on sequence and map positions


def check_tolerance(value: float, example: str) -> float:
    """``--tolerance``: a fraction of an output's scale, in (0, 1)."""
    if not 0 < value < 1:
        from edgepack.errors import UsageError

        raise UsageError(f"--tolerance {value:g} is not a fraction of the output's scale",
                         f"give e.g. --tolerance {example}")
    return value


def parity_failure(o: OutputDrift, tol: Tolerances) -> str | None:
    """An fp32 conversion must match its source: error, cosine and (where the kind has one) agreement."""
    if o.max_abs_error_rel > tol.max_abs_error_rel:
        return (f"output '{o.name}' max abs error {o.max_abs_error:.3g} is "
                f"{o.max_abs_error_rel:.3g} of its scale (tolerance {tol.max_abs_error_rel:g})")
    if o.cosine < tol.min_cosine:
        return f"output '{o.name}' cosine {o.cosine:.6f} < {tol.min_cosine}"
    # a sequence or map has thousands of positions: float rounding may flip a near-tie or two
    least = tol.min_top1_agreement if o.kind == "scores" else min(tol.min_top1_agreement, PARITY_MIN_POSITIONS)
    if o.agreement is not None and o.agreement < least:
        return f"output '{o.name}' {AGREEMENT_LABEL[o.kind]} {o.agreement:.2%} < {least:.1%}"
    return None



@dataclass(frozen=True)
class Gate:
    """What a compressed (int8, fp16, pruned) artifact must keep against its source."""

    max_drop_pts: float = 1.0  # --max-accuracy-drop: accuracy, agreement or --metric, in points
    max_value_error: float = 0.1  # values outputs: RMS error on strong values, a fraction of the channel's peak


@dataclass
class ValidationReport:
    route: str
    samples: int
    data: str  # "calibration" or "random"
    outputs: list[OutputDrift]
    tolerances: Tolerances
    #: With labelled data and a scores output: accuracy of the source and of the result.
    source_accuracy: float | None = None
    accuracy: float | None = None
    #: --metric: {"name": "pkg.mod:fn", "source": score of the source, "artifact": score of the result}
    metric: dict[str, Any] | None = None

    @property
    def top1_agreement(self) -> float | None:
        return next((o.agreement for o in self.outputs if o.kind == "scores"), None)

    @property
    def first_failure(self) -> str | None:
        return next((f for o in self.outputs if (f := parity_failure(o, self.tolerances))), None)

    @property
    def drop_pts(self) -> float | None:
        """The loss in points that --max-accuracy-drop bounds: of the user's metric when given, else of
        accuracy (labels and a scores output), else the worst agreement loss of any output; None when
        every output is a value output (those are bounded by their error instead)."""
        if self.metric is not None:
            return 100.0 * (self.metric["source"] - self.metric["artifact"])
        if self.accuracy is not None and self.source_accuracy is not None:
            return 100.0 * (self.source_accuracy - self.accuracy)
        losses = [o.loss_pts for o in self.outputs if o.loss_pts is not None]
        return max(losses) if losses else None

    def drop_source(self) -> str:
        if self.metric is not None:
            return f"--metric {self.metric['name']}"
        if self.accuracy is not None:
            return "accuracy"
        worst = max((o for o in self.outputs if o.loss_pts is not None), key=lambda o: o.loss_pts or 0.0,
                    default=None)
        return f"output '{worst.name}' {AGREEMENT_LABEL[worst.kind]}" if worst else "-"

    def gate_failure(self, gate: Gate) -> str | None:
        """Why a compressed artifact is refused, or None: its drop over the bound, or (without --metric,
        which then decides alone) a value output's error over its bound."""
        drop = self.drop_pts
        if drop is not None and drop > gate.max_drop_pts:
            return f"{self.drop_source()} drops {drop:.2f} points (bound {gate.max_drop_pts:g})"
        if self.metric is None:
            for o in self.outputs:
                if o.kind == "values" and o.channel_error_rel > gate.max_value_error:
                    return (f"output '{o.name}' ({o.kind}) RMS error on its strong values is "
                            f"{o.channel_error_rel:.3g} of its channel's peak (bound {gate.max_value_error:g})")
        return None

    @property
    def passed(self) -> bool:
        return self.first_failure is None

    @property
    def worst_rel_error(self) -> float:
        return max((o.max_abs_error_rel for o in self.outputs), default=0.0)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationReport:
        """A check read back (``to_dict``): from the artifact cache, or a conversion kept in a build."""
        return cls(data["route"], data["samples"], data["data"], [OutputDrift(**o) for o in data["outputs"]],
                   Tolerances(**data["tolerances"]), data.get("source_accuracy"), data.get("accuracy"),
                   data.get("metric"))

    def to_dict(self) -> dict[str, Any]:
        return {"route": self.route, "samples": self.samples, "data": self.data, "passed": self.passed,
                "first_failure": self.first_failure, "tolerances": self.tolerances.model_dump(),
                "source_accuracy": self.source_accuracy, "accuracy": self.accuracy, "metric": self.metric,
                "drop_pts": self.drop_pts, "outputs": [asdict(o) for o in self.outputs]}


def bind(route: str, source: list[TensorSpec], artifact_shapes: list[tuple[tuple[int, ...], str, str]],
         channels_last: bool) -> list[Binding]:
    """Pair source tensors with artifact tensors and find each one's layout permutation; returned in
    the source's order.

    ``artifact_shapes``: (shape, dtype, name) per artifact tensor, in the artifact's order. Pairs are
    made by name first, then by a shape only one artifact tensor has, then by position: converters and
    quantizers list outputs in their own order. ``channels_last``: the route moves channels last for
    rank 3-5 tensors (onnx2tf does), which decides symmetric shapes like 1x8x8x8.
    """
    if len(source) != len(artifact_shapes):
        raise ShapeMismatchError(route, f"the source has {len(source)} tensors, the result "
                                 f"{len(artifact_shapes)}")
    order = _pairing(source, artifact_shapes)
    bindings = []
    for spec, index in zip(source, order, strict=True):
        shape, dtype, name = artifact_shapes[index]
        src = tuple(int(d) for d in spec.shape)  # type: ignore[arg-type]
        shape = tuple(int(d) for d in shape)
        perm = _perm(route, spec.name, src, shape, channels_last)
        bindings.append(Binding(name or spec.name, spec.name, shape, dtype, layout_of_perm(spec.layout, perm),
                                spec.layout, perm))
    return bindings


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(d for d in shape if d != 1)


def _shapes_for(src: tuple[int, ...]) -> set[tuple[int, ...]]:
    cl = channels_last_perm(len(src)) if 3 <= len(src) <= 5 else None
    return {src} | ({tuple(src[i] for i in cl)} if cl else set())


def _perm(route: str, name: str, src: tuple[int, ...], shape: tuple[int, ...],
          channels_last: bool) -> tuple[int, ...] | None:
    cl = channels_last_perm(len(src)) if 3 <= len(src) <= 5 else None
    cl_shape = tuple(src[i] for i in cl) if cl else None
    if cl and channels_last and shape == cl_shape:
        return cl
    if shape == src or _squeezed(shape) == _squeezed(src):  # same, or a size-1 axis added/dropped
        return None
    if cl and shape == cl_shape:
        return cl
    raise ShapeMismatchError(route, f"'{name}' has shape {list(src)} in the source and {list(shape)} in the result")


def _pairing(source: list[TensorSpec], artifact: list[tuple[tuple[int, ...], str, str]]) -> list[int]:
    """For each source tensor, the index of its artifact tensor."""
    free = list(range(len(artifact)))
    chosen: list[int | None] = [None] * len(source)
    for i, spec in enumerate(source):  # same name
        match = next((j for j in free if artifact[j][2] == spec.name), None)
        if match is not None:
            chosen[i] = match
            free.remove(match)
    for i, spec in enumerate(source):  # a shape only one remaining artifact tensor has
        if chosen[i] is not None or not all(isinstance(d, int) for d in spec.shape):
            continue
        wanted = _shapes_for(tuple(int(d) for d in spec.shape))  # type: ignore[arg-type]
        fits = [j for j in free if tuple(int(d) for d in artifact[j][0]) in wanted]
        others = [k for k, s in enumerate(source) if k != i and chosen[k] is None and all(
            isinstance(d, int) for d in s.shape) and _shapes_for(tuple(int(d) for d in s.shape)) & wanted]  # type: ignore[arg-type]
        if len(fits) == 1 and not others:
            chosen[i] = fits[0]
            free.remove(fits[0])
    for i in range(len(source)):  # the rest by position
        if chosen[i] is None:
            chosen[i] = free.pop(0)
    return [c for c in chosen if c is not None]


Metric = Callable[[dict[str, np.ndarray], dict[str, np.ndarray], "np.ndarray | None"], float]


def compare(route: str, source: Engine, artifact: Engine, inputs: list[Binding], outputs: list[Binding],
            data: Dataset, data_kind: str, tolerances: Tolerances, max_samples: int = 32, *,
            kinds: dict[str, str] | None = None, metric: tuple[str, Metric] | None = None) -> ValidationReport:
    """Run both on the same samples; figures per output by its kind (``kinds`` overrides the inferred
    one by output name); ``metric`` (its name and function) scores source and artifact on the task."""
    names = [b.source_name for b in inputs]
    refs: list[list[np.ndarray]] = [[] for _ in outputs]
    gots: list[list[np.ndarray]] = [[] for _ in outputs]
    count = min(len(data), max_samples)
    for index in range(count):
        sample = data.batch(names, index)
        expected = source.run(sample)
        got = by_binding(artifact, artifact.run([b.from_source(x) for b, x in zip(inputs, sample, strict=True)]),
                         outputs)
        if len(got) != len(expected):
            raise ShapeMismatchError(route, f"{len(got)} outputs, the source gives {len(expected)}")
        for i, (binding, ref, value) in enumerate(zip(outputs, expected, got, strict=True)):
            value = binding.to_source(value)
            if value.shape != ref.shape and value.size == ref.size and _squeezed(value.shape) == _squeezed(ref.shape):
                value = value.reshape(ref.shape)  # a size-1 axis added or dropped (a rank-0 value as [1])
            if value.shape != ref.shape:
                raise ShapeMismatchError(route, f"output '{binding.source_name}' has shape "
                                         f"{list(value.shape)}, the source {list(ref.shape)}")
            refs[i].append(ref.astype(np.float64))
            gots[i].append(value.astype(np.float64))
    ref_arrays = {b.source_name: np.stack(r) for b, r in zip(outputs, refs, strict=True)}
    got_arrays = {b.source_name: np.stack(g) for b, g in zip(outputs, gots, strict=True)}
    drifts = [drift(n, ref_arrays[n], got_arrays[n], (kinds or {}).get(n)) for n in ref_arrays]
    report = ValidationReport(route, count, data_kind, drifts, tolerances)
    labels = data.labels[:count] if data.labels is not None else None
    scores = next((d for d in drifts if d.kind == "scores"), None)
    if labels is not None and scores is not None:
        report.source_accuracy = float(np.mean(ref_arrays[scores.name].reshape(count, -1).argmax(1) == labels))
        report.accuracy = float(np.mean(got_arrays[scores.name].reshape(count, -1).argmax(1) == labels))
    if metric is not None:
        report.metric = {"name": metric[0], "source": _score(metric, ref_arrays, ref_arrays, labels),
                         "artifact": _score(metric, ref_arrays, got_arrays, labels)}
    return report


def by_binding(engine: Engine, got: list[np.ndarray], outputs: list[Binding]) -> list[np.ndarray]:
    """The artifact's outputs in the bindings' (the source's) order, found by the artifact's names."""
    for names in (list(getattr(engine, "output_names", [])), list(getattr(engine, "signature_keys", []))):
        if len(names) == len(got) and len(set(names)) == len(names) and all(b.name in names for b in outputs):
            return [got[names.index(b.name)] for b in outputs]
    return got


def _score(metric: tuple[str, Metric], ref: dict[str, np.ndarray], got: dict[str, np.ndarray],
           labels: np.ndarray | None) -> float:
    from edgepack.errors import UsageError, first_line

    try:
        value = float(metric[1](ref, got, labels))
    except Exception as exc:  # the user's own code: its failure in one line
        raise UsageError(f"--metric {metric[0]} raised {first_line(exc, with_type=True)}",
                         "fix the function: it gets (source outputs, artifact outputs, labels) and returns a "
                         "score in [0, 1], higher is better") from None
    if not np.isfinite(value):
        raise UsageError(f"--metric {metric[0]} returned {value}", "return a finite score in [0, 1]")
    return value


def load_metric(spec: str | None) -> tuple[str, Metric] | None:
    """``--metric pkg.mod:function``."""
    if not spec:
        return None
    from edgepack.model import resolve_factory

    return spec, resolve_factory(spec, flag="--metric")
