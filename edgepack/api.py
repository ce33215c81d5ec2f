"""The Python API: what the CLI does, called from a training script or a notebook.

    import edgepack
    result = edgepack.build("model.onnx", device="rpi4", calib=x_train[:300], eval={"x": x_test, "y": y_test},
                            hosts=["pi@raspberrypi.local"],
                            options=edgepack.BuildOptions(constraints=edgepack.Constraints(max_accuracy_drop=1.0),
                                                          formats=("tflite",)))
    print(result.package, result.chosen.latency_ms)

A model is a path (.onnx .tflite .keras .h5 .pt .pt2, a SavedModel directory), an ``onnx.ModelProto``,
or a ``torch.nn.Module`` with ``example_input`` (a tensor, or a tuple of them). Data is a path (what
``--calib`` reads), a numpy array (samples on the first axis), a dict of arrays by input name (``y``:
labels), or an iterable of batches (a DataLoader: tensors, arrays, or ``(x, y)`` pairs). What a build
is asked for is one :class:`edgepack.BuildOptions` (its limits an :class:`edgepack.Constraints`), checked
when it is made. Each function returns the typed result the CLI prints (``.to_dict()`` is its ``--json``).
Errors are :class:`edgepack.errors.EdgepackError` subclasses naming the argument at fault (a number out
of its range, edgepack.arguments; a path that is not one; batches that do not stack; labels that are no
class index of the output; a module torch.export cannot trace with ``example_input``; a full disk,
edgepack.disk), never ``SystemExit`` or a library's exception; failures on a board are data in the
result. A path is a ``str`` or an ``os.PathLike`` (a ``Path``); ``hosts`` is one host string or a list
of them. The CLI's commands call these functions. Heavy libraries (onnx, torch, TensorFlow) are imported
only when a call needs them: the types below are for checkers.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np

from edgepack.arguments import checked, folder_for_writing, hosts_of, path_of
from edgepack.disk import naming_full_disk
from edgepack.errors import EdgepackError, UsageError, first_line

if TYPE_CHECKING:  # imported for the checker only: a call imports what it needs
    from typing import TypeAlias

    import numpy.typing as npt
    import onnx
    import torch

    from edgepack.compress.pruning import PruneResult
    from edgepack.compress.quantize import Check, QuantizeResult
    from edgepack.convert.convert import ConversionResult
    from edgepack.data import Dataset, ImagePreprocessing
    from edgepack.inspection import Inspection
    from edgepack.model import ModelHandle
    from edgepack.profiles import DeviceProfile, ProfileRegistry
    from edgepack.profiling import ProfileReport
    from edgepack.runners.factory import SshOptions
    from edgepack.search.options import BuildOptions
    from edgepack.search.result import BuildResult

    #: A path: a str or an os.PathLike (a pathlib.Path).
    StrPath: TypeAlias = str | os.PathLike[str]
    #: A model file or SavedModel directory, an ONNX graph in memory, a torch module (with
    #: ``example_input``), or a model already opened (edgepack.model.load_model).
    Model: TypeAlias = StrPath | onnx.ModelProto | torch.nn.Module | ModelHandle
    #: What a torch module is traced with: a tensor of the input's shape, or one per input.
    ExampleInput: TypeAlias = torch.Tensor | tuple[torch.Tensor, ...] | list[torch.Tensor]
    Array: TypeAlias = npt.NDArray[Any] | torch.Tensor
    #: A file or folder (what ``--calib`` reads), an array (samples on the first axis), arrays by input
    #: name (``y``: labels), an iterable of batches (``x``, ``(x,)`` or ``(x, y)``), or a Dataset.
    Data: TypeAlias = StrPath | Array | Mapping[str, Array] | Iterable[Any] | Dataset
    #: A device profile, or its name (``rpi4``, ``host``).
    Device: TypeAlias = str | DeviceProfile

Say = Callable[[str], None]

ROUND_TO = 8  # edgepack.compress.channels.ROUND_TO, not imported here: that module is slow to import


class NoFeasibleCandidate(EdgepackError):
    """No candidate met the constraints: nothing was packaged. ``result`` holds every candidate."""

    def __init__(self, message: str, result: BuildResult) -> None:
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


def registry(profiles: Sequence[StrPath] = ()) -> ProfileRegistry:
    """Every device profile: the built-in ones, the user's, then ``profiles`` (extra profile files)."""
    from edgepack.profiles import ProfileRegistry

    return ProfileRegistry.discover([Path(p) for p in profiles])


def device_profile(device: Device, profiles: Sequence[StrPath] = ()) -> DeviceProfile:
    """A DeviceProfile, or its name looked up among the profiles (and the extra profile files)."""
    from edgepack.profiles import DeviceProfile

    return device if isinstance(device, DeviceProfile) else registry(profiles).get(str(device))


def _defined_in(value: object, package: str) -> bool:
    """Whether ``value``'s class, or a class it derives from, comes from ``package`` (onnx, torch): that
    library is imported only then."""
    return any(c.__module__.split(".")[0] == package for c in type(value).__mro__)


def load(model: Model, folder: Path, example_input: ExampleInput | None = None, input_shape: str | None = None,
         input_value: str | None = None, name: str | None = None) -> ModelHandle:
    """A ModelHandle from a path, an ``onnx.ModelProto`` or a ``torch.nn.Module`` (with ``example_input``);
    ``name`` names an in-memory model (default: the graph's name, or the module's class)."""
    from edgepack.model import ModelHandle, load_model

    if isinstance(model, ModelHandle):
        return model
    if isinstance(model, str | os.PathLike):
        return load_model(os.fspath(model), input_shape=input_shape, input_value=input_value)
    if _defined_in(model, "onnx"):
        import onnx

        if isinstance(model, onnx.ModelProto):
            path = folder / f"{name or model.graph.name or 'model'}.onnx"
            onnx.save(model, str(path))
            return load_model(str(path), input_value=input_value)
    if _defined_in(model, "torch"):
        import torch

        if isinstance(model, torch.nn.Module):
            path = folder / f"{name or type(model).__name__.lower()}.pt2"
            torch.export.save(_exported(model, _example(model, example_input)), str(path))
            return load_model(str(path), input_value=input_value)
    raise UsageError(f"edgepack cannot read a model given as {type(model).__module__}.{type(model).__name__}",
                     "pass a path, an onnx.ModelProto or a torch.nn.Module with example_input")


def _example(model: torch.nn.Module, example_input: ExampleInput | None) -> tuple[torch.Tensor, ...]:
    """``example_input`` as the tuple of tensors ``model`` is traced with."""
    import torch

    if example_input is None:
        raise UsageError("a torch.nn.Module needs example_input (a tensor of the input's shape)",
                         "edgepack.build(module, example_input=torch.zeros(1, 3, 224, 224), ...)")
    args = tuple(example_input) if isinstance(example_input, list | tuple) else (example_input,)
    if not args or not all(isinstance(a, torch.Tensor) for a in args):
        raise UsageError("example_input must be a torch.Tensor or a tuple of them, not "
                         f"{type(example_input).__name__}", "e.g. example_input=torch.zeros(1, 3, 224, 224)")
    return args


def _exported(model: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> torch.export.ExportedProgram:
    """torch.export of the user's module; what it cannot trace (a wrong example shape, control flow on
    the data) is the user's to fix: one line naming example_input."""
    import logging

    import torch

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


@overload
def dataset(data: None, handle: ModelHandle, folder: Path, purpose: str,
            preprocessing: ImagePreprocessing | None = None) -> None: ...


@overload
def dataset(data: Data, handle: ModelHandle, folder: Path, purpose: str,
            preprocessing: ImagePreprocessing | None = None) -> Dataset: ...


def dataset(data: Data | None, handle: ModelHandle, folder: Path, purpose: str,
            preprocessing: ImagePreprocessing | None = None) -> Dataset | None:
    """A Dataset from a path, an array, a dict of arrays or an iterable of batches (None stays None);
    its labels checked to be class indices of the model's output."""
    from edgepack.data import DataError, Dataset, load_dataset

    name = ARGUMENT.get(purpose, purpose)
    if data is None:
        return None
    if isinstance(data, Dataset):
        return _checked_labels(data, handle, name)
    if isinstance(data, str | os.PathLike):  # a str may also be pkg.mod:function
        source = data if isinstance(data, str) else Path(data)
        return _checked_labels(load_dataset(source, handle.inputs, purpose=purpose, preprocessing=preprocessing),
                               handle, name)
    if isinstance(data, np.ndarray) or (hasattr(data, "numpy") and not isinstance(data, Iterable)):
        arrays = {"x": _array(data, name)}
    elif isinstance(data, Mapping):
        arrays = {str(k): _array(v, f"{name}[{k!r}]") for k, v in data.items()}
    elif isinstance(data, Iterable):
        arrays = _batches(data, name)
    else:
        raise UsageError(f"{name}: {purpose} data given as {type(data).__name__} cannot be read",
                         "pass a path, a numpy array, a dict of arrays or an iterable of batches")
    path = folder / f"{purpose}.npz"
    saved: dict[str, Any] = dict(arrays)  # numpy's stub would match a key against its allow_pickle: bool
    np.savez(path, **saved)
    try:
        loaded = load_dataset(path, handle.inputs, purpose=purpose)
    except DataError as exc:  # named after the argument, not the file it was saved to here
        raise DataError(exc.problem.replace(f"{purpose} data {path}", name), exc.hint) from None
    return _checked_labels(loaded, handle, name)


def _array(value: object, name: str) -> npt.NDArray[Any]:
    detach = getattr(value, "detach", None)
    if callable(detach):  # a torch tensor
        value = detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == object:
        raise UsageError(f"{name}: cannot be read as one numeric array (values of different shapes or types)",
                         "give arrays, tensors or (x, y) batches of them")
    return array


def _batches(data: Iterable[Any], name: str) -> dict[str, npt.NDArray[Any]]:
    """Batches of x, of (x,) (a TensorDataset of one tensor) or of (x, y), stacked on the first axis."""
    xs: list[npt.NDArray[Any]] = []
    ys: list[npt.NDArray[Any]] = []
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


def _stacked(parts: list[npt.NDArray[Any]], name: str, what: str) -> npt.NDArray[Any]:
    shapes = {p.shape[1:] for p in parts if p.ndim}
    if len(shapes) > 1 or any(p.ndim == 0 for p in parts):
        listed = ", ".join(str(list(s)) for s in sorted(shapes, key=str)[:3])
        raise UsageError(f"{name}: the batches' {what} differ in shape ({listed} per sample)",
                         "every batch must hold samples of one shape")
    return np.concatenate(parts)


def _checked_labels(data: Dataset, handle: ModelHandle, name: str) -> Dataset:
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


def _per_sample_size(shape: tuple[object, ...]) -> int | None:
    """Values per sample of an output (the batch axis left out), None when a dimension is not known."""
    dims = shape[1:] if len(shape) > 1 else shape
    known = [d for d in dims if isinstance(d, int) and d > 0]
    return int(np.prod(known)) if known and len(known) == len(dims) else None


def inspect(model: Model, device: Device | None = None, *, example_input: ExampleInput | None = None,
            profiles: Sequence[StrPath] = (), input_shape: str | None = None) -> Inspection:
    """``edgepack inspect``: an Inspection (summary, compatibility, the device's toolchain, estimate)."""
    from edgepack.inspection import inspect_model

    with _workspace() as folder:
        handle = load(model, folder, example_input, input_shape)
        return inspect_model(handle, device_profile(device, profiles) if device is not None else None)


def convert(model: Model, to: str = "tflite", output: StrPath | None = None, *, device: Device = "host",
            calib: Data | None = None, example_input: ExampleInput | None = None, profiles: Sequence[StrPath] = (),
            tolerance: float | None = None, allow_drift: bool = False,
            kinds: Mapping[str, str] | None = None) -> ConversionResult:
    """``edgepack convert``: a ConversionResult; the verified artifact is written to ``output`` (a folder or
    a file name; default: the working directory). ``kinds``: how to compare an output, by name."""
    from edgepack.artifact import resolve_output
    from edgepack.convert.convert import convert_model, default_name

    checked("tolerance", tolerance)
    place = path_of(output, "output") if output is not None else Path.cwd()
    profile = device_profile(device, profiles)
    with _workspace() as folder, naming_full_disk(place, folder):
        handle = load(model, folder, example_input)
        target = resolve_output(place, default_name(handle, to), directory_artifact=to in ("savedmodel", "torch"))
        data = dataset(calib, handle, folder, "calibration")
        return convert_model(handle, to, target, profile, data, tolerance=tolerance, kinds=dict(kinds or {}),
                             allow_drift=allow_drift)


def quantize(model: Model, calib: Data, mode: str = "int8", output: StrPath | None = None, *,
             format: str | None = None, device: Device = "host", eval: Data | None = None,
             example_input: ExampleInput | None = None, profiles: Sequence[StrPath] = (),
             max_accuracy_drop: float = 1.0, io_dtype: str | None = None, calibration: str = "minmax",
             check: Check | None = None) -> QuantizeResult:
    """``edgepack quantize``: a QuantizeResult, checked with the real runtime on held-out data."""
    from edgepack.artifact import resolve_output
    from edgepack.compress.quantize import Check, default_format, quantize_model

    checked("max_accuracy_drop", max_accuracy_drop)
    place = path_of(output, "output") if output is not None else Path.cwd()
    profile = device_profile(device, profiles)
    with _workspace() as folder, naming_full_disk(place, folder):
        handle = load(model, folder, example_input)
        fmt = format or default_format(profile)
        target = resolve_output(place, f"{handle.name}_{mode}.{fmt}")
        return quantize_model(handle, dataset(calib, handle, folder, "calibration"), profile, target, fmt=fmt,
                              mode=mode, eval_data=dataset(eval, handle, folder, "evaluation"),
                              max_accuracy_drop=max_accuracy_drop, calibrate_method=calibration,
                              io_dtype=io_dtype, check=check or Check())


def prune(model: Model, calib: Data, *, ratio: float | None = None, max_size_mb: float | None = None,
          output: StrPath | None = None, format: str = "onnx", device: Device = "host",
          eval: Data | None = None, example_input: ExampleInput | None = None, profiles: Sequence[StrPath] = (),
          precision: str = "fp32", distill_epochs: int = 30, importance: str = "magnitude",
          time_budget_s: float = 300.0, round_to: int | None = ROUND_TO, say: Say = _quiet) -> PruneResult:
    """``edgepack prune``: a PruneResult (pruned to ``ratio`` or to ``max_size_mb``, then distilled for at
    most ``distill_epochs`` and ``time_budget_s`` seconds); channel counts kept multiples of ``round_to``
    (None: exact); ``importance``: magnitude or taylor."""
    from edgepack.artifact import resolve_output
    from edgepack.compress.pruning import prune_model
    from edgepack.runners.local import LocalRunner

    for key, value in (("ratio", ratio), ("max_size_mb", max_size_mb), ("distill_epochs", distill_epochs),
                       ("time_budget_s", time_budget_s), ("round_to", round_to)):
        checked(key, value)
    place = path_of(output, "output") if output is not None else Path.cwd()
    profile = device_profile(device, profiles)
    with _workspace() as folder, naming_full_disk(place, folder):
        handle = load(model, folder, example_input)
        target = resolve_output(place, f"{handle.name}_pruned.{format}")
        return prune_model(handle, dataset(calib, handle, folder, "calibration"), profile, target,
                           max_size_mb=max_size_mb, ratio=ratio, fmt=format, precision=precision,
                           importance=importance, distill_epochs=distill_epochs,
                           eval_data=dataset(eval, handle, folder, "evaluation"), time_budget_s=time_budget_s,
                           round_to=round_to, timer=LocalRunner(), say=say)


def profile(model: StrPath, device: Device = "host", hosts: str | Sequence[str] = (), *, runs: int | None = None,
            warmup: int | None = None, threads: int | None = None, timeout_s: float = 300.0,
            ssh: SshOptions | None = None, profiles: Sequence[StrPath] = (), say: Say = _quiet,
            input_shape: str | None = None, input_value: str | None = None) -> ProfileReport:
    """``edgepack profile``: a ProfileReport (a Measurement per board: a failed one carries its error).
    ``hosts`` or ``ssh`` (hosts, keys, the remote Python) say how the boards are reached."""
    from edgepack.profiling import profile_model
    from edgepack.runners.factory import SshOptions

    for key, value in (("runs", runs), ("warmup", warmup), ("threads", threads), ("timeout_s", timeout_s)):
        checked(key, value)
    options = ssh or SshOptions(hosts_of(hosts))
    with naming_full_disk():
        return profile_model(path_of(model, "model"), device_profile(device, profiles), options, runs=runs,
                             warmup=warmup, threads=threads, timeout_s=timeout_s, say=say, input_shape=input_shape,
                             input_value=input_value)


def build(model: Model, device: Device = "host", calib: Data | None = None, eval: Data | None = None,
          hosts: str | Sequence[str] = (), *, options: BuildOptions | None = None,
          example_input: ExampleInput | None = None, ssh: SshOptions | None = None, profiles: Sequence[StrPath] = (),
          image_preprocessing: ImagePreprocessing | None = None, say: Say = _quiet,
          name: str | None = None) -> BuildResult:
    """``edgepack build``: search, measure on the board(s), write the package into ``options.output_dir``;
    a BuildResult whose ``package`` is the package's directory. ``options``: what the build is asked for
    (constraints, formats, precisions, prune ratios, threads, runs, the cache folder...; an accuracy drop
    of at most 1 point unless its constraints set one). ``name``: an in-memory model's;
    ``image_preprocessing``: how a folder of images becomes samples (recorded in the package, for run.py).
    Raises NoFeasibleCandidate (with the result) when no candidate meets the constraints."""
    from edgepack.bundle import packaged
    from edgepack.package import check_package_target, package_name
    from edgepack.pipeline import build as run_build
    from edgepack.records import default_cache_dir
    from edgepack.render import no_feasible_message
    from edgepack.runners.factory import SshOptions
    from edgepack.search.options import BuildOptions

    if options is None:
        options = BuildOptions()
    elif not isinstance(options, BuildOptions):
        raise UsageError(f"options must be a BuildOptions, not {type(options).__name__}",
                         "e.g. options=edgepack.BuildOptions(formats=('tflite',))")
    output_dir = folder_for_writing(options.output_dir, "output")  # before any work: both are folders
    cache_dir = folder_for_writing(default_cache_dir() if options.cache_dir is None else options.cache_dir,
                                   "cache_dir")
    constraints = options.constraints
    if constraints.max_accuracy_drop is None:  # the CLI's default
        constraints = replace(constraints, max_accuracy_drop=1.0)
    preprocessing = options.preprocessing
    if preprocessing is None and image_preprocessing is not None:
        preprocessing = image_preprocessing.to_dict()
    options = replace(options, constraints=constraints, output_dir=output_dir, cache_dir=cache_dir,
                      preprocessing=preprocessing)
    target = device_profile(device, profiles)
    ssh = ssh or SshOptions(hosts_of(hosts))
    with _workspace() as folder, naming_full_disk(output_dir, cache_dir, folder):
        handle = load(model, folder, example_input, name=name)
        check_package_target(output_dir, package_name(handle.name, target.name))
        calib_data = dataset(calib, handle, folder, "calibration", image_preprocessing)
        eval_data = dataset(eval, handle, folder, "evaluation", image_preprocessing)
        result = run_build(handle, target, options, ssh, calib_data, eval_data, say=say)
        if result.chosen is None:
            raise NoFeasibleCandidate(no_feasible_message(result.rows), result)
        result = packaged(result, output_dir)
        say(f"package {result.package}")
        return result
