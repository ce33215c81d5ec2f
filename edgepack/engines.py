"""In-process inference for every format, used to compare a converted model with its source.

An engine takes one sample: a list of arrays in the model's own input order and layout, and returns
its outputs as numpy arrays in the model's output order. (On-device runs go through runners/ and
the harness instead; this is the host-side reference.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from edgepack.conversion_error import ConversionError
from edgepack.errors import first_line
from edgepack.formats import ArtifactFormat
from edgepack.model import ModelFormat, ModelHandle, torch_module_of
from edgepack.quiet import captured_output, import_tensorflow


class Engine(Protocol):
    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]: ...

    def input_specs(self) -> list[tuple[tuple[int, ...], str, str]] | None:
        """(shape, dtype, name) of each input as the runtime declares it; None when the format declares
        nothing to trust (SavedModel, TorchScript, a module)."""


class OnnxEngine:
    """ONNX Runtime on this machine. ``target_architecture``: the board the model is checked for. On an
    x86 host ONNX Runtime's int8 GEMMs (AVX2/AVX-512 without VNNI) can saturate, which an Arm board's
    kernels never do (the digits CNN's S8S8 model: 7.2 off the original's logits on x86, 0.48 on
    aarch64); for a non-x86 target the check asks for the exact, int16-widened path
    (``session.x64quantprecision``), so the host computes what the board will."""

    def __init__(self, path: Path | bytes, target_architecture: str | None = None) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        if target_architecture not in (None, "x86_64"):
            options.add_session_config_entry("session.x64quantprecision", "1")
        source = str(path) if isinstance(path, Path) else path
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(v) for v in self.session.run(None, dict(zip(self.input_names, inputs, strict=True)))]

    def input_specs(self) -> list[tuple[tuple[int, ...], str, str]]:
        return [(tuple(int(d) if isinstance(d, int) else 1 for d in i.shape), "float32", i.name)
                for i in self.session.get_inputs()]


class TfliteEngine:
    def __init__(self, path: Path) -> None:
        from edgepack.model_files import tflite_interpreter

        self.interpreter = tflite_interpreter(path, num_threads=1)
        with captured_output():  # the runtime announces its XNNPACK delegate on stderr
            self.interpreter.allocate_tensors()
        self.inputs = self.interpreter.get_input_details()
        self.outputs = self.interpreter.get_output_details()
        self.input_names = [d["name"] for d in self.inputs]
        self.output_names = [d["name"] for d in self.outputs]
        self.signature_keys = signature_output_keys(self.interpreter, self.outputs)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        for detail, value in zip(self.inputs, inputs, strict=True):
            if tuple(detail["shape"]) != value.shape:
                self.interpreter.resize_tensor_input(detail["index"], list(value.shape))
                self.interpreter.allocate_tensors()
                self.inputs = self.interpreter.get_input_details()
                self.outputs = self.interpreter.get_output_details()
            self.interpreter.set_tensor(detail["index"], quantize_input(value, detail))
        self.interpreter.invoke()
        return [dequantize_output(np.array(self.interpreter.get_tensor(d["index"])), d) for d in self.outputs]

    def input_specs(self) -> list[tuple[tuple[int, ...], str, str]]:
        return [(tuple(int(d) for d in d_["shape"]), np.dtype(d_["dtype"]).name, d_["name"]) for d_ in self.inputs]


def signature_output_keys(interpreter: Any, outputs: list[dict[str, Any]]) -> list[str]:
    """Each output's key in the model's only signature (the SavedModel's output names), in the
    interpreter's output order; empty when there is not exactly one signature covering them all."""
    try:
        signatures = interpreter._get_full_signature_list()
    except (AttributeError, ValueError, RuntimeError):
        return []
    if len(signatures) != 1:
        return []
    by_index = {index: key for key, index in next(iter(signatures.values())).get("outputs", {}).items()}
    keys = [by_index.get(d["index"]) for d in outputs]
    return [k for k in keys if k is not None] if all(keys) else []


def quantize_input(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    """Float data into an int8/uint8 input with the tensor's own scale and zero point."""
    dtype = np.dtype(detail["dtype"])
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if dtype.kind in "iu" and value.dtype.kind == "f" and scale:
        info = np.iinfo(dtype)
        return np.clip(np.round(value / scale + zero_point), info.min, info.max).astype(dtype)
    return value.astype(dtype, copy=False)


def dequantize_output(value: np.ndarray, detail: dict[str, Any]) -> np.ndarray:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    if value.dtype.kind in "iu" and scale:
        return ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)
    return value


class _Undeclared:
    """Engines whose format declares no input shapes to trust."""

    def input_specs(self) -> None:
        return None


class TorchEngine(_Undeclared):
    def __init__(self, module: Any, input_names: list[str]) -> None:
        self.module = module
        self.input_names = input_names
        self.output_names: list[str] = []

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        import torch

        with torch.no_grad():
            result = self.module(*[torch.from_numpy(np.ascontiguousarray(x)) for x in inputs])
        flat = list(result) if isinstance(result, tuple | list) else [result]
        if not self.output_names:
            self.output_names = [f"output_{i}" for i in range(len(flat))]
        return [t.detach().cpu().numpy() for t in flat]


class KerasEngine(_Undeclared):
    def __init__(self, path: Path) -> None:
        import_tensorflow()
        import keras

        self.model = keras.models.load_model(str(path), compile=False)
        self.input_names = [str(getattr(t, "name", f"input_{i}")).split(":")[0]
                            for i, t in enumerate(self.model.inputs)]
        self.output_names = [f"output_{i}" for i in range(len(self.model.outputs))]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        result = self.model(inputs if len(inputs) > 1 else inputs[0], training=False)
        flat = list(result) if isinstance(result, tuple | list) else [result]
        return [np.asarray(t) for t in flat]


class SavedModelEngine(_Undeclared):
    def __init__(self, path: Path) -> None:
        tf: Any = import_tensorflow()
        self.tf = tf
        self.function = tf.saved_model.load(str(path)).signatures["serving_default"]
        _, kwargs = self.function.structured_input_signature
        self.input_names = sorted(kwargs)
        self.output_names = sorted(self.function.structured_outputs)

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        feeds = {n: self.tf.constant(x) for n, x in zip(self.input_names, inputs, strict=True)}
        result = self.function(**feeds)
        return [np.asarray(result[name]) for name in self.output_names]


def engine_for(handle: ModelHandle) -> Engine:
    """An engine for a model the user gave (any format edgepack reads)."""
    if handle.format in (ModelFormat.ONNX, ModelFormat.TFLITE):
        assert handle.path is not None
        onnx = handle.format is ModelFormat.ONNX
        try:
            return OnnxEngine(handle.path) if onnx else TfliteEngine(handle.path)
        except Exception as exc:  # the runtimes' own types (Fail, InvalidGraph, RuntimeError: an op it lacks)
            from edgepack.errors import ModelFileError

            runtime = "ONNX Runtime" if onnx else "the TFLite interpreter"
            raise ModelFileError(handle.path, f"{runtime} cannot run it ({first_line(exc)})",
                                 f"edgepack checks every conversion against the source run by {runtime}") from None
    if handle.format is ModelFormat.KERAS:
        assert handle.path is not None
        return KerasEngine(handle.path)
    if handle.format is ModelFormat.SAVEDMODEL:
        assert handle.path is not None
        return SavedModelEngine(handle.path)
    return TorchEngine(torch_module_of(handle), [s.name for s in handle.inputs])


def engine_for_file(path: Path, fmt: str, target_architecture: str | None = None) -> Engine:
    """An engine for an artifact edgepack wrote (checked as it will run on ``target_architecture``). One its
    runtime cannot load (a converter that emitted an op the runtime lacks) raises ConversionError: that
    route failed, with the runtime's reason. ``fmt`` is the artifact's format as its metadata names it
    (onnx, tflite, savedmodel, torch)."""
    model_format = ModelFormat.of_target(fmt)
    runs_as = model_format.artifact_format if model_format is not None else None
    if runs_as is not None:
        try:
            return OnnxEngine(path, target_architecture) if runs_as is ArtifactFormat.ONNX else TfliteEngine(path)
        except Exception as exc:  # the runtimes' own types (InvalidGraph, Fail, RuntimeError, ValueError)
            raise ConversionError(f"to {fmt}", f"{runs_as.engine} cannot load the result "
                                  f"({first_line(exc, 320)})") from None
    if model_format is ModelFormat.SAVEDMODEL:
        return SavedModelEngine(path)
    if model_format is ModelFormat.TORCHSCRIPT:
        import torch

        module = torch.jit.load(str(path / "model.pt"), map_location="cpu").eval()
        return TorchEngine(module, [])
    raise ValueError(f"no engine for format {fmt}")
