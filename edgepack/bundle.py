"""What a build puts in its package: the chosen artifact, its plan and figures, the constraints and
whether each held, the candidate table, and one held-out sample for the smoke test."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.package import PackageContents, package_name, write_package
from edgepack.runners.base import EMULATED

if TYPE_CHECKING:
    from edgepack.search.result import BuildResult
    from edgepack.search.strategy import Candidate


def constraint_report(result: BuildResult, chosen: Candidate) -> dict[str, Any]:
    """Every constraint that was set: its limit, the chosen candidate's figure, and whether it held.
    Accuracy: the worse of the host check and the check on the device."""
    c = result.constraints
    on_board = result.device_accuracy.accuracy_drop_pts if result.device_accuracy else None
    drops = [d for d in (chosen.accuracy_drop, on_board) if d is not None]
    figures = {"max_size_mb": (c.max_size_mb, chosen.size_mb), "max_ram_mb": (c.max_ram_mb, chosen.peak_rss_mb),
               "max_latency_ms": (c.max_latency_ms, chosen.latency_ms),
               "max_accuracy_drop": (c.max_accuracy_drop, max(drops) if drops else None)}
    report = {name: {"limit": limit, "value": value, "held": value is None or value <= limit}
              for name, (limit, value) in figures.items() if limit is not None}
    if "max_latency_ms" in report and chosen.latency_source == "predicted":
        report["max_latency_ms"]["source"] = "predicted (emulated board)"
    return report


def report_rows(result: BuildResult) -> list[dict[str, Any]]:
    rows = []
    for c in result.candidates:
        if not c.built or c.error:
            continue
        row = result.row(c)
        row["quality"] = "-" if c.accuracy_drop is None else f"drop {c.accuracy_drop:.2f} pts"
        row["measured"] = c.latency_measured
        if c.latency_source == "predicted":  # plotted and listed, as the predictor's
            row["latency_ms"] = c.latency_ms
        rows.append(row)
    return rows


def write_build_package(result: BuildResult, output_dir: Path) -> Path:
    """The chosen artifact's package (written to a temporary directory and renamed into place)."""
    chosen = result.chosen
    if chosen is None or (chosen.measurement is None and chosen.latency_source == "measured"):
        raise ValueError("no chosen, measured candidate to package")
    built = result.built[chosen.plan.artifact]
    if chosen.measurement is not None:
        measurement = {**chosen.measurement.raw, "latency_source": "measured"}
    else:  # an emulated board: nothing of speed was measured
        measurement = {"latency_source": "predicted", "why": f"the board is emulated ({EMULATED})",
                       "predicted_p50_ms": chosen.latency_ms, "environment": result.environment}
    measurement.update({"device": chosen.board, "measured_on": result.where, "op_profile": result.op_profile})
    if chosen.p50_rounds_ms:
        measurement["p50_rounds_ms"] = chosen.p50_rounds_ms
    plan = {**chosen.plan.to_dict(), "route": built.artifact.route, **built.details,
            "accuracy_drop_pts": built.accuracy_drop,
            "checked_against_original": {k: built.fidelity.get(k) for k in
                                         ("samples", "data", "source_accuracy", "accuracy")},
            "checked_on_device": result.device_accuracy.to_dict() if result.device_accuracy else None}
    contents = PackageContents(
        name=package_name(result.source.name, result.device.name), artifact=built.artifact,
        source_name=result.source.source, source_sha256=result.source.sha256, device=result.device.name,
        plan=plan, measurement=measurement, candidates=report_rows(result),
        constraints=constraint_report(result, chosen), preprocessing=result.preprocessing, sample=result.sample)
    return write_package(contents, output_dir)
