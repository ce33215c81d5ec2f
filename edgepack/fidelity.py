"""How close an artifact's outputs are to its source's, by what each output is.

Every output gets a *kind*, read from the source's own outputs on real samples (or given with
``--output-kind name=kind``):

- ``scores``   one vector per sample that ranks classes: probabilities (softmax), or a vector whose
               name says so (logits, scores, probs...) or whose top value clearly wins → top-1 agreement;
- ``sequence`` a probability (or named score) vector per position, [T, C] (CTC, per-pixel softmax) →
               per-position argmax agreement;
- ``map``      a dense spatial map (segmentation, text probability) → IoU of the thresholded maps;
- ``values``   boxes, landmarks, regressions, raw detector heads → RMS error per channel on its strong
               values, relative to the channel's peak (see ``_channel_error``).

Each figure except the error of ``values`` reads as a loss in points (100 × (1 − agreement)), the same
scale as ``--max-accuracy-drop``; ``values`` outputs are held to a relative error bound per channel (so
that a small-scale channel, e.g. the class scores concatenated with pixel boxes in a YOLO head, cannot
hide behind a large-scale one).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

KINDS = ("scores", "sequence", "map", "values")
AGREEMENT_LABEL = {"scores": "top-1 agreement", "sequence": "per-position argmax agreement",
                   "map": "thresholded-map IoU"}
SCORE_NAMES = re.compile(r"logit|score|prob|softmax|class|label|pred", re.IGNORECASE)
CHANNEL_FLOOR = 1e-3  # a channel's scale is at least this fraction of the output's scale


def core_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """One sample's shape without its size-1 axes (batch, singleton channels)."""
    return tuple(d for d in shape if d != 1) or (1,)


def is_distribution(ref: np.ndarray) -> bool:
    """Non-negative and summing to one along the last axis: softmax probabilities."""
    if ref.shape[-1] < 2 or ref.size == 0:
        return False
    return bool(ref.min() >= -1e-6 and ref.max() <= 1 + 1e-6 and np.allclose(ref.sum(-1), 1.0, atol=1e-3))


def infer_kind(name: str, ref: np.ndarray) -> str:
    """``ref``: the source's output on several samples, stacked on a first axis."""
    sample_shape = tuple(ref.shape[1:])
    core = core_shape(sample_shape)
    squeezed = ref.reshape(len(ref), *core)
    named = bool(SCORE_NAMES.search(name))
    if len(core) == 1 and core[0] >= 2:
        if is_distribution(squeezed) or named or (core[0] >= 10 and _decisive(squeezed)):
            return "scores"
        return "values"
    if len(sample_shape) >= 4 and sum(d >= 8 for d in sample_shape) >= 2:
        return "sequence" if is_distribution(ref) and sample_shape[-1] > 1 else "map"
    if len(core) == 2 and (is_distribution(squeezed) or named):
        return "sequence"
    return "values"


def _decisive(ref: np.ndarray) -> bool:
    """A trained classifier's top logit clearly wins; a regression's largest value barely does."""
    ordered = np.sort(ref.reshape(len(ref), -1), axis=1)
    spread = ordered[:, -1] - ordered[:, 0]
    margin = (ordered[:, -1] - ordered[:, -2]) / np.where(spread > 0, spread, 1.0)
    return bool(np.median(margin) >= 0.2)


@dataclass
class OutputDrift:
    name: str
    max_abs_error: float
    scale: float
    max_abs_error_rel: float  # of the whole output's scale
    cosine: float
    kind: str = "values"
    agreement: float | None = None  # what AGREEMENT_LABEL[kind] says; None for values
    channel_error_rel: float = 0.0  # worst channel's RMS error on its strong values, over its peak

    @property
    def top1_agreement(self) -> float | None:
        return self.agreement if self.kind == "scores" else None

    @property
    def loss_pts(self) -> float | None:
        return None if self.agreement is None else 100.0 * (1.0 - self.agreement)

    def describe(self) -> str:
        """The deciding figure, in words."""
        if self.agreement is not None:
            return f"{AGREEMENT_LABEL[self.kind]} {self.agreement:.2%}"
        return f"error {self.channel_error_rel:.3g} of peak"


def drift(name: str, ref: np.ndarray, got: np.ndarray, kind: str | None = None) -> OutputDrift:
    """Figures of one output; ``ref`` and ``got`` stacked over samples (float64)."""
    kind = kind or infer_kind(name, ref)
    error = float(np.max(np.abs(ref - got))) if ref.size else 0.0
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    a, b = ref.reshape(-1), got.reshape(-1)
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(a @ b / norms) if norms > 0 else float(np.array_equal(a, b))
    result = OutputDrift(name, error, scale, error / scale if scale > 0 else error, cosine, kind)
    core = core_shape(tuple(ref.shape[1:]))
    if kind in ("scores", "sequence"):
        last = ref.shape[-1] if ref.shape[-1] > 1 else core[-1]
        r, g = ref.reshape(-1, last), got.reshape(-1, last)
        result.agreement = float(np.mean(r.argmax(-1) == g.argmax(-1)))
    elif kind == "map":
        threshold = 0.5 if ref.min() >= 0 and ref.max() <= 1 else 0.5 * (float(ref.min()) + float(ref.max()))
        fg_ref, fg_got = ref > threshold, got > threshold
        union = int(np.count_nonzero(fg_ref | fg_got))
        result.agreement = 1.0 if union == 0 else int(np.count_nonzero(fg_ref & fg_got)) / union
    result.channel_error_rel = _channel_error(ref, got, core, scale)
    return result


def _channel_error(ref: np.ndarray, got: np.ndarray, core: tuple[int, ...], scale: float) -> float:
    """The worst channel's RMS error where it matters, over the channel's peak |value|.

    A channel is the smallest axis of a [A, B] sample (the 4 box + N class rows of a YOLO head, the 18
    values of a palm-detector anchor); a rank-1 output is one channel. "Where it matters": the positions
    where the source or the artifact is at least half the channel's peak — the detections a class row
    fires on, a box's coordinates — so that erased peaks and false peaks both count, and quiet
    background, which int8 rounds to zero, does not dilute them. Max error over thousands of anchors is
    too brittle for int8 and mean error over all of them too forgiving."""
    if scale == 0:
        return float(np.max(np.abs(ref - got))) if ref.size else 0.0
    r, g = ref.reshape(len(ref), *core), got.reshape(len(ref), *core)
    if len(core) >= 2:
        axis = 1 + int(np.argmin(core))
        r, g = np.moveaxis(r, axis, 0), np.moveaxis(g, axis, 0)
    else:
        r, g = r[None], g[None]
    worst = 0.0
    for rc, gc in zip(r, g, strict=True):
        peak = max(float(np.max(np.abs(rc))), CHANNEL_FLOOR * scale)
        strong = (np.abs(rc) >= 0.5 * peak) | (np.abs(gc) >= 0.5 * peak)
        if strong.any():
            worst = max(worst, float(np.sqrt(np.mean(np.square(rc[strong] - gc[strong])))) / peak)
    return worst


def parse_output_kinds(text: str | None) -> dict[str, str]:
    """``--output-kind boxes=values,scores=scores``."""
    from edgepack.errors import UsageError

    kinds: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        name, _, kind = part.rpartition("=")
        if not name or kind not in KINDS:
            raise UsageError(f"--output-kind '{part}' is not NAME=KIND", f"KIND is one of {', '.join(KINDS)}")
        kinds[name.strip()] = kind
    return kinds
