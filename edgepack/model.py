"""ModelHandle: what a model file (or an ``nn.Module`` factory) is, without keeping it in memory.

Its format, its inputs and outputs (read by ``edgepack.model_files``, one reader per framework, each
framework imported only when a model of theirs is opened), its content hash and size. A file that is
missing, of an unknown kind, truncated or corrupt raises :class:`ModelFileError`; a shape the user must
give raises :class:`InputShapeError`.
"""

from __future__ import annotations

import hashlib
import importlib
import io
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from edgepack.errors import InputShapeError, ModelFileError, UsageError, first_line
from edgepack.formats import FORMATS, ArtifactFormat
from edgepack.model_files import (
    SpecReader,
    exported_program_specs,
    keras_specs,
    load_exported_program,
    load_torchscript,
    onnx_specs,
    savedmodel_specs,
    tflite_specs,
    torch_forward_specs,
    torchscript_specs,
)
from edgepack.tensor_spec import TensorSpec, default_layout


class ModelFormat(str, Enum):
    ONNX = "onnx"
    TFLITE = "tflite"
    KERAS = "keras"
    SAVEDMODEL = "savedmodel"
    TORCHSCRIPT = "torchscript"
    EXPORTED_PROGRAM = "exported_program"
    TORCH_MODULE = "torch_module"

    @property
    def is_torch(self) -> bool:
        return self in (ModelFormat.TORCHSCRIPT, ModelFormat.EXPORTED_PROGRAM, ModelFormat.TORCH_MODULE)

    @property
    def is_tensorflow(self) -> bool:
        return self in (ModelFormat.KERAS, ModelFormat.SAVEDMODEL)

    @property
    def artifact_format(self) -> ArtifactFormat | None:
        """The format a board runs this file in as it is (ONNX, TFLite); None: it must be converted."""
        return ArtifactFormat.of_path(f"model.{self.value}")

    @classmethod
    def of_target(cls, target: str) -> ModelFormat | None:
        """A conversion's target as the user and an artifact's metadata name it (``--to``: onnx, tflite,
        savedmodel, or torch: TorchScript in a directory) -> its format; None for anything else."""
        if target in DIRECTORY_TARGETS:
            return DIRECTORY_TARGETS[target]
        return cls(target) if target in FORMATS else None


#: the conversion targets written as a directory, by the name ``--to`` and the metadata give them
DIRECTORY_TARGETS = {"savedmodel": ModelFormat.SAVEDMODEL, "torch": ModelFormat.TORCHSCRIPT}


@dataclass
class ModelHandle:
    """A model the user gave: where it is, what format, its I/O, its content hash and size."""

    path: Path | None
    format: ModelFormat
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    sha256: str
    size_bytes: int
    source: str  # the path or the ``pkg.mod:factory`` string, as the user gave it
    notes: list[str] = field(default_factory=list)
    #: The module built from a ``--torch-module`` factory, built once: a factory that initialises
    #: weights at random must give the same model to every consumer.
    module: Any = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        if self.path is not None:
            return self.path.stem if self.path.is_file() else self.path.name
        return self.source.rsplit(":", 1)[-1]

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "module"}
        data["path"] = str(self.path) if self.path else None
        data["format"] = self.format.value
        data["inputs"] = [t.to_dict() for t in self.inputs]
        data["outputs"] = [t.to_dict() for t in self.outputs]
        return data

    @property
    def static_input_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of every input whose dimensions are all fixed, by name."""
        return {t.name: tuple(int(d) for d in t.shape)  # type: ignore[arg-type]
                for t in self.inputs if t.is_static}


def parse_input_shapes(text: str | None) -> dict[str, tuple[int, ...]] | tuple[int, ...] | None:
    """Parse ``--input-shape``: ``1,3,224,224`` for a single input or ``a:1,3,8,8;b:1,10`` by name."""
    if not text:
        return None

    def dims(part: str) -> tuple[int, ...]:
        try:
            values = tuple(int(v) for v in part.replace("x", ",").split(",") if v.strip())
        except ValueError:
            raise InputShapeError(
                f"--input-shape '{text}' is not a list of integers", "write it like 1,3,224,224"
            ) from None
        if not values or any(v <= 0 for v in values):
            raise InputShapeError(f"--input-shape '{text}' has no or non-positive dimensions",
                                  "write it like 1,3,224,224")
        return values

    if ":" not in text:
        return dims(text)
    named: dict[str, tuple[int, ...]] = {}
    for part in text.split(";"):
        name, _, shape = part.rpartition(":")
        named[name.strip()] = dims(shape)
    return named


def file_sha256(path: Path) -> tuple[str, int]:
    """sha256 and size of a file, or of a directory's files in sorted order (SavedModel).

    A directory's ``edgepack.json`` (the metadata edgepack writes into directory artifacts) is left out.
    """
    digest = hashlib.sha256()
    size = 0
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name != "edgepack.json") \
        if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
    return digest.hexdigest(), size


def detect_format(path: Path) -> ModelFormat:
    if path.is_dir():
        if (path / "saved_model.pb").exists() or (path / "saved_model.pbtxt").exists():
            return ModelFormat.SAVEDMODEL
        raise ModelFileError(path, "is a directory without saved_model.pb",
                             "give a model file or a TensorFlow SavedModel directory")
    suffix = path.suffix.lower()
    by_suffix = {
        ".onnx": ModelFormat.ONNX,
        ".tflite": ModelFormat.TFLITE,
        ".keras": ModelFormat.KERAS,
        ".h5": ModelFormat.KERAS,
        ".hdf5": ModelFormat.KERAS,
        ".pt2": ModelFormat.EXPORTED_PROGRAM,
        ".pt": ModelFormat.TORCHSCRIPT,
        ".pth": ModelFormat.TORCHSCRIPT,
    }
    if suffix in by_suffix:
        return by_suffix[suffix]
    raise ModelFileError(
        path, f"unknown model format '{suffix or '(no suffix)'}'",
        "edgepack reads .onnx, .tflite, .keras/.h5, SavedModel directories, .pt (TorchScript) and "
        ".pt2 (ExportedProgram); for an nn.Module use --torch-module pkg.mod:factory",
    )


def load_model(
    path: str | Path | None = None,
    *,
    torch_module: str | None = None,
    input_shape: str | None = None,
    input_value: str | None = None,
) -> ModelHandle:
    """Open a model and read its specs. ``input_shape`` fixes dynamic dims (see parse_input_shapes);
    ``input_value`` gives inputs that are not samples their values (see edgepack.input_values)."""
    handle = _open(path, torch_module, parse_input_shapes(input_shape))
    if input_value:
        from edgepack.input_values import parse_input_values, with_values

        handle.inputs = with_values(handle.inputs, parse_input_values(input_value, handle.inputs))
    return handle


def _open(path: str | Path | None, torch_module: str | None,
          shapes: dict[str, tuple[int, ...]] | tuple[int, ...] | None) -> ModelHandle:
    if torch_module:
        if path:
            raise UsageError("give either a model file or --torch-module, not both")
        return _load_torch_module(torch_module, shapes)
    if path is None:
        raise UsageError("no model given", "pass a model file or --torch-module pkg.mod:factory")
    path = Path(path)
    if not path.exists():
        raise ModelFileError(path, "no such file or directory", "check the path")
    fmt = detect_format(path)
    inputs, outputs = _READERS[fmt](path)
    inputs = apply_input_shapes(inputs, shapes, fmt)
    sha, size = file_sha256(path)
    return ModelHandle(path, fmt, inputs, outputs, sha, size, str(path))


def apply_input_shapes(
    inputs: list[TensorSpec], shapes: dict[str, tuple[int, ...]] | tuple[int, ...] | None,
    fmt: ModelFormat,
) -> list[TensorSpec]:
    if shapes is None:
        return inputs
    if isinstance(shapes, tuple):
        if len(inputs) != 1:
            names = ", ".join(t.name for t in inputs)
            raise InputShapeError(f"the model has {len(inputs)} inputs ({names})",
                                  "give --input-shape as name:1,3,8,8;other:1,10")
        shapes = {inputs[0].name: shapes}
    known = {t.name for t in inputs}
    unknown = sorted(set(shapes) - known)
    if unknown:
        raise InputShapeError(f"--input-shape names no input '{unknown[0]}'",
                              f"the model's inputs are: {', '.join(sorted(known))}")
    result = []
    for spec in inputs:
        new = shapes.get(spec.name)
        if new is None:
            result.append(spec)
            continue
        if spec.shape and len(new) != len(spec.shape):
            raise InputShapeError(
                f"--input-shape for '{spec.name}' has rank {len(new)}, the model's input has rank "
                f"{len(spec.shape)} {list(spec.shape)}", "give one size per dimension")
        for given, declared in zip(new, spec.shape, strict=False):
            if isinstance(declared, int) and declared > 0 and declared != given:
                raise InputShapeError(
                    f"--input-shape {list(new)} for '{spec.name}' contradicts the model's fixed "
                    f"shape {list(spec.shape)}", "only dynamic dimensions can be set")
        _check_fits_in_memory(spec.name, new, spec.dtype)
        layout = spec.layout if spec.layout != "?" else default_layout(len(new), not fmt.is_torch)
        result.append(TensorSpec(spec.name, new, spec.dtype, layout, spec.value))
    return result


def _check_fits_in_memory(name: str, shape: tuple[int, ...], dtype: str) -> None:
    """A sample of this shape must fit in this machine's memory: edgepack makes and feeds such samples."""
    import math
    import os

    import numpy as np

    try:
        size = math.prod(shape) * np.dtype(dtype).itemsize
    except TypeError:  # a dtype numpy does not name (bfloat16)
        size = math.prod(shape) * 2
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return
    if size > memory:
        raise InputShapeError(f"--input-shape {','.join(map(str, shape))} for '{name}' is {size / 1e9:,.1f} GB "
                              f"per sample, more than this machine's memory ({memory / 1e9:,.1f} GB)",
                              "check the dimensions (e.g. 1,3,224,224)")


def resolve_factory(spec: str, flag: str = "--torch-module") -> Callable[[], Any]:
    """Import ``pkg.mod:function`` (given with ``flag``, which errors name) and return the callable."""
    what = "an nn.Module" if flag == "--torch-module" else "the samples"
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"{flag} '{spec}' is not of the form pkg.module:function",
                         f"name a module and a function that returns {what}")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or whatever the user's module raises while importing
        raise UsageError(f"{flag}: cannot import '{module_name}' ({first_line(exc, with_type=True)})",
                         "check the module is on PYTHONPATH") from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise UsageError(f"{flag}: '{module_name}' has no callable '{attr}'",
                         f"name a function that returns {what}")
    return factory


def torch_module_from_spec(spec: str) -> Any:
    import torch

    module = resolve_factory(spec)()
    if not isinstance(module, torch.nn.Module):
        raise UsageError(f"--torch-module: '{spec}' returned {type(module).__name__}, "
                         "not an nn.Module", "return the model from the factory")
    return module.eval()


def torch_module_of(handle: ModelHandle) -> Any:
    """An eval-mode callable module for a PyTorch handle (module factory, TorchScript, ExportedProgram)."""
    if handle.format is ModelFormat.TORCH_MODULE:
        if handle.module is None:
            handle.module = torch_module_from_spec(handle.source)
        return handle.module
    assert handle.path is not None
    if handle.format is ModelFormat.TORCHSCRIPT:
        return load_torchscript(handle.path).eval()
    return load_exported_program(handle.path).module()


def _load_torch_module(
    spec: str, shapes: dict[str, tuple[int, ...]] | tuple[int, ...] | None
) -> ModelHandle:
    import torch

    module = torch_module_from_spec(spec)
    if shapes is None:
        raise InputShapeError("an nn.Module has no declared input shape",
                              "pass --input-shape, e.g. --input-shape 1,3,224,224")
    inputs = apply_input_shapes(torch_forward_specs(module), shapes, ModelFormat.TORCH_MODULE)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    data = buffer.getvalue()
    return ModelHandle(None, ModelFormat.TORCH_MODULE, inputs,
                       [TensorSpec("output", (), "float32", "?")],
                       hashlib.sha256(data).hexdigest(), len(data), spec, module=module)


_READERS: dict[ModelFormat, SpecReader] = {
    ModelFormat.ONNX: onnx_specs,
    ModelFormat.TFLITE: tflite_specs,
    ModelFormat.KERAS: keras_specs,
    ModelFormat.SAVEDMODEL: savedmodel_specs,
    ModelFormat.TORCHSCRIPT: torchscript_specs,
    ModelFormat.EXPORTED_PROGRAM: exported_program_specs,
}
