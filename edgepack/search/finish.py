"""After the search: each step a function that returns what it found. The candidates as rows of the
result (their blockers, the Pareto front, the chosen one), the chosen one's per-op profile on the board,
and its accuracy checked on the board itself."""

from __future__ import annotations

from collections.abc import Callable

from edgepack.analysis.slower import ProfiledArtifact, SlowerExplanation, explain_slower
from edgepack.compress.builder import ArtifactBuilder
from edgepack.data import Dataset
from edgepack.device_accuracy import DeviceAccuracy, check_on_device
from edgepack.errors import EdgepackError
from edgepack.measurer import Job, Measurer
from edgepack.records import Purpose
from edgepack.runners.base import OpProfile
from edgepack.search.candidate import Candidate, Status
from edgepack.search.options import BuildOptions
from edgepack.search.result import CandidateRow
from edgepack.search.space import pareto_front
from edgepack.search.strategy import Strategy


class DeviceCheckFailed(EdgepackError):
    """The chosen artifact could not be run on the board with the held-out samples: nothing is packaged."""


def candidate_rows(strategy: Strategy, chosen: Candidate | None) -> tuple[CandidateRow, ...]:
    """Every candidate as the build ends: the unmeasured with the predictor's final figure, each built one
    with what rules it out (predicted figures for the unmeasured), the measured Pareto front marked."""
    measured = [c for c in strategy.candidates if c.measured]
    front = pareto_front([(c.size_mb, c.latency_ms or 0.0, c.accuracy_drop or 0.0) for c in measured])
    pareto = {id(c) for c, on in zip(measured, front, strict=True) if on}
    rows = []
    for c in strategy.candidates:
        predicted = c.predicted_ms if c.measured else strategy.predictor.latency_ms(c.features)
        skipped = [c.why] if c.status is Status.SKIPPED and c.why else []
        blockers = strategy.blockers(c, predicted=not c.measured) if c.built and not c.failed else skipped
        figures = c.measurement.toolchain if c.measurement else None
        rows.append(CandidateRow(
            c.plan, c.plan.label, c.status, c.size_mb if c.built else None, c.latency, predicted, c.peak_rss_mb,
            c.accuracy_drop,
            c.artifact.fidelity.accuracy if c.artifact else None, tuple(blockers),
            c.why if c.failed else None, c.board, id(c) in pareto, c is chosen, figures,
            tuple(c.measurement.runs_ms) if c.measurement else (), tuple(c.p50_rounds_ms), c.artifact, c.measurement,
            c.features))
    return tuple(rows)


def op_profile(chosen: Candidate, measurer: Measurer, job: Job, say: Callable[[str], None]) -> OpProfile | None:
    """The chosen one's per-op times on the board; or why its boards give none (an emulator's, a
    microcontroller's toolchain)."""
    why = measurer.op_profile_unavailable
    if why is not None:
        return OpProfile(unavailable=why)
    say(f"chosen {chosen.plan.label}; measuring its per-op profile")
    profiled = measurer.measure([job])[0]
    return profiled.result.op_profile if profiled.ok and profiled.result else None


def accuracy_on_board(chosen: Candidate, builder: ArtifactBuilder, measurer: Measurer, eval_data: Dataset,
                      options: BuildOptions, say: Callable[[str], None]) -> DeviceAccuracy:
    """The held-out samples through the chosen artifact on a board, scored here; DeviceCheckFailed when
    the check could not run (nothing is packaged unchecked unless the user said --skip-device-check)."""
    if options.skip_device_check:
        return DeviceAccuracy(skipped="--skip-device-check")
    assert chosen.artifact is not None
    check = check_on_device(chosen.artifact.artifact, chosen.plan.threads, eval_data, measurer, builder.source,
                            options.check.kinds, options.timeout_s, say)
    if not check.ran:
        raise DeviceCheckFailed(f"the accuracy check on the board could not run ({check.error}): no package "
                                "written", "fix the board and build again (measurements are in the records), "
                                "or --skip-device-check to package without it")
    return check


def findings_of(chosen: Candidate, check: DeviceAccuracy) -> list[str]:
    """What the chosen one's figures on the board say that the search did not expect."""
    found = []
    problem = chosen.measurement.delegate_problem if chosen.measurement else None
    if problem:
        found.append(f"the NPU's delegate {problem}; the NPU's figures are Vela's estimates (in the package)")
    if chosen.accuracy_drop is not None and check.accuracy_drop_pts is not None \
            and abs(check.accuracy_drop_pts - chosen.accuracy_drop) > 0.5:
        found.append("accuracy on the board differs from the host check by "
                     f"{check.accuracy_drop_pts - chosen.accuracy_drop:+.2f} points")
    return found


def why_slower(pairs: list[tuple[Candidate, Candidate]], measurer: Measurer, job: Callable[..., Job],
               no_ops: set[str], say: Callable[[str], None],
               most: int = 3) -> list[tuple[tuple[Candidate, Candidate], SlowerExplanation]]:
    """For each (quantized, fp32 twin) measured with the quantized one slower: the op types that account
    for it, from both per-op profiles on the board (measured now where the search did not ask for them;
    from the graphs where the runtime gives none). At most ``most`` pairs, the worst first."""
    found = []
    worst = sorted(pairs, key=lambda p: (p[0].latency_ms or 0.0) / (p[1].latency_ms or 1.0), reverse=True)[:most]
    for pair in worst:
        for c in pair:
            if c.op_profile is None and measurer.op_profile_unavailable is None \
                    and c.plan.format.value not in no_ops:
                say(f"profile {c.plan.label}: per-op times, to see why {pair[0].plan.label} is slower")
                done = measurer.measure([job(c, purpose=Purpose.OP_PROFILE)])[0]
                c.op_profile = done.result.op_profile if done.ok and done.result else None
        quantized, fp32 = pair
        assert quantized.artifact is not None and fp32.artifact is not None
        found.append((pair, explain_slower(
            ProfiledArtifact(fp32.artifact.artifact.path, fp32.op_profile, fp32.latency_ms),
            ProfiledArtifact(quantized.artifact.artifact.path, quantized.op_profile, quantized.latency_ms))))
    return found
