"""Latency and memory predictor per device: the profile's roofline, corrected by what was measured.

The prior for a candidate is physical: its roofline lower bound over a typical kernel efficiency
(one per arithmetic precision), plus a dispatch cost per op. What the prior gets wrong is mostly a
factor that depends on the plan (this runtime's int8 kernels are fast here, a second thread only adds
synchronisation for a model this small, pruning saves fewer milliseconds than MACs), so the model is

    log(latency_ms) = log(prior_ms) + b0 + b[format] + b[precision] + b[threads] + b[prune]
                      + b[format x precision] + b[format x threads] + g * log(prior_ms)

fitted by ridge regression on the measurements: every correction starts at zero (the prior) and
moves as far as the measurements carry it, so a plan whose levels were each measured somewhere is
predicted from them, and one never measured falls back to the prior scaled by the device's overall
speed (b0). ``margin`` is the relative error of predictions made without the point being predicted
(leave one out); the search uses it to decide when to stop measuring. Peak memory is a straight line
in weight + activation bytes, fitted the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

PRIOR_EFFICIENCY = {"fp32": 0.25, "fp16": 0.25, "int8": 0.25}  # fraction of peak kernels typically reach
PRIOR_LAYER_MS = 0.005  # dispatch cost per op
PRIOR_BASE_MB = 30.0  # interpreter + runtime resident memory
RIDGE_MAIN = 0.3  # in log units: how far one measurement moves a correction shared by many plans
RIDGE_PAIR = 1.0  # interactions need more evidence
MARGIN_FLOOR = 0.10  # no predictor is trusted closer than run-to-run noise on a shared board
PRIOR_ERROR, PRIOR_WEIGHT = 0.5, 4  # what the margin assumes before the measurements say otherwise


@dataclass(frozen=True)
class Features:
    """What the predictor knows of a candidate before it is measured."""

    roofline_ms: float
    layers: int
    precision: str  # the arithmetic: fp32 | fp16 | int8
    weight_bytes: int
    peak_activation_bytes: int
    format: str = "onnx"  # onnx | tflite: which runtime dispatches the ops
    threads: int = 1
    quantization: str = ""  # the plan's precision (fp32, fp16, int8, dynamic); default: ``precision``
    prune_ratio: float = 0.0

    @property
    def prior_ms(self) -> float:
        efficiency = PRIOR_EFFICIENCY.get(self.precision, PRIOR_EFFICIENCY["fp32"])
        return max(self.roofline_ms / efficiency + PRIOR_LAYER_MS * self.layers, 1e-6)

    def terms(self) -> dict[str, float]:
        """The corrections that apply to this candidate, by name (value 1, or log work)."""
        q = self.quantization or self.precision
        t = str(self.threads)
        one = {f"format={self.format}": 1.0, f"precision={q}": 1.0, f"threads={t}": 1.0,
               f"prune={self.prune_ratio:g}": 1.0, f"format*precision={self.format},{q}": 1.0,
               f"format*threads={self.format},{t}": 1.0}
        return {**one, "log_prior": math.log(self.prior_ms)}


@dataclass
class Predictor:
    observations: list[tuple[Features, float, float | None]] = field(default_factory=list)  # (f, ms, rss MB)
    _fit_cache: tuple[dict[str, float], float, float] | None = None  # (coefficients, b0, mean log prior)

    def observe(self, features: Features, latency_ms: float, peak_rss_mb: float | None = None) -> None:
        self.observations.append((features, latency_ms, peak_rss_mb))
        self._fit_cache = self._fit(self.observations)

    @staticmethod
    def _fit(observations: list[tuple[Features, float, float | None]]) -> tuple[dict[str, float], float, float]:
        names = sorted({name for f, _, _ in observations for name in f.terms()})
        center = float(np.mean([math.log(f.prior_ms) for f, _, _ in observations]))
        x = np.stack([_row(f, names, center) for f, _, _ in observations])
        y = np.array([math.log(max(ms, 1e-6)) - math.log(f.prior_ms) for f, ms, _ in observations])
        penalty = np.diag([RIDGE_PAIR if "*" in n else RIDGE_MAIN for n in names])
        # b0 is not penalised: centre the data on it, solve the ridge, put it back
        x_mean, y_mean = x.mean(0), y.mean()
        coef = np.linalg.solve((x - x_mean).T @ (x - x_mean) + penalty, (x - x_mean).T @ (y - y_mean))
        b0 = float(y_mean - x_mean @ coef)
        return dict(zip(names, coef.tolist(), strict=True)), b0, center

    @staticmethod
    def _predict(fit: tuple[dict[str, float], float, float] | None, features: Features) -> float:
        if fit is None:
            return features.prior_ms
        coef, b0, center = fit
        terms = features.terms()
        terms["log_prior"] -= center
        correction = b0 + sum(coef.get(n, 0.0) * v for n, v in terms.items())
        return features.prior_ms * math.exp(correction)

    def latency_ms(self, features: Features) -> float:
        return self._predict(self._fit_cache, features)

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
        """How far off the predictor may be: the 75th percentile of its leave-one-out relative errors,
        blended with PRIOR_ERROR as if that were seen on PRIOR_WEIGHT points (a few points fit well by
        chance), never below MARGIN_FLOOR; 1.0 (no trust) before 3 measurements."""
        n = len(self.observations)
        if n < 3:
            return 1.0
        errors = []
        for i, (features, ms, _) in enumerate(self.observations):
            rest = self.observations[:i] + self.observations[i + 1:]
            errors.append(abs(self._predict(self._fit(rest), features) - ms) / ms if ms > 0 else 0.0)
        loo = float(np.percentile(errors, 75))
        return max(MARGIN_FLOOR, (n * loo + PRIOR_WEIGHT * PRIOR_ERROR) / (n + PRIOR_WEIGHT))


def _row(features: Features, names: list[str], center: float) -> np.ndarray:
    terms = features.terms()
    terms["log_prior"] -= center
    return np.array([terms.get(n, 0.0) for n in names])
