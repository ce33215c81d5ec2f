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
:class:`edgepack.errors.EdgepackError` subclasses naming the argument at fault (a number out of its
range, edgepack.arguments; a path that is not one; batches that do not stack; labels that are no class
index of the output; a module torch.export cannot trace with ``example_input``; a full disk,
edgepack.disk), never ``SystemExit`` or a library's exception; failures on a board are data in the
result. A path is a ``str`` or a ``Path``; ``hosts`` is one host string or a list of them. The CLI's
commands call these functions.
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

from edgepack.arguments import checked, checked_list
from edgepack.disk import naming_full_disk
from edgepack.errors import EdgepackError, UsageError, first_line

Say = Callable[[str], None]


class NoFeasibleCandidate(EdgepackError):
    """No candidate met the constraints: nothing was packaged. ``result`` holds every candidate."""

    def __init__(self, message: str, result: Any) -> None:
        hint = "fix what failed (the board, the model or the data), or leave those formats out " \
            "(--formats)" if message.startswith("every candidate failed") else "loosen a constraint or widen the search"
        super().__init__(message, hint)
        self.result = result


def _quiet(_: str) -> None:
    return None


@contextlib.contextmanager
def _workspace() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="edgepack-api-") as folder:
        yield Path(folder)


def _path(value: Any, name: str) -> Path:
    if isinstance(value, str | os.PathLike) and str(value).strip():
        return Path(value)
    raise UsageError(f"{name} must be a path (a str or a pathlib.Path), not {type(value).__name__} {value!r}",
                     f"e.g. {name}='dist'")


def folder_for_writing(value: Any, name: str) -> Path:
    """``value`` as the folder ``name`` (``-o``, ``--cache``) writes into, refused before any work when it, or
    a folder it would be made in, is a file."""
    path = _path(value, name)
    for place in (path, *path.absolute().parents):
        if place.exists():
            if not place.is_dir():
                what = "is" if place == path else f"would be made inside {place}, which is"
                raise UsageError(f"{name} {path} {what} a file, not a folder",
                                 f"{name} names the folder edgepack writes into: give a folder (e.g. dist)")
            break
    return path


def _hosts(hosts: Any) -> tuple[str, ...]:
    """One host (a str) or a sequence of them, as a tuple."""
    items = (hosts,) if isinstance(hosts, str) else hosts
    if isinstance(items, Sequence) and all(isinstance(h, str) and h.strip() for h in items):
        return tuple(items)
    raise UsageError(f"hosts must be a host ('user@board[:port]') or a list of them, not {hosts!r}",
                     "e.g. hosts='pi@raspberrypi.local' or hosts=['pi@board1', 'pi@board2:2222']")


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
        if not args or not all(isinstance(a, torch.Tensor) for a in args):
            raise UsageError("example_input must be a torch.Tensor or a tuple of them, not "
                             f"{type(example_input).__name__}", "e.g. example_input=torch.zeros(1, 3, 224, 224)")
        path = folder / f"{name or type(model).__name__.lower()}.pt2"
        torch.export.save(_exported(torch, model, args), str(path))
        return load_model(str(path), input_value=input_value)
    raise UsageError(f"edgepack cannot read a model given as {kind}",
                     "pass a path, an onnx.ModelProto or a torch.nn.Module with example_input")


def _exported(torch: Any, model: Any, args: tuple[Any, ...]) -> Any:
    """torch.export of the user's module; what it cannot trace (a wrong example shape, control flow on
    the data) is the user's to fix: one line naming example_input."""
    import logging

    logger = logging.getLogger("torch._dynamo")  # logs pages before it raises
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        return torch.export.export(model.eval(), args)
    except Exception as exc:  # the user's module: torch raises many types; all mean "cannot trace it"
        shapes = ", ".join(str(list(a.shape)) for a in args)
        raise UsageError(f"example_input {shapes}: torch.export cannot trace {type(model).__name__} with it "
                         f"({first_line(exc, with_type=True)})",
                         "give an example of the input's real shape; control flow on tensor values (if x.sum() > 0) "
                         "cannot be exported: use torch.where or torch.cond") from None
    finally:
        logger.setLevel(level)


ARGUMENT = {"calibration": "calib", "evaluation": "eval"}


def dataset(data: Any, handle: Any, folder: Path, purpose: str, preprocessing: Any = None) -> Any:
    """A Dataset from a path, an array, a dict of arrays or an iterable of batches (None stays None);
    its labels checked to be class indices of the model's output."""
    from edgepack.data import DataError, Dataset, load_dataset

    name = ARGUMENT.get(purpose, purpose)
    if data is None:
        return None
    if isinstance(data, Dataset):
        return _checked_labels(data, handle, name)
    if isinstance(data, str | os.PathLike):
        return _checked_labels(load_dataset(data, handle.inputs, purpose=purpose, preprocessing=preprocessing),
                               handle, name)
    if isinstance(data, np.ndarray) or (hasattr(data, "numpy") and not isinstance(data, Iterable | dict)):
        arrays = {"x": _array(data, name)}
    elif isinstance(data, dict):
        arrays = {str(k): _array(v, f"{name}[{k!r}]") for k, v in data.items()}
    elif isinstance(data, Iterable):
        arrays = _batches(data, name)
    else:
        raise UsageError(f"{name}: {purpose} data given as {type(data).__name__} cannot be read",
                         "pass a path, a numpy array, a dict of arrays or an iterable of batches")
    path = folder / f"{purpose}.npz"
    np.savez(path, **arrays)
    try:
        loaded = load_dataset(path, handle.inputs, purpose=purpose)
    except DataError as exc:  # named after the argument, not the file it was saved to here
        raise DataError(exc.problem.replace(f"{purpose} data {path}", name), exc.hint) from None
    return _checked_labels(loaded, handle, name)


def _array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise UsageError(f"{name}: cannot be read as one numeric array (values of different shapes or types)",
                         "give arrays, tensors or (x, y) batches of them")
    return array


def _batches(data: Iterable[Any], name: str) -> dict[str, np.ndarray]:
    """Batches of x, of (x,) (a TensorDataset of one tensor) or of (x, y), stacked on the first axis."""
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for index, batch in enumerate(data):
        parts = list(batch) if isinstance(batch, list | tuple) else [batch]
        if not 1 <= len(parts) <= 2:
            raise UsageError(f"{name}: batch {index} has {len(parts)} parts", "yield x, (x,) or (x, y) batches")
        xs.append(_array(parts[0], f"{name} batch {index}"))
        if len(parts) == 2:
            ys.append(_array(parts[1], f"{name} batch {index} labels"))
    if not xs:
        raise UsageError(f"{name}: the data gave no batches", "pass an iterable that yields samples")
    if ys and len(ys) != len(xs):
        raise UsageError(f"{name}: some batches have labels and some do not", "yield (x, y) for every batch or none")
    arrays = {"x": _stacked(xs, name, "samples")}
    if ys:
        arrays["y"] = _stacked(ys, name, "labels")
    return arrays


def _stacked(parts: list[np.ndarray], name: str, what: str) -> np.ndarray:
    shapes = {p.shape[1:] for p in parts if p.ndim}
    if len(shapes) > 1 or any(p.ndim == 0 for p in parts):
        listed = ", ".join(str(list(s)) for s in sorted(shapes, key=str)[:3])
        raise UsageError(f"{name}: the batches' {what} differ in shape ({listed} per sample)",
                         "every batch must hold samples of one shape")
    return np.concatenate(parts)


def _checked_labels(data: Any, handle: Any, name: str) -> Any:
    """Labels are indices into the class scores: a label no output has as many classes for is refused."""
    from edgepack.data import DataError

    if data.labels is None or not len(data.labels):
        return data
    sizes = {o.name: _per_sample_size(o.shape) for o in handle.outputs}
    known = {k: v for k, v in sizes.items() if v is not None}
    top = int(np.max(data.labels))
    if known and top >= max(known.values()):
        output, classes = max(known.items(), key=lambda kv: kv[1])
        raise DataError(f"{name}: label {top} is no class index of the output '{output}' ({classes} classes, "
                        f"0 to {classes - 1})", "labels are class indices into the model's scores, from 0")
    return data


def _per_sample_size(shape: tuple[Any, ...]) -> int | None:
    """Values per sample of an output (the batch axis left out), None when a dimension is not known."""
    if not shape or not all(isinstance(d, int) and d > 0 for d in shape[1:]):
        return None
    return int(np.prod(shape[1:])) if len(shape) > 1 else int(shape[0])


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

    checked("tolerance", tolerance)
    place = _path(output, "output") if output is not None else Path.cwd()
    profile = device_profile(device, profiles)
    with _workspace() as folder, naming_full_disk(place, folder):
        handle = load(model, folder, example_input)
        target = resolve_output(place, default_name(handle, to), directory_artifact=to in ("savedmodel", "torch"))
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

    checked("max_accuracy_drop", max_accuracy_drop)
    place = _path(output, "output") if output is not None else Path.cwd()
    profile = device_profile(device, profiles)
    with _workspace() as folder, naming_full_disk(place, folder):
        handle = load(model, folder, example_input)
        fmt = format or default_format(profile)
        target = resolve_output(place, f"{handle.name}_{mode}.{fmt}")
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
    from edgepack.runners.local import LocalRunner

    for key, value in (("ratio", ratio), ("max_size_mb", max_size_mb), ("distill_epochs", distill_epochs),
                       ("time_budget_s", settings.get("time_budget_s")), ("round_to", settings.get("round_to"))):
        checked(key, value)
    place = _path(output, "output") if output is not None else Path.cwd()
    profile = device_profile(device, profiles)
    with _workspace() as folder, naming_full_disk(place, folder):
        handle = load(model, folder, example_input)
        target = resolve_output(place, f"{handle.name}_pruned.{format}")
        return prune_model(handle, dataset(calib, handle, folder, "calibration"), profile, target,
                           max_size_mb=max_size_mb, ratio=ratio, fmt=format, precision=precision,
                           distill_epochs=distill_epochs, eval_data=dataset(eval, handle, folder, "evaluation"),
                           timer=LocalRunner(), **settings)


def profile(model: str | Path, device: Any = "host", hosts: Sequence[str] = (), *, runs: int | None = None,
            warmup: int | None = None, threads: int | None = None, timeout_s: float = 300.0, ssh: Any = None,
            profiles: Sequence[str | Path] = (), say: Say = _quiet, **settings: Any) -> Any:
    """``edgepack profile``: a ProfileReport (a Measurement per board: a failed one carries its error)."""
    from edgepack.profiling import profile_model
    from edgepack.runners.factory import SshOptions

    for key, value in (("runs", runs), ("warmup", warmup), ("threads", threads), ("timeout_s", timeout_s)):
        checked(key, value)
    options = ssh or SshOptions(_hosts(hosts))
    with naming_full_disk():
        return profile_model(_path(model, "model"), device_profile(device, profiles), options, runs=runs,
                             warmup=warmup, threads=threads, timeout_s=timeout_s, say=say, **settings)


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

    constraints = Constraints(**{k: checked(k, settings.pop(k)) for k in CONSTRAINTS if k in settings})
    if constraints.max_accuracy_drop is None:  # the CLI's default
        constraints = replace(constraints, max_accuracy_drop=1.0)
    if checked("max_sram_kb", max_sram_kb) is not None:
        constraints = replace(constraints, max_ram_mb=max_sram_kb / 1024)
    known = {f.name for f in fields(BuildOptions)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise UsageError(f"edgepack.build() takes no {', '.join(unknown)}",
                         f"constraints: {', '.join(CONSTRAINTS)}; options: {', '.join(sorted(known))}")
    if image_preprocessing is not None:  # recorded in the package, for run.py
        settings.setdefault("preprocessing", image_preprocessing.to_dict())
    for key in ("runs", "warmup", "jobs", "max_measurements", "distill_epochs", "timeout_s"):
        checked(key, settings.get(key))
    for key in ("threads", "prune_ratios"):
        if settings.get(key) is not None:
            settings[key] = checked_list(key, settings[key])
    if settings.get("threads") is not None:
        settings["threads"] = list(settings["threads"])
    settings["cache_dir"] = folder_for_writing(settings.get("cache_dir") or default_cache_dir(), "cache_dir")
    settings.setdefault("jobs", os.cpu_count() or 1)
    options = BuildOptions(constraints, output_dir=folder_for_writing(output, "output"), **settings)
    target = device_profile(device, profiles)
    ssh = ssh or SshOptions(_hosts(hosts))
    with _workspace() as folder, naming_full_disk(options.output_dir, settings["cache_dir"], folder):
        handle = load(model, folder, example_input, name=name)
        check_package_target(options.output_dir, package_name(handle.name, target.name))
        calib_data = dataset(calib, handle, folder, "calibration", image_preprocessing)
        eval_data = dataset(eval, handle, folder, "evaluation", image_preprocessing)
        result = run_build(handle, target, options, ssh, calib_data, eval_data, say=say)
        if result.chosen is None:
            raise NoFeasibleCandidate(no_feasible_message(result.to_dict()), result)
        result.package = write_build_package(result, options.output_dir)
        say(f"package {result.package}")
        return result
