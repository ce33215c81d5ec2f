"""The Python API: what the CLI does, called from a training script or a notebook.

    import edgepack
    result = edgepack.build("model.onnx", device="rpi4", calib=x_train[:300], eval={"x": x_test, "y": y_test},
                            hosts=["pi@raspberrypi.local"], max_accuracy_drop=1.0)
    print(result.package, result.chosen.latency_ms)

A model is a path (.onnx .tflite .keras .h5 .pt .pt2, a SavedModel directory), an ``onnx.ModelProto``,
or a ``torch.nn.Module`` with ``example_input`` (a tensor, or a tuple of them). Data is a path (what
``--calib`` reads), a numpy array (samples on the first axis), a dict of arrays by input name (``y``:
labels), or an iterable of batches (a DataLoader: tensors, arrays, or ``(x, y)`` pairs). Each function
returns the typed result the CLI prints (``.to_dict()`` is its ``--json``). Errors are
:class:`edgepack.errors.EdgepackError` subclasses, never ``SystemExit``; failures on a board are data in
the result. The CLI's commands call these functions.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.errors import EdgepackError, UsageError

Say = Callable[[str], None]


class NoFeasibleCandidate(EdgepackError):
    """No candidate met the constraints: nothing was packaged. ``result`` holds every candidate."""

    def __init__(self, message: str, result: Any) -> None:
        super().__init__(message, "loosen a constraint or widen the search")
        self.result = result


def _quiet(_: str) -> None:
    return None


@contextlib.contextmanager
def _workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="edgepack-api-") as folder:
        yield Path(folder)


def registry(profiles: Sequence[str | Path] = ()) -> Any:
    from edgepack.profiles import ProfileRegistry

    return ProfileRegistry.discover([Path(p) for p in profiles])


def device_profile(device: Any, profiles: Sequence[str | Path] = ()) -> Any:
    """A DeviceProfile, or its name looked up among the profiles (and the extra profile files)."""
    from edgepack.profiles import DeviceProfile

    return device if isinstance(device, DeviceProfile) else registry(profiles).get(str(device))


def load(model: Any, folder: Path, example_input: Any = None, input_shape: str | None = None,
         input_value: str | None = None, name: str | None = None) -> Any:
    """A ModelHandle from a path, an ``onnx.ModelProto`` or a ``torch.nn.Module`` (with ``example_input``);
    ``name`` names an in-memory model (default: the graph's name, or the module's class)."""
    from edgepack.model import ModelHandle, load_model

    if isinstance(model, ModelHandle):
        return model
    if isinstance(model, str | Path):
        return load_model(str(model), input_shape=input_shape, input_value=input_value)
    kind = f"{type(model).__module__}.{type(model).__name__}"
    if kind.startswith("onnx") and hasattr(model, "graph"):
        import onnx

        path = folder / f"{name or model.graph.name or 'model'}.onnx"
        onnx.save(model, str(path))
        return load_model(str(path), input_value=input_value)
    try:
        import torch
    except ImportError:
        torch = None  # type: ignore[assignment]
    if torch is not None and isinstance(model, torch.nn.Module):
        if example_input is None:
            raise UsageError("a torch.nn.Module needs example_input (a tensor of the input's shape)",
                             "edgepack.build(module, example_input=torch.zeros(1, 3, 224, 224), ...)")
        args = tuple(example_input) if isinstance(example_input, list | tuple) else (example_input,)
        path = folder / f"{name or type(model).__name__.lower()}.pt2"
        torch.export.save(torch.export.export(model.eval(), args), str(path))
        return load_model(str(path), input_value=input_value)
    raise UsageError(f"edgepack cannot read a model given as {kind}",
                     "pass a path, an onnx.ModelProto or a torch.nn.Module with example_input")


def dataset(data: Any, handle: Any, folder: Path, purpose: str, preprocessing: Any = None) -> Any:
    """A Dataset from a path, an array, a dict of arrays or an iterable of batches (None stays None)."""
    from edgepack.data import Dataset, load_dataset

    if data is None or isinstance(data, Dataset):
        return data
    if isinstance(data, str | Path):
        return load_dataset(data, handle.inputs, purpose=purpose, preprocessing=preprocessing)
    if isinstance(data, np.ndarray) or (hasattr(data, "numpy") and not isinstance(data, Iterable | dict)):
        arrays = {"x": _array(data)}
    elif isinstance(data, dict):
        arrays = {str(k): _array(v) for k, v in data.items()}
    elif isinstance(data, Iterable):
        arrays = _batches(data, purpose)
    else:
        raise UsageError(f"{purpose} data given as {type(data).__name__} cannot be read",
                         "pass a path, a numpy array, a dict of arrays or an iterable of batches")
    path = folder / f"{purpose}.npz"
    np.savez(path, **arrays)
    return load_dataset(path, handle.inputs, purpose=purpose)


def _array(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _batches(data: Iterable[Any], purpose: str) -> dict[str, np.ndarray]:
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for batch in data:
        if isinstance(batch, list | tuple) and len(batch) == 2:
            xs.append(_array(batch[0]))
            ys.append(_array(batch[1]))
        else:
            xs.append(_array(batch))
    if not xs:
        raise UsageError(f"the {purpose} data gave no batches", "pass an iterable that yields samples")
    arrays = {"x": np.concatenate(xs)}
    if ys and len(ys) == len(xs):
        arrays["y"] = np.concatenate(ys)
    return arrays


def inspect(model: Any, device: Any = None, *, example_input: Any = None, profiles: Sequence[str | Path] = (),
            input_shape: str | None = None) -> Any:
    """``edgepack inspect``: an Inspection (summary, compatibility, the device's toolchain, estimate)."""
    from edgepack.inspection import inspect_model

    with _workspace() as folder:
        handle = load(model, folder, example_input, input_shape)
        return inspect_model(handle, device_profile(device, profiles) if device is not None else None)


def convert(model: Any, to: str = "tflite", output: str | Path | None = None, *, device: Any = "host",
            calib: Any = None, example_input: Any = None, profiles: Sequence[str | Path] = (),
            tolerance: float | None = None, allow_drift: bool = False, kinds: dict[str, str] | None = None) -> Any:
    """``edgepack convert``: a ConversionResult; the verified artifact is written to ``output``."""
    from edgepack.artifact import resolve_output
    from edgepack.convert.convert import convert_model, default_name

    profile = device_profile(device, profiles)
    with _workspace() as folder:
        handle = load(model, folder, example_input)
        target = resolve_output(Path(output) if output else Path.cwd(), default_name(handle, to),
                                directory_artifact=to in ("savedmodel", "torch"))
        data = dataset(calib, handle, folder, "calibration")
        return convert_model(handle, to, target, profile, data, tolerance=tolerance, kinds=kinds or {},
                             allow_drift=allow_drift)


def quantize(model: Any, calib: Any, mode: str = "int8", output: str | Path | None = None, *, format: str | None = None,
             device: Any = "host", eval: Any = None, example_input: Any = None,
             profiles: Sequence[str | Path] = (), max_accuracy_drop: float = 1.0, io_dtype: str | None = None,
             calibration: str = "minmax", check: Any = None) -> Any:
    """``edgepack quantize``: a QuantizeResult, checked with the real runtime on held-out data."""
    from edgepack.artifact import resolve_output
    from edgepack.compress.quantize import Check, default_format, quantize_model

    profile = device_profile(device, profiles)
    with _workspace() as folder:
        handle = load(model, folder, example_input)
        fmt = format or default_format(profile)
        target = resolve_output(Path(output) if output else Path.cwd(), f"{handle.name}_{mode}.{fmt}")
        return quantize_model(handle, dataset(calib, handle, folder, "calibration"), profile, target, fmt=fmt,
                              mode=mode, eval_data=dataset(eval, handle, folder, "evaluation"),
                              max_accuracy_drop=max_accuracy_drop, calibrate_method=calibration,
                              io_dtype=io_dtype, check=check or Check())


def prune(model: Any, calib: Any, *, ratio: float | None = None, max_size_mb: float | None = None,
          output: str | Path | None = None, format: str = "onnx", device: Any = "host",
          eval: Any = None, example_input: Any = None, profiles: Sequence[str | Path] = (),
          precision: str = "fp32", distill_epochs: int = 30, **settings: Any) -> Any:
    """``edgepack prune``: a PruneResult (pruned to ``ratio`` or to ``max_size_mb``, then distilled)."""
    from edgepack.artifact import resolve_output
    from edgepack.compress.pruning import prune_model

    profile = device_profile(device, profiles)
    with _workspace() as folder:
        handle = load(model, folder, example_input)
        target = resolve_output(Path(output) if output else Path.cwd(), f"{handle.name}_pruned.{format}")
        return prune_model(handle, dataset(calib, handle, folder, "calibration"), profile, target,
                           max_size_mb=max_size_mb, ratio=ratio, fmt=format, precision=precision,
                           distill_epochs=distill_epochs, eval_data=dataset(eval, handle, folder, "evaluation"),
                           **settings)


def profile(model: str | Path, device: Any = "host", hosts: Sequence[str] = (), *, runs: int | None = None,
            warmup: int | None = None, threads: int | None = None, timeout_s: float = 300.0, ssh: Any = None,
            profiles: Sequence[str | Path] = (), say: Say = _quiet, **settings: Any) -> Any:
    """``edgepack profile``: a ProfileReport (a Measurement per board: a failed one carries its error)."""
    from edgepack.profiling import profile_model
    from edgepack.runners.factory import SshOptions

    options = ssh or SshOptions(tuple(hosts))
    return profile_model(Path(model), device_profile(device, profiles), options, runs=runs, warmup=warmup,
                         threads=threads, timeout_s=timeout_s, say=say, **settings)


CONSTRAINTS = ("max_size_mb", "max_ram_mb", "max_latency_ms", "max_accuracy_drop")


def build(model: Any, device: Any = "host", calib: Any = None, eval: Any = None,
          hosts: Sequence[str] = (), *, output: str | Path = "dist", example_input: Any = None,
          ssh: Any = None, profiles: Sequence[str | Path] = (), image_preprocessing: Any = None,
          say: Say = _quiet, max_sram_kb: float | None = None, name: str | None = None, **settings: Any) -> Any:
    """``edgepack build``: search, measure on the board(s), write the package; a BuildResult whose
    ``package`` is the package's directory (``name``: an in-memory model's; ``image_preprocessing``: how
    a folder of images becomes samples, edgepack.data.ImagePreprocessing). ``settings``: the
    constraints (max_size_mb, max_ram_mb, max_latency_ms, max_accuracy_drop) and any BuildOptions
    field (formats, precisions, prune_ratios, threads, runs, warmup, jobs, cache_dir, distill_epochs, ...).
    Raises NoFeasibleCandidate (with the result) when no candidate meets the constraints."""
    from edgepack.bundle import write_build_package
    from edgepack.package import check_package_target, package_name
    from edgepack.pipeline import build as run_build
    from edgepack.records import default_cache_dir
    from edgepack.render import no_feasible_message
    from edgepack.runners.factory import SshOptions
    from edgepack.search.result import BuildOptions
    from edgepack.search.space import Constraints

    constraints = Constraints(**{k: settings.pop(k) for k in CONSTRAINTS if k in settings})
    if constraints.max_accuracy_drop is None:  # the CLI's default
        constraints = replace(constraints, max_accuracy_drop=1.0)
    if max_sram_kb is not None:
        constraints = replace(constraints, max_ram_mb=max_sram_kb / 1024)
    known = {f.name for f in fields(BuildOptions)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UsageError(f"edgepack.build() takes no {', '.join(unknown)}",
                         f"constraints: {', '.join(CONSTRAINTS)}; options: {', '.join(sorted(known))}")
    if image_preprocessing is not None:  # recorded in the package, for run.py
        settings.setdefault("preprocessing", image_preprocessing.to_dict())
    settings.setdefault("cache_dir", default_cache_dir())
    settings.setdefault("jobs", os.cpu_count() or 1)
    options = BuildOptions(constraints, output_dir=Path(output), **settings)
    target = device_profile(device, profiles)
    with _workspace() as folder:
        handle = load(model, folder, example_input, name=name)
        check_package_target(Path(output), package_name(handle.name, target.name))
        calib_data = dataset(calib, handle, folder, "calibration", image_preprocessing)
        eval_data = dataset(eval, handle, folder, "evaluation", image_preprocessing)
        result = run_build(handle, target, options, ssh or SshOptions(tuple(hosts)), calib_data, eval_data, say=say)
        if result.chosen is None:
            raise NoFeasibleCandidate(no_feasible_message(result.to_dict()), result)
        result.package = write_build_package(result, options.output_dir)
        say(f"package {result.package}")
        return result
