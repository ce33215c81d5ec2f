"""Where a search starts: the limits a profile sets when the user set none, the data each candidate is
checked on, and every plan the profile and the flags allow (the user's file as given first)."""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

from edgepack.compress.plan import CompressionPlan
from edgepack.data import Dataset, random_dataset
from edgepack.errors import UsageError
from edgepack.model import ModelFormat, ModelHandle
from edgepack.profiles import DeviceProfile
from edgepack.search.options import BuildOptions
from edgepack.search.space import formats_for, plans_for
from edgepack.toolchains import NO_EDGETPU_COMPILER


def profile_limits(options: BuildOptions, profile: DeviceProfile, notes: list[str]) -> BuildOptions:
    """The profile's memory budget as the size limit, and a microcontroller's SRAM as the RAM limit, where
    the user set none; said in ``notes``."""
    c = options.constraints
    if c.max_size_mb is None:
        c = replace(c, max_size_mb=float(profile.memory_budget_mb))
        notes.append(f"size limit: the {profile.name} profile's memory budget, "
                     f"{profile.memory_budget_mb:g} MB (--max-size-mb to change)")
    if "tflite-edgetpu" in profile.runtimes:
        notes.append(f"{NO_EDGETPU_COMPILER}: the candidates are measured with the TFLite interpreter on "
                     "the host CPU of the board")
    mcu = profile.microcontroller
    if mcu is not None and c.max_ram_mb is None:
        c = replace(c, max_ram_mb=(mcu.sram_kb + mcu.psram_kb) / 1024)
        notes.append(f"SRAM limit: the {profile.name} profile's {mcu.sram_kb + mcu.psram_kb:g} KB for the "
                     "arena and the firmware (--max-sram-kb to change)")
    return replace(options, constraints=c)


def held_out_data(handle: ModelHandle, calib: Dataset | None, eval_data: Dataset | None,
                  notes: list[str]) -> tuple[Dataset, Dataset, bool]:
    """(calibration, held-out, calibrated?): without --calib, random inputs (no int8, no pruning);
    without --eval, the last fifth of --calib held out."""
    if calib is None:
        notes.append("no --calib: int8 and pruning need your data and were left out; accuracy is "
                     "top-1 agreement with the original on random inputs")
        return random_dataset(handle.inputs, 64), eval_data or random_dataset(handle.inputs, 64, seed=1), False
    if eval_data is None:
        calib, eval_data = calib.holdout(16, min_held_out=4)
        notes.append(f"no --eval: the last {len(eval_data)} calibration samples were held out to check each candidate")
    return calib, eval_data, True


def plans_allowed(handle: ModelHandle, profile: DeviceProfile, o: BuildOptions, calibrated: bool,
                  notes: list[str]) -> list[CompressionPlan]:
    """Every plan the profile and the flags allow, the source file as given first when the device runs it."""
    source = source_as_given(handle)
    plans = plans_for(profile, o.prune_ratios, formats=o.formats, precisions=o.precisions, threads=o.threads,
                      source=source)
    if source and source[1] != "fp32" and source[0] in formats_for(profile) and not any(p.as_given for p in plans):
        notes.append(f"the model as given ({source[0]} {source[1]}) is not a candidate: {profile.name} with these "
                     f"flags allows no {source[1]} {source[0]}")
    if not calibrated:
        if profile.precisions.required == ["int8"] and not any(p.as_given for p in plans):
            raise UsageError(f"{profile.name} runs int8 models only, and int8 is calibrated on your data",
                             "give --calib with samples of the model's input")
        plans = [p for p in plans if p.as_given or (not p.precision.calibrated and not p.prune_ratio)]
    if len(handle.inputs) != 1 and any(p.prune_ratio for p in plans):
        notes.append("pruning handles single-input models: left out")
        plans = [p for p in plans if not p.prune_ratio]
    if not plans:
        raise UsageError(f"nothing to search: {profile.name} allows no plan with these flags",
                         "widen --formats/--precisions, or give --calib for int8")
    return plans


def source_as_given(handle: ModelHandle) -> tuple[str, str] | None:
    """(format, precision) of a source a device may run as the file it is: a .tflite, or an .onnx whose
    declared input shapes are the ones measured (one with dimensions to fix is not the file as given).
    The precision is read from the graph: int8, fp16 (a TFLite model's fp16 weights too), dynamic, fp32."""
    from edgepack.convert.routes import onnx_of
    from edgepack.inspection import summarize_model

    fmt = handle.format.artifact_format
    if fmt is None:
        return None
    if handle.format is ModelFormat.ONNX:
        with tempfile.TemporaryDirectory(prefix="edgepack-source-") as work:
            if onnx_of(handle, Path(work))[0] != handle.path:
                return None
    summary, _ = summarize_model(handle)
    precision = summary.precision
    if precision == "fp32" and "fp16" in summary.weight_storage:
        precision = "fp16"
    return fmt.value, precision
