"""What a build puts in its package: the chosen artifact, its plan and figures, the constraints and
whether each held, the candidate table, and one held-out sample for the smoke test."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.package import PackageContents, package_name, write_package

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
    return {name: {"limit": limit, "value": value, "held": value is None or value <= limit}
            for name, (limit, value) in figures.items() if limit is not None}


def report_rows(result: BuildResult) -> list[dict[str, Any]]:
    rows = []
    for c in result.candidates:
        if not c.built or c.error:
            continue
        row = result.row(c)
        row["quality"] = "-" if c.accuracy_drop is None else f"drop {c.accuracy_drop:.2f} pts"
        row["measured"] = c.measured
        rows.append(row)
    return rows


def write_build_package(result: BuildResult, output_dir: Path) -> Path:
    """The chosen artifact's package (written to a temporary directory and renamed into place)."""
    chosen = result.chosen
    if chosen is None or chosen.measurement is None:
        raise ValueError("no chosen, measured candidate to package")
    built = result.built[chosen.plan.artifact]
    measurement = {**chosen.measurement.raw, "device": chosen.board, "measured_on": result.where,
                   "op_profile": result.op_profile}
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
