"""Latency per device as a sum over kernels, with coefficients learned from what the board measured.

A candidate's artifact runs as kernels (``edgepack.analysis.kernels``: ops after the runtime's fusion,
grouped by kind and precision, each group with its roofline cost on one thread). Its latency is predicted as

    latency_ms = tau[runtime, threads] * (  sum over groups g of  theta[runtime, plan, g.kind, g.precision] * g.cost_ms
                                          + omega[runtime] * g.count  +  call[runtime] )

nn-Meter's per-kernel sum, with the kernels' coefficients learned on the user's own board. The bracket is
linear and fitted as a Bayesian linear regression, coarse to fine: one theta for everything, then one per
(runtime, the plan's precision: fp32, fp16, int8, dynamic), then one per kind of kernel and its arithmetic,
each level's posterior the next level's prior, so a kind never measured is predicted from its runtime and
plan, and a runtime never measured from the board's overall speed. Grouping by the plan's precision keeps
what a dynamic-int8 model's float kernels cost (they run between quantize steps) out of a float model's.

``tau`` is what a thread count does on this board, against the thread count measured most (the
reference): the geometric mean of measured ratios between the same artifact at the two thread counts, this
model's own pairs first, then any model's on this runtime, then any runtime's, then a prior. So a thread
count measured for one precision predicts it for the others, and one never measured is a known unknown.

Evidence comes from every whole-model measurement (one equation over all its kernels) and from per-op
profiles (ONNX Runtime's profiler: one equation per kind of op, scaled to the measured latency), from this
build and from earlier builds on the same board (``history``).

Every prediction carries an uncertainty (``predict(features).sigma``: the relative standard deviation of
the coefficients' posterior along the candidate's kernels, tau's, and the board's own noise), which the
search uses to spend board time where it could change the choice. Peak memory is a straight line in
weight + activation bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgepack.analysis.kernels import KernelGroup, KernelKind, kind_of

PRIOR_EFFICIENCY = 0.25  # fraction of the roofline that kernels typically reach
PRIOR_LAYER_MS = 0.005  # dispatch cost per kernel
PRIOR_CALL_MS = 0.05  # cost of one inference call beyond its kernels (inputs in, outputs out)
PRIOR_BASE_MB = 30.0  # interpreter + runtime resident memory
NOISE = 0.10  # a whole-model measurement's relative error: p50s from separate harness runs on the loopback
# board spread 10-30% (benchmarks/search.py, 'board noise'); a prediction cannot be surer than that
PROFILE_NOISE = 0.15  # a per-op profile's share of time (the profiler distorts the split)
#: how far each level may move from the one above it (relative standard deviation of its prior)
SPREAD_GLOBAL, SPREAD_GROUP, SPREAD_KIND, SPREAD_OVERHEAD = 2.0, 1.0, 0.5, 1.0
PRIOR_THREAD_EXPONENT = 0.6  # before any pair is measured: n times the threads take n**-0.6 of the time
PRIOR_THREAD_SPREAD = 0.3  # ... give or take 30%
THREAD_SPREAD = 0.15  # how much models (or runtimes) differ in what a thread count does to them
PRODUCTS = frozenset({KernelKind.CONV.value, KernelKind.DEPTHWISE.value, KernelKind.MATMUL.value})


@dataclass(frozen=True)
class Features:
    """What the predictor knows of a candidate before it is measured."""

    roofline_ms: float
    layers: int
    precision: str  # the dominant arithmetic: fp32 | fp16 | int8
    weight_bytes: int
    peak_activation_bytes: int
    format: str = "onnx"  # onnx | tflite: which runtime dispatches the kernels
    threads: int = 1
    quantization: str = ""  # the plan's precision (fp32, fp16, int8, dynamic); default: ``precision``
    prune_ratio: float = 0.0
    kernels: tuple[KernelGroup, ...] = ()  # empty: one group of ``layers`` kernels costing ``roofline_ms``

    @property
    def groups(self) -> tuple[KernelGroup, ...]:
        if self.kernels:
            return self.kernels
        return (KernelGroup(KernelKind.OTHER.value, self.precision, self.layers, 0, 0, self.roofline_ms),)

    @property
    def prior_ms(self) -> float:
        return PRIOR_CALL_MS + sum(g.cost_ms / PRIOR_EFFICIENCY + PRIOR_LAYER_MS * g.count for g in self.groups)

    @property
    def runtime(self) -> str:
        """Runtime and threads: what one measurement of an artifact is of."""
        return f"{self.format}/{self.threads}"

    @property
    def plan_precision(self) -> str:
        return self.quantization or self.precision

    @property
    def artifact(self) -> str:
        """What tells two candidates apart when they differ only in threads (without the artifact's sha256)."""
        return f"{self.format}/{self.plan_precision}/{self.prune_ratio}/{self.weight_bytes}/{self.layers}"

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "kernels"}
        return {**data, "kernels": [g.to_dict() for g in self.kernels]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Features:
        kernels = tuple(KernelGroup.from_dict(g) for g in data.get("kernels") or ())
        return cls(**{**{k: v for k, v in data.items() if k != "kernels"}, "kernels": kernels})


@dataclass(frozen=True)
class Prediction:
    ms: float
    sigma: float  # relative standard deviation (log scale): 0.1 is about +-10%

    def low(self, z: float = 1.0) -> float:
        return self.ms * math.exp(-z * self.sigma)


@dataclass(frozen=True)
class Observation:
    """A measured latency (``kinds`` empty), or the share of it that a per-op profile gave ``kinds``."""

    features: Features
    ms: float
    rss_mb: float | None = None
    kinds: frozenset[str] = frozenset()
    source: str = ""  # the artifact it came from (sha256), so a record read twice counts once

    def to_dict(self) -> dict[str, Any]:
        return {"features": self.features.to_dict(), "ms": self.ms, "rss_mb": self.rss_mb,
                "kinds": sorted(self.kinds), "source": self.source}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Observation:
        return cls(Features.from_dict(data["features"]), float(data["ms"]), data.get("rss_mb"),
                   frozenset(data.get("kinds") or ()), str(data.get("source") or ""))


#: a coefficient's name: ("theta", runtime, plan precision, kind, precision) at the finest level, ("omega", runtime)
Name = tuple[str, ...]


@dataclass
class _Fit:
    mean: dict[Name, float]
    cov: np.ndarray
    names: list[Name]

    def value(self, name: Name, default: float) -> float:
        return self.mean.get(name, default)


@dataclass(frozen=True)
class Threads:
    """What a thread count does to an artifact's latency on this board, against ``reference`` threads:
    log ratios (mean, variance) from the same artifact measured at both, by runtime and thread count."""

    reference: int
    own: dict[tuple[str, int], tuple[float, float]]  # this model's pairs
    by_runtime: dict[tuple[str, int], tuple[float, float]]  # every model's on the board
    by_threads: dict[int, tuple[float, float]]  # every model's, every runtime's

    def log_tau(self, f: Features, own: bool) -> tuple[float, float]:
        """(log of the factor, its variance) for ``f``'s runtime and threads; ``own``: ``f`` is of this model."""
        key = (f.format, f.threads)
        if f.threads == self.reference:
            return 0.0, 0.0
        if own and key in self.own:
            return self.own[key]
        if key in self.by_runtime:
            mean, variance = self.by_runtime[key]
            return mean, variance + (THREAD_SPREAD**2 if own else 0.0)
        if f.threads in self.by_threads:
            mean, variance = self.by_threads[f.threads]
            return mean, variance + 2 * THREAD_SPREAD**2
        return -PRIOR_THREAD_EXPONENT * math.log(f.threads / self.reference), PRIOR_THREAD_SPREAD**2

    @classmethod
    def fitted(cls, own: list[Observation], every: list[Observation]) -> Threads:
        whole = [o for o in every if not o.kinds]
        counts: dict[int, int] = {}
        for o in whole:
            counts[o.features.threads] = counts.get(o.features.threads, 0) + 1
        reference = max(counts, key=lambda n: (counts[n], n)) if counts else 1
        mine = {id(o) for o in own}

        def ratios(observations: list[Observation]) -> dict[tuple[str, int], list[float]]:
            times: dict[tuple[str, str], dict[int, list[float]]] = {}
            for o in observations:
                artifact = (o.source or o.features.artifact, o.features.format)
                times.setdefault(artifact, {}).setdefault(o.features.threads, []).append(math.log(o.ms))
            found: dict[tuple[str, int], list[float]] = {}
            for (_, fmt), by_count in times.items():
                if reference in by_count:
                    base = float(np.mean(by_count[reference]))
                    for n, logs in by_count.items():
                        if n != reference:
                            found.setdefault((fmt, n), []).append(float(np.mean(logs)) - base)
            return found

        def summary(logs: list[float], pooled: bool) -> tuple[float, float]:
            spread = float(np.var(logs, ddof=1)) if len(logs) > 1 else 0.0
            if pooled:  # a new model is one more draw from what the others did
                return float(np.mean(logs)), max(spread, THREAD_SPREAD**2) * (1 + 1 / len(logs))
            return float(np.mean(logs)), max(spread, 2 * NOISE**2) / len(logs)

        own_ratios = ratios([o for o in whole if id(o) in mine])
        every_ratios = ratios(whole)
        by_threads: dict[int, list[float]] = {}
        for (_, n), logs in every_ratios.items():
            by_threads.setdefault(n, []).extend(logs)
        return cls(reference, {k: summary(v, False) for k, v in own_ratios.items()},
                   {k: summary(v, True) for k, v in every_ratios.items()},
                   {n: summary(v, True) for n, v in by_threads.items()})


@dataclass
class Predictor:
    observations: list[Observation] = field(default_factory=list)
    #: measurements of other models on the same board, from earlier builds (``edgepack.search.memory``)
    history: list[Observation] = field(default_factory=list)
    _fit: tuple[_Fit, _Fit, _Fit, Threads] | None = None

    def observe(self, features: Features, latency_ms: float, peak_rss_mb: float | None = None,
                source: str = "") -> None:
        self.observations.append(Observation(features, latency_ms, peak_rss_mb, source=source))
        self._fit = None

    def observe_ops(self, features: Features, latency_ms: float, ops: list[tuple[str, float]],
                    source: str = "") -> list[Observation]:
        """A per-op profile (op type, ms) of an artifact measured at ``latency_ms``: the time of each kind
        of kernel, scaled so the profile adds up to the latency. Convolutions and matrix products are one
        share (a runtime's names do not say which convolutions are depthwise)."""
        total = sum(ms for _, ms in ops)
        present = {g.kind for g in features.groups}
        if total <= 0 or latency_ms <= 0:
            return []
        shares: dict[frozenset[str], float] = {}
        for op, ms in ops:
            kind = kind_of(op).value
            bucket = PRODUCTS if kind in PRODUCTS else frozenset({kind})
            shares[bucket] = shares.get(bucket, 0.0) + ms * latency_ms / total
        added = [Observation(features, ms, kinds=frozenset(b & present), source=source)
                 for b, ms in shares.items() if b & present and ms > 0]
        self.observations.extend(added)
        self._fit = None
        return added

    # -- fitting ----------------------------------------------------------------------------------------
    def _all(self) -> list[Observation]:
        mine = {(o.source, o.kinds, o.features.runtime) for o in self.observations if o.source}
        return [o for o in self.history if (o.source, o.kinds, o.features.runtime) not in mine] + self.observations

    def _fitted(self) -> tuple[_Fit, _Fit, _Fit, Threads]:
        if self._fit is None:
            threads = Threads.fitted(self.observations, self._all())
            own = {id(o) for o in self.observations}
            observations = [replace(o, ms=o.ms / math.exp(threads.log_tau(o.features, id(o) in own)[0]))
                            for o in self._all()]  # each at the reference thread count
            top = _solve(observations, _global_names, None, SPREAD_GLOBAL)
            group = _solve(observations, _group_names, top, SPREAD_GROUP)
            kind = _solve(observations, _kind_names, group, SPREAD_KIND)
            self._fit = (top, group, kind, threads)
        return self._fit

    def predict(self, features: Features) -> Prediction:
        """The candidate's latency and its uncertainty. A coefficient the finest level never saw (a kind,
        a runtime or a precision never measured) is the coarser level's, with the coarser level's spread."""
        top, group, kind, threads = self._fitted()
        x = np.zeros(len(kind.names))
        index = {n: i for i, n in enumerate(kind.names)}
        ms = extra = 0.0
        for name, amount in _terms(features, frozenset(), _kind_names):
            if name in index:
                x[index[name]] += amount
                ms += amount * kind.mean[name]
            else:
                value, variance = _fallback(name, (group, top))
                ms += amount * value
                extra += amount**2 * variance
        ms = max(ms, 1e-3 * features.prior_ms)
        variance = float(x @ kind.cov @ x) + extra
        log_tau, tau_variance = threads.log_tau(features, own=True)
        return Prediction(ms * math.exp(log_tau), math.sqrt(variance / ms**2 + tau_variance + NOISE**2))

    def latency_ms(self, features: Features) -> float:
        return self.predict(features).ms

    def coefficients(self) -> dict[str, float]:
        """The finest level's coefficients by name ("theta onnx int8 conv int8", "omega onnx") and the thread
        factors ("tau onnx/2")."""
        _, _, fit, threads = self._fitted()
        taus = {f"tau {fmt}/{n}": math.exp(v) for (fmt, n), (v, _) in threads.by_runtime.items()}
        return {**{" ".join(n): v for n, v in fit.mean.items()}, **taus}

    def peak_rss_mb(self, features: Features) -> float:
        model_mb = (features.weight_bytes + features.peak_activation_bytes) / 1e6
        seen = [(o.features, o.rss_mb) for o in self.observations if o.rss_mb is not None and not o.kinds]
        if len(seen) < 2:
            return PRIOR_BASE_MB + 2 * model_mb
        x = np.array([[(f.weight_bytes + f.peak_activation_bytes) / 1e6, 1.0] for f, _ in seen])
        slope, base = np.linalg.lstsq(x, np.array([rss for _, rss in seen]), rcond=None)[0]
        return float(max(slope, 0.0) * model_mb + base)

    @property
    def measured(self) -> int:
        return sum(1 for o in self.observations if not o.kinds)


def _prior(name: Name) -> tuple[float, float]:
    """The top level's prior: (mean, relative spread)."""
    if name[0] == "theta":
        return 1 / PRIOR_EFFICIENCY, SPREAD_GLOBAL
    return (PRIOR_LAYER_MS if name[0] == "omega" else PRIOR_CALL_MS), SPREAD_OVERHEAD


def _up(name: Name) -> Name:
    """The coefficient one level coarser: a kind's -> its runtime and precision's -> the board's."""
    if name[0] == "theta" and len(name) == 5:
        return name[:3]
    return name[:1]


def _in(fit: _Fit, name: Name) -> Name | None:
    """``name`` as ``fit`` has it: itself (an overhead is named alike at two levels), else one level up."""
    return name if name in fit.mean else _up(name) if _up(name) in fit.mean else None


def _fallback(name: Name, levels: tuple[_Fit, _Fit]) -> tuple[float, float]:
    """(value, variance) of a coefficient from the coarser levels (the prior when none saw it)."""
    spreads = [SPREAD_KIND if name[0] == "theta" else SPREAD_OVERHEAD]
    for fit, spread in zip(levels, (SPREAD_GROUP, SPREAD_GLOBAL), strict=True):
        name = _up(name)
        if name in fit.mean:
            i = fit.names.index(name)
            value = fit.mean[name]
            return value, float(fit.cov[i, i]) + sum((s * value) ** 2 for s in spreads)
        spreads.append(spread if name[0] == "theta" else 0.0)
    value, spread = _prior(name)
    return value, (spread * value) ** 2 + sum((s * value) ** 2 for s in spreads)


def _global_names(f: Features, g: KernelGroup | None) -> tuple[Name, ...]:
    return (("call",),) if g is None else (("theta",), ("omega",))


def _group_names(f: Features, g: KernelGroup | None) -> tuple[Name, ...]:
    return (("call", f.format),) if g is None else (("theta", f.format, f.plan_precision), ("omega", f.format))


def _kind_names(f: Features, g: KernelGroup | None) -> tuple[Name, ...]:
    """The coefficients of one kernel group (``g``), or of the call itself (None)."""
    if g is None:
        return (("call", f.format),)
    return ("theta", f.format, f.plan_precision, g.kind, g.precision), ("omega", f.format)


def _row(f: Features, kinds: frozenset[str], naming: Any, fit: _Fit) -> np.ndarray:
    """What each of ``fit``'s coefficients multiplies in the time of ``f`` (of its ``kinds`` only, when given)."""
    index = {n: i for i, n in enumerate(fit.names)}
    x = np.zeros(len(fit.names))
    for name, amount in _terms(f, kinds, naming):
        if name in index:
            x[index[name]] += amount
    return x


def _terms(f: Features, kinds: frozenset[str], naming: Any) -> list[tuple[Name, float]]:
    terms: list[tuple[Name, float]] = [] if kinds else [(naming(f, None)[0], 1.0)]
    for g in f.groups:
        if not kinds or g.kind in kinds:
            theta, omega = naming(f, g)
            terms += [(theta, g.cost_ms), (omega, float(g.count))]
    return terms


def _solve(observations: list[Observation], naming: Any, above: _Fit | None, spread: float) -> _Fit:
    """The posterior of the coefficients that ``naming`` gives. Each one's prior is the level above's
    posterior (at the top: the roofline's efficiency and the dispatch cost), its standard deviation
    ``spread`` times its mean (an overhead's: SPREAD_OVERHEAD) plus the variance carried from above."""
    names: list[Name] = []
    for o in observations:
        names += [n for n, _ in _terms(o.features, o.kinds, naming) if n not in names]
    shell = _Fit({}, np.zeros((0, 0)), names)
    means, variances = np.zeros(len(names)), np.zeros(len(names))
    for i, n in enumerate(names):
        found = _in(above, n) if above is not None else None
        if above is not None and found is not None:
            j = above.names.index(found)
            means[i], variances[i] = above.mean[found], above.cov[j, j]
        else:
            means[i] = _prior(n)[0]
        variances[i] += ((spread if n[0] == "theta" else SPREAD_OVERHEAD) * means[i]) ** 2
    precision = np.diag(1 / np.maximum(variances, 1e-18))
    target = precision @ means
    for o in observations:
        x = _row(o.features, o.kinds, naming, shell)
        weight = 1 / ((PROFILE_NOISE if o.kinds else NOISE) * o.ms) ** 2
        precision += weight * np.outer(x, x)
        target += weight * x * o.ms
    cov = np.linalg.inv(precision) if names else np.zeros((0, 0))
    mean = cov @ target if names else np.zeros(0)
    return _Fit(dict(zip(names, np.maximum(mean, means * 1e-3).tolist(), strict=True)), cov, names)
