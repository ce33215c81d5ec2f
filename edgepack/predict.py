"""Latency and memory predictor per device: the profile's roofline, refitted to what was measured.

Before any measurement a candidate's latency is its roofline lower bound divided by a prior kernel
efficiency, plus a per-layer dispatch cost. As measurements arrive, the model

    latency_ms = a[precision] * roofline_ms + b * layers + c

is refitted by non-negative least squares (one ``a`` per arithmetic precision: int8, fp16 and fp32
kernels reach different fractions of peak). ``margin`` is the relative error the fit makes on the
points it has seen, left out one at a time; the search uses it to decide when to stop measuring.
Peak memory is fitted the same way from weight bytes and peak activation bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

PRIOR_EFFICIENCY = 0.25  # fraction of peak that mobile CPU kernels typically reach
PRIOR_LAYER_MS = 0.005  # dispatch cost per op
PRIOR_BASE_MB = 30.0  # interpreter + runtime resident memory
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Features:
    """What the predictor knows of a candidate before it is measured."""

    roofline_ms: float
    layers: int
    precision: str  # fp32 | fp16 | int8 (dynamic counts as fp32 arithmetic)
    weight_bytes: int
    peak_activation_bytes: int

    def row(self) -> np.ndarray:
        precision = self.precision if self.precision in PRECISIONS else "fp32"
        return np.array([self.roofline_ms if p == precision else 0.0 for p in PRECISIONS]
                        + [float(self.layers), 1.0])


@dataclass
class Predictor:
    observations: list[tuple[Features, float, float | None]] = field(default_factory=list)  # (f, ms, rss MB)
    _coef: np.ndarray | None = None

    def observe(self, features: Features, latency_ms: float, peak_rss_mb: float | None = None) -> None:
        self.observations.append((features, latency_ms, peak_rss_mb))
        self._coef = self._fit(self.observations) if len(self.observations) >= 2 else None

    @staticmethod
    def _fit(observations: list[tuple[Features, float, float | None]]) -> np.ndarray:
        from scipy.optimize import nnls

        x = np.stack([f.row() for f, _, _ in observations])
        y = np.array([ms for _, ms, _ in observations])
        prior = np.array([1 / PRIOR_EFFICIENCY] * len(PRECISIONS) + [PRIOR_LAYER_MS, 0.0])
        # Ridge towards the prior, so that a precision never measured keeps its prior slope.
        weight = 0.1
        x_aug = np.vstack([x, weight * np.eye(len(prior))])
        y_aug = np.concatenate([y, weight * prior])
        coef, _ = nnls(x_aug, y_aug)
        return coef

    def latency_ms(self, features: Features) -> float:
        if self._coef is None:
            return features.roofline_ms / PRIOR_EFFICIENCY + PRIOR_LAYER_MS * features.layers
        return float(features.row() @ self._coef)

    def peak_rss_mb(self, features: Features) -> float:
        model_mb = (features.weight_bytes + features.peak_activation_bytes) / 1e6
        seen = [(f, rss) for f, _, rss in self.observations if rss is not None]
        if len(seen) < 2:
            return PRIOR_BASE_MB + 2 * model_mb
        x = np.array([[(f.weight_bytes + f.peak_activation_bytes) / 1e6, 1.0] for f, _ in seen])
        slope, base = np.linalg.lstsq(x, np.array([rss for _, rss in seen]), rcond=None)[0]
        return float(max(slope, 0.0) * model_mb + base)

    @property
    def margin(self) -> float:
        """Median relative error, each measured point predicted by a fit without it (1.0 before 3 points)."""
        if len(self.observations) < 3:
            return 1.0
        errors = []
        for i, (features, ms, _) in enumerate(self.observations):
            rest = self.observations[:i] + self.observations[i + 1:]
            predicted = float(features.row() @ self._fit(rest))
            errors.append(abs(predicted - ms) / ms if ms > 0 else 0.0)
        return float(np.median(errors))
