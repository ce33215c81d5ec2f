"""What a build puts in its package: the chosen artifact, its plan and figures, the constraints and
whether each held, the report of every candidate, and one held-out sample for the smoke test."""

from __future__ import annotations

import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgepack.latency import LatencySource
from edgepack.package import PackageContents, package_name, write_package
from edgepack.runners.base import EMULATED
from edgepack.search.result import BuildResult, CandidateRow
from edgepack.search.space import ConstraintCheck
from edgepack.stages import StageTime


def constraint_checks(result: BuildResult, chosen: CandidateRow) -> tuple[ConstraintCheck, ...]:
    """Every constraint that was set: its limit, the chosen candidate's figure, and whether it held.
    Accuracy: the worse of the host check and the check on the device."""
    c = result.constraints
    on_board = result.device_accuracy.accuracy_drop_pts if result.device_accuracy else None
    drops = [d for d in (chosen.accuracy_drop, on_board) if d is not None]
    latency_source = "predicted (emulated board)" if chosen.latency_source is LatencySource.PREDICTED else \
        "p90 of an unstable measurement" if chosen.unstable else None
    figures = [("max_size_mb", c.max_size_mb, chosen.size_mb, None),
               ("max_ram_mb", c.max_ram_mb, chosen.peak_rss_mb, None),
               ("max_latency_ms", c.max_latency_ms, chosen.judged_ms, latency_source),
               ("max_accuracy_drop", c.max_accuracy_drop, max(drops) if drops else None, None)]
    return tuple(ConstraintCheck(name, limit, value, source) for name, limit, value, source in figures
                 if limit is not None)


def measured_section(result: BuildResult, chosen: CandidateRow) -> dict[str, Any]:
    """The manifest's ``measured``: what the board reported for the chosen one (the harness's JSON), or
    on an emulated board what was predicted instead, and where."""
    if chosen.measurement is not None:
        measurement = {**chosen.measurement.raw, "latency_source": chosen.latency_label}
    else:  # an emulated board: nothing of speed was measured
        measurement = {"latency_source": LatencySource.PREDICTED.value, "why": f"the board is emulated ({EMULATED})",
                       "predicted_p50_ms": chosen.shown_ms, "environment": result.environment}
    measurement.update({"device": chosen.board, "measured_on": result.where,
                        "op_profile": result.op_profile.to_dict() if result.op_profile else None,
                        "unstable": list(chosen.unstable)})
    if chosen.p50_rounds_ms:
        measurement["p50_rounds_ms"] = list(chosen.p50_rounds_ms)
    return measurement


def packaged(result: BuildResult, output_dir: Path) -> BuildResult:
    """``result`` with its package written (``package``), and the writing timed as stage "package" (after
    the manifest and report inside the package were written: they hold the stages before it)."""
    start = time.perf_counter()
    package = write_build_package(result, output_dir)
    took = StageTime("package", time.perf_counter() - start, package.name)
    return replace(result, package=package, stages=(*result.stages, took))


def write_build_package(result: BuildResult, output_dir: Path) -> Path:
    """The chosen artifact's package (written to a temporary directory and renamed into place)."""
    chosen = result.chosen
    if chosen is None or chosen.artifact is None or (chosen.measurement is None and chosen.measured):
        raise ValueError("no chosen, measured candidate to package")
    built = chosen.artifact
    checked = built.fidelity
    plan = {**chosen.plan.to_dict(), "route": built.artifact.route, **built.details,
            "accuracy_drop_pts": built.accuracy_drop,
            "checked_against_original": {"samples": checked.samples, "data": checked.data,
                                         "source_accuracy": checked.source_accuracy, "accuracy": checked.accuracy},
            "checked_on_device": result.device_accuracy.to_dict() if result.device_accuracy else None}
    contents = PackageContents(
        name=package_name(result.source.name, result.device.name), artifact=built.artifact,
        source_name=result.source.source, source_sha256=result.source.sha256, device=result.device.name,
        plan=plan, measurement=measured_section(result, chosen), constraints=constraint_checks(result, chosen),
        preprocessing=result.preprocessing, sample=result.sample, build=result)
    with tempfile.TemporaryDirectory(prefix="edgepack-toolchain-") as folder:
        contents.toolchain_files, contents.toolchain = toolchain_outputs(result, chosen, Path(folder))
        return write_package(contents, output_dir)


def toolchain_outputs(result: BuildResult, chosen: CandidateRow,
                      folder: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    """For an Ethos-U profile, Vela's compiled model, its per-layer and summary CSVs and the .ini it read;
    for a microcontroller, the firmware's C sources (of the Vela model when there is one), compiled for
    its core when this machine can. Both are the chosen model's, made again from its verified file."""
    from edgepack.toolchains.mcu_sources import cross_compile, write_sources
    from edgepack.toolchains.vela import compile_model

    assert chosen.artifact is not None
    profile, model = result.device, chosen.artifact.artifact.path
    files: dict[str, Path] = {}
    manifest: dict[str, Any] = {}
    figures = chosen.toolchain
    arena, arena_from = figures.arena_bytes if figures else 0, "measured by TFLite Micro on the build machine"
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
        manifest["microcontroller"] = {**(figures.to_dict() if figures else {}), "sources": sources.to_dict(),
                                       "cross_compiled": cross_compile(sources, profile, folder),
                                       "profile": profile.microcontroller.model_dump()}
    return files, manifest
