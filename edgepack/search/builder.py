"""The build step of the loop: the unbuilt candidates of a batch become verified artifacts (side by
side, ``--jobs``), and their real size, accuracy and features replace the estimates.

Before the first pruned candidate is built, the pruning probe builds each prune ratio's fp32 ONNX
model (pruning and distillation, no conversion: the cheapest artifact that shows pruning's own loss):
a ratio whose loss alone breaks the accuracy limit, or whose model fails, is never built in any format.
A ratio whose model computes the same function as a higher ratio's (channels that are never active on
the user's data are free to remove, so 30% and 50% may leave the same live network) is one candidate
with it: the smaller file is kept, the other skipped and said why.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgepack.compress.parallel import ParallelBuilder
from edgepack.compress.plan import CompressionPlan
from edgepack.compress.plan_builder import BuildFailed, BuiltArtifact
from edgepack.profiles import DeviceProfile
from edgepack.search.estimate import features_of
from edgepack.search.strategy import Candidate

SAME_FUNCTION_SAMPLES = 64
SAME_FUNCTION_TOLERANCE = 1e-4  # of each output's peak on those samples


class CandidateBuilder:
    def __init__(self, builder: ParallelBuilder, profile: DeviceProfile, max_accuracy_drop: float | None,
                 say: Callable[[str], None]) -> None:
        self.builder, self.profile, self.limit, self.say = builder, profile, max_accuracy_drop, say
        self.built: dict[tuple[str, str, float], BuiltArtifact] = {}
        self.failures: dict[tuple[str, str, float], str] = {}
        self._probed = False

    def build(self, batch: list[Candidate], candidates: list[Candidate]) -> None:
        """Build every unbuilt candidate of ``batch`` (and its twins: other thread counts)."""
        if not self._probed and any(c.plan.prune_ratio and not c.built for c in batch):
            self._probed = True
            self._probe(candidates)
        todo = [c for c in batch if not c.built and not c.skipped and not c.error]
        plans = list({c.plan.artifact: c.plan for c in todo}.values())
        for plan, built in zip(plans, self._build(plans), strict=True):
            twins = [c for c in candidates if c.plan.artifact == plan.artifact]
            for c in twins:
                if built is None:
                    c.error = f"build failed: {self.failures[plan.artifact]}"
                    continue
                c.built, c.size_mb, c.accuracy_drop = True, built.size_mb, built.accuracy_drop
                c.features = features_of(built.artifact.path, built.artifact.format, c.plan, self.profile)

    def _build(self, plans: list[CompressionPlan]) -> list[BuiltArtifact | None]:
        todo = [p for p in plans if p.artifact not in self.built and p.artifact not in self.failures]
        for plan, built in zip(todo, self.builder.build(todo) if todo else [], strict=True):
            if isinstance(built, BuildFailed):
                self.failures[plan.artifact] = str(built)
            else:
                self.built[plan.artifact] = built
        return [self.built.get(p.artifact) for p in plans]

    def _probe(self, candidates: list[Candidate]) -> None:
        ratios = sorted({c.plan.prune_ratio for c in candidates if c.plan.prune_ratio})
        probes = self._build([CompressionPlan("onnx", "fp32", r) for r in ratios])
        for ratio, probe in zip(ratios, probes, strict=True):
            same = next((r for r, p in zip(ratios, probes, strict=True)
                         if r > ratio and p is not None and probe is not None and self._same(probe, p)), None)
            reason = self._ruled_out(ratio, probe) if same is None else (
                f"pruning {ratio:.0%} gives the same model as pruning {same:.0%} (equal outputs on held-out samples: "
                f"the channels in between are never active on your data): one candidate, the {same:.0%} one")
            if reason is None:
                continue
            self.say(f"prune  {ratio:.0%}: {reason}")
            for c in candidates:
                if c.plan.prune_ratio == ratio and not c.built:
                    c.skipped = reason

    def _ruled_out(self, ratio: float, probe: BuiltArtifact | None) -> str | None:
        if probe is None:
            return f"pruning {ratio:.0%} alone fails: {self.failures[('onnx', 'fp32', ratio)]}"
        if self.limit is not None and probe.accuracy_drop is not None and probe.accuracy_drop > self.limit:
            return (f"pruning {ratio:.0%} alone loses {probe.accuracy_drop:.2f} accuracy points "
                    f"(limit {self.limit:g}): not built")
        return None

    def _same(self, a: BuiltArtifact, b: BuiltArtifact) -> bool:
        """Two fp32 models that give the same outputs on held-out samples (within 1e-4 of each peak)."""
        from edgepack.engines import engine_for_file

        data = self.builder.local.eval_data
        names = [s.name for s in self.builder.local.handle.inputs]
        ea, eb = (engine_for_file(x.artifact.path, "onnx") for x in (a, b))
        for i in range(min(len(data), SAME_FUNCTION_SAMPLES)):
            sample = data.batch(names, i)
            for x, y in zip(ea.run(sample), eb.run(sample), strict=True):
                if x.shape != y.shape:
                    return False
                peak = float(np.max(np.abs(x))) or 1.0
                if float(np.max(np.abs(x.astype(np.float64) - y))) > SAME_FUNCTION_TOLERANCE * peak:
                    return False
        return True
