"""ModelHandle: what a model file (or an ``nn.Module`` factory) is, without keeping it in memory.

One loader per framework reads the input/output specs; frameworks are imported only when a model of
theirs is opened. A file that is missing, of an unknown kind, truncated or corrupt raises
:class:`ModelFileError`; a shape the user must give raises :class:`InputShapeError`.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import logging
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import Enum
from pathlib import Path
from typing import Any

from edgepack.errors import InputShapeError, ModelFileError, UsageError, first_line
from edgepack.formats import ArtifactFormat

Dim = int | str | None  # int: fixed; str: a named dynamic dimension; None: unnamed dynamic


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


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, shape (dynamic dims as str/None), numpy dtype name, layout."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str
    layout: str
    #: --input-value: fed whole, the same for every sample (see edgepack.input_values)
    value: Any = field(default=None, compare=False, repr=False)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.shape)

    @property
    def is_sample(self) -> bool:
        """Samples go on the first axis, the batch axis (1 or dynamic). A rank-0 input (a sample rate)
        or one whose first axis is fixed at another size (a recurrent state [2, 1, 128]) is fed whole."""
        return bool(self.shape) and (not isinstance(self.shape[0], int) or self.shape[0] <= 1)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layout": self.layout}


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


def default_layout(rank: int, channels_last: bool) -> str:
    """The framework's convention for a tensor of this rank (images are rank 4)."""
    if rank == 4:
        return "NHWC" if channels_last else "NCHW"
    if rank == 3:
        return "NWC" if channels_last else "NCW"
    if rank == 2:
        return "NC"
    return "?"


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
    loader: Callable[[Path], tuple[list[TensorSpec], list[TensorSpec]]] = _LOADERS[fmt]
    inputs, outputs = loader(path)
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


# --- ONNX -------------------------------------------------------------------------------------------

def _onnx_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelFileError(path, f"is not a readable ONNX model ({type(exc).__name__})",
                             "the file may be truncated or corrupt; export it again") from None
    if not model.graph.node and not model.graph.input:
        raise ModelFileError(path, "is not a readable ONNX model (empty graph)",
                             "the file may be truncated or corrupt; export it again")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = first_line(exc)
        raise ModelFileError(path, f"is not a valid ONNX model ({first})",
                             "the file may be truncated or corrupt; export it again") from None
    return onnx_graph_specs(model)


def onnx_graph_specs(model: Any) -> tuple[list[TensorSpec], list[TensorSpec]]:
    """Input/output specs of an in-memory ``onnx.ModelProto`` (initializers are not inputs)."""
    from onnx import helper

    initializers = {init.name for init in model.graph.initializer}

    def spec(value: Any) -> TensorSpec:
        tensor_type = value.type.tensor_type
        dims: list[Dim] = []
        for dim in tensor_type.shape.dim:
            if dim.HasField("dim_value") and dim.dim_value > 0:
                dims.append(int(dim.dim_value))
            elif dim.HasField("dim_param"):
                dims.append(dim.dim_param)
            else:
                dims.append(None)
        dtype = helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
        return TensorSpec(value.name, tuple(dims), dtype, default_layout(len(dims), False))

    inputs = [spec(v) for v in model.graph.input if v.name not in initializers]
    outputs = [spec(v) for v in model.graph.output]
    return inputs, outputs


# --- TFLite -----------------------------------------------------------------------------------------

def tflite_interpreter(path: Path, num_threads: int | None = None, *, delegates: bool = True) -> Any:
    """A TFLite interpreter from ai_edge_litert (preferred), tflite_runtime or tensorflow.lite.

    ``delegates=False`` keeps the op table as written in the file (no XNNPACK rewrite), for analysis.
    """
    try:
        from ai_edge_litert import interpreter as module
    except ImportError:
        try:
            from tflite_runtime import interpreter as module  # type: ignore[no-redef]
        except ImportError:
            try:
                from tensorflow.lite.python import interpreter as module  # type: ignore[no-redef]
            except ImportError:
                from edgepack.errors import MissingDependencyError

                raise MissingDependencyError("ai-edge-litert", "reading a TFLite model",
                                             "tflite") from None
    kwargs: dict[str, Any] = {"model_path": str(path), "num_threads": num_threads}
    if not delegates:
        kwargs["experimental_op_resolver_type"] = module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    from edgepack.quiet import captured_output

    try:
        with captured_output():  # the runtime announces its XNNPACK delegate on stderr
            return module.Interpreter(**kwargs)
    except (ValueError, RuntimeError) as exc:
        first = first_line(exc)
        raise ModelFileError(path, f"is not a readable TFLite model ({first})",
                             "the file may be truncated or corrupt; convert it again") from None


def _tflite_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    interpreter = tflite_interpreter(path, delegates=False)

    def spec(detail: dict[str, Any]) -> TensorSpec:
        signature = detail.get("shape_signature")
        shape = signature if signature is not None and len(signature) else detail["shape"]
        dims: tuple[Dim, ...] = tuple(int(d) if d > 0 else None for d in shape)
        import numpy as np

        return TensorSpec(detail["name"], dims, np.dtype(detail["dtype"]).name,
                          default_layout(len(dims), True))

    return ([spec(d) for d in interpreter.get_input_details()],
            [spec(d) for d in interpreter.get_output_details()])


# --- Keras / SavedModel -----------------------------------------------------------------------------

def _keras_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    keras = _import_tensorflow_keras()
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ModelFileError(path, "is not a readable Keras model (not a .keras zip archive)",
                             "the file may be truncated or corrupt; save it again")
    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # Keras raises many types for a bad file; all mean "cannot read it"
        first = first_line(exc)
        raise ModelFileError(path, f"is not a readable Keras model ({first})",
                             "the file may be truncated or corrupt; save it again") from None

    def spec(tensor: Any) -> TensorSpec:
        dims: tuple[Dim, ...] = tuple(int(d) if d is not None else None for d in tensor.shape)
        dtype = str(getattr(tensor.dtype, "name", tensor.dtype))
        return TensorSpec(_tensor_name(tensor), dims, dtype, default_layout(len(dims), True))

    return [spec(t) for t in model.inputs], [spec(t) for t in model.outputs]


def _tensor_name(tensor: Any) -> str:
    name = str(getattr(tensor, "name", "input"))
    return name.split(":")[0]


def _savedmodel_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    _import_tensorflow_keras()
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # TensorFlow raises many types for a bad directory
        first = first_line(exc)
        raise ModelFileError(path, f"is not a readable SavedModel ({first})",
                             "the directory may be incomplete; save it again") from None
    signature = loaded.signatures.get("serving_default")
    if signature is None:
        raise ModelFileError(path, "has no 'serving_default' signature",
                             "save it with signatures={'serving_default': ...}")
    _, kwargs = signature.structured_input_signature

    def spec(name: str, tensor_spec: Any) -> TensorSpec:
        dims: tuple[Dim, ...] = tuple(
            int(d) if d is not None else None for d in tensor_spec.shape.as_list())
        return TensorSpec(name, dims, tensor_spec.dtype.name, default_layout(len(dims), True))

    inputs = [spec(n, s) for n, s in sorted(kwargs.items())]
    outputs = [spec(n, s) for n, s in sorted(signature.structured_outputs.items())]
    return inputs, outputs


def _import_tensorflow_keras() -> Any:
    from edgepack.quiet import import_tensorflow

    try:
        import_tensorflow()
        import keras
    except ImportError:
        from edgepack.errors import MissingDependencyError

        raise MissingDependencyError("tensorflow-cpu", "reading a Keras/SavedModel model",
                                     "tflite") from None
    return keras


# --- PyTorch ----------------------------------------------------------------------------------------

def _torchscript_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    module = load_torchscript(path)
    return _torch_forward_specs(module), [TensorSpec("output", (), "float32", "?")]


def load_torchscript(path: Path) -> Any:
    import torch

    if not zipfile.is_zipfile(path):
        raise ModelFileError(path, "is not a TorchScript archive (not a zip file)",
                             "save it with torch.jit.save, or pass --torch-module pkg.mod:factory")
    try:
        return torch.jit.load(str(path), map_location="cpu")
    except RuntimeError as exc:
        first = first_line(exc)
        raise ModelFileError(path, f"is not a readable TorchScript archive ({first})",
                             "a pickled nn.Module or state_dict is not TorchScript: save with "
                             "torch.jit.save, or pass --torch-module pkg.mod:factory") from None


def _torch_forward_specs(module: Any) -> list[TensorSpec]:
    """Input names from forward's signature; shapes are unknown until --input-shape gives them."""
    try:
        schema = module.forward.schema
        names = [a.name for a in schema.arguments if a.name != "self"]
    except AttributeError:
        import inspect

        names = [n for n in inspect.signature(module.forward).parameters if n != "self"]
    return [TensorSpec(n, (), "float32", "?") for n in names or ["input"]]


def _exported_program_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    program = load_exported_program(path)
    from torch.export.graph_signature import InputKind

    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}

    def spec(name: str, node: Any) -> TensorSpec:
        value = node.meta.get("val")
        shape: tuple[Dim, ...] = tuple(
            int(d) if str(d).isdigit() else str(d) for d in getattr(value, "shape", ()))
        dtype = str(getattr(value, "dtype", "torch.float32")).replace("torch.", "")
        return TensorSpec(name, shape, dtype, default_layout(len(shape), False))

    inputs = [
        spec(s.arg.name, placeholders[s.arg.name])
        for s in program.graph_signature.input_specs
        if s.kind == InputKind.USER_INPUT and s.arg.name in placeholders
    ]
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    outputs = []
    for i, node in enumerate(output_node.args[0]):
        outputs.append(spec(f"output_{i}", node) if hasattr(node, "meta") else
                       TensorSpec(f"output_{i}", (), "float32", "?"))
    return inputs, outputs


def load_exported_program(path: Path) -> Any:
    import torch

    logger = logging.getLogger("torch.export")  # logs a page of traceback before it raises on a bad file
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.load(str(path))
    except (RuntimeError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        first = first_line(exc)
        raise ModelFileError(path, f"is not a readable ExportedProgram ({first})",
                             "save it with torch.export.save") from None
    finally:
        logger.setLevel(level)


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


def _load_torch_module(
    spec: str, shapes: dict[str, tuple[int, ...]] | tuple[int, ...] | None
) -> ModelHandle:
    import torch

    module = torch_module_from_spec(spec)
    if shapes is None:
        raise InputShapeError("an nn.Module has no declared input shape",
                              "pass --input-shape, e.g. --input-shape 1,3,224,224")
    inputs = apply_input_shapes(_torch_forward_specs(module), shapes, ModelFormat.TORCH_MODULE)
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    data = buffer.getvalue()
    return ModelHandle(None, ModelFormat.TORCH_MODULE, inputs,
                       [TensorSpec("output", (), "float32", "?")],
                       hashlib.sha256(data).hexdigest(), len(data), spec, module=module)


_LOADERS: dict[ModelFormat, Callable[[Path], tuple[list[TensorSpec], list[TensorSpec]]]] = {
    ModelFormat.ONNX: _onnx_specs,
    ModelFormat.TFLITE: _tflite_specs,
    ModelFormat.KERAS: _keras_specs,
    ModelFormat.SAVEDMODEL: _savedmodel_specs,
    ModelFormat.TORCHSCRIPT: _torchscript_specs,
    ModelFormat.EXPORTED_PROGRAM: _exported_program_specs,
}
