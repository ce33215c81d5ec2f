"""What a build puts in its package: the chosen artifact, its plan and figures, the constraints and
whether each held, the candidate table, and one held-out sample for the smoke test."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack.latency import LatencySource
from edgepack.package import PackageContents, package_name, write_package
from edgepack.runners.base import EMULATED
from edgepack.search.result import toolchain_figures

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
               "max_latency_ms": (c.max_latency_ms, chosen.judged_ms),
               "max_accuracy_drop": (c.max_accuracy_drop, max(drops) if drops else None)}
    report = {name: {"limit": limit, "value": value, "held": value is None or value <= limit}
              for name, (limit, value) in figures.items() if limit is not None}
    if "max_latency_ms" in report and chosen.latency_source is LatencySource.PREDICTED:
        report["max_latency_ms"]["source"] = "predicted (emulated board)"
    elif "max_latency_ms" in report and chosen.unstable:
        report["max_latency_ms"]["source"] = "p90 of an unstable measurement"
    return report


def report_rows(result: BuildResult) -> list[dict[str, Any]]:
    rows = []
    for c in result.candidates:
        if not c.built or c.error:
            continue
        row = result.row(c)
        row["quality"] = "-" if c.accuracy_drop is None else f"drop {c.accuracy_drop:.2f} pts"
        row["measured"] = c.latency_measured
        row["runs_ms"] = c.measurement.runs_ms if c.measurement else []
        if c.latency_source is LatencySource.PREDICTED:  # plotted and listed, as the predictor's
            row["latency_ms"] = c.latency_ms
        rows.append(row)
    return rows


def write_build_package(result: BuildResult, output_dir: Path) -> Path:
    """The chosen artifact's package (written to a temporary directory and renamed into place)."""
    chosen = result.chosen
    if chosen is None or (chosen.measurement is None and chosen.latency_source is LatencySource.MEASURED):
        raise ValueError("no chosen, measured candidate to package")
    built = result.built[chosen.plan.artifact]
    if chosen.measurement is not None:
        measurement = {**chosen.measurement.raw, "latency_source": chosen.latency_label}
    else:  # an emulated board: nothing of speed was measured
        measurement = {"latency_source": LatencySource.PREDICTED.value, "why": f"the board is emulated ({EMULATED})",
                       "predicted_p50_ms": chosen.latency_ms, "environment": result.environment}
    measurement.update({"device": chosen.board, "measured_on": result.where, "op_profile": result.op_profile,
                        "unstable": chosen.unstable})
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
        constraints=constraint_report(result, chosen), preprocessing=result.preprocessing, sample=result.sample,
        summary={k: v for k, v in result.to_dict().items() if k in ("predictor", "findings", "notes", "measured_on")})
    with tempfile.TemporaryDirectory(prefix="edgepack-toolchain-") as folder:
        contents.toolchain_files, contents.toolchain = toolchain_outputs(result, chosen, Path(folder))
        return write_package(contents, output_dir)


def toolchain_outputs(result: BuildResult, chosen: Candidate, folder: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """For an Ethos-U profile, Vela's compiled model, its per-layer and summary CSVs and the .ini it read;
    for a microcontroller, the firmware's C sources (of the Vela model when there is one), compiled for
    its core when this machine can. Both are the chosen model's, made again from its verified file."""
    from edgepack.toolchains.mcu_sources import cross_compile, write_sources
    from edgepack.toolchains.vela import compile_model

    profile, model = result.device, result.built[chosen.plan.artifact].artifact.path
    files: dict[str, Path] = {}
    manifest: dict[str, Any] = {}
    raw = chosen.measurement.raw if chosen.measurement else {}
    arena, arena_from = int(raw.get("arena_bytes") or 0), "measured by TFLite Micro on the build machine"
    firmware_model, described = model, "the verified int8 model (model.tflite)"
    if profile.compiler == "vela" and model.suffix == ".tflite":
        report = compile_model(model, profile, folder / "vela")
        files.update({"model_vela.tflite": report.compiled, "vela_per-layer.csv": report.per_layer_csv,
                      "vela_summary.csv": report.summary_csv, "vela.ini": folder / "vela" / f"{profile.name}_vela.ini"})
        manifest["vela"] = {**report.to_dict(), "model_file": "model_vela.tflite",
                            "per_op": [op.to_dict() for op in report.ops],
                            "verified": "model.tflite, which Vela compiled, is the verified model; model_vela.tflite "
                                        "runs only on an Ethos-U (no NPU or simulator here to compare its outputs)"}
        firmware_model, described = report.compiled, "Vela's compilation of the verified int8 model"
        if report.sram_kb * 1024 > arena:  # the NPU's scratch lives in the arena
            arena, arena_from = int(report.sram_kb * 1024), "Vela's SRAM estimate (the NPU's scratch in the arena)"
    if profile.microcontroller is not None:
        sources = write_sources(firmware_model, folder, arena, described, arena_from)
        files.update({p.name: p for p in sources.files})
        manifest["microcontroller"] = {**toolchain_figures(raw), "sources": sources.to_dict(),
                                       "cross_compiled": cross_compile(sources, profile, folder),
                                       "profile": profile.microcontroller.model_dump()}
    return files, manifest
