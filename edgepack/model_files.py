"""Reading model files, one framework at a time: what each file declares as its inputs and outputs,
and the framework's own object for it (an ONNX graph, a TFLite interpreter, a TorchScript archive, an
ExportedProgram).

A framework is imported only when a file of its kind is read. A file that is truncated or corrupt
raises :class:`ModelFileError`. ``edgepack.model`` picks the reader by the file's format.
"""

from __future__ import annotations

import logging
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgepack.errors import ModelFileError, first_line
from edgepack.tensor_spec import Dim, TensorSpec, default_layout

#: A reader: a model file -> its input specs and output specs.
SpecReader = Callable[[Path], tuple[list[TensorSpec], list[TensorSpec]]]


# --- ONNX -------------------------------------------------------------------------------------------

def onnx_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
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


def tflite_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
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

def keras_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
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


def savedmodel_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
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

def torchscript_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
    module = load_torchscript(path)
    return torch_forward_specs(module), [TensorSpec("output", (), "float32", "?")]


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


def torch_forward_specs(module: Any) -> list[TensorSpec]:
    """Input names from forward's signature; shapes are unknown until --input-shape gives them."""
    try:
        schema = module.forward.schema
        names = [a.name for a in schema.arguments if a.name != "self"]
    except AttributeError:
        import inspect

        names = [n for n in inspect.signature(module.forward).parameters if n != "self"]
    return [TensorSpec(n, (), "float32", "?") for n in names or ["input"]]


def exported_program_specs(path: Path) -> tuple[list[TensorSpec], list[TensorSpec]]:
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
