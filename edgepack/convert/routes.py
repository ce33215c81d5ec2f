"""The conversion routes: each turns a source model into a file of one target format.

A route returns the file and whether it moved channels last (onnx2tf does, for rank 3-5 tensors);
validation against the source is the orchestrator's job (convert/convert.py), never the route's.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.conversion_error import ConversionError
from edgepack.convert.errors import last_error_line
from edgepack.errors import first_line
from edgepack.model import ModelFormat, ModelHandle, torch_module_of
from edgepack.quiet import captured_output


@dataclass
class RouteOutput:
    path: Path
    format: str
    channels_last: bool
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Route:
    name: str  # as shown to the user, e.g. "torch.onnx + onnx2tf"
    key: str  # the profile's name for the route that decides its rank (the last step)
    run: Callable[[ModelHandle, Path, np.ndarray | None], RouteOutput]
    fallback: bool = False  # tried only when every other route failed or drifted

    def available(self) -> bool:
        needs = {"litert-torch": "litert_torch", "onnx2tf": "onnx2tf", "tf2onnx": "tf2onnx",
                 "tflite-converter": "tensorflow"}
        module = needs.get(self.key)
        return module is None or importlib.util.find_spec(module) is not None


# --- steps ------------------------------------------------------------------------------------------

def onnx_of(handle: ModelHandle, work: Path) -> tuple[Path, list[str], str]:
    """An ONNX file for any source, with the handle's static input shapes written into it."""
    if handle.format is ModelFormat.ONNX:
        import onnx

        from edgepack.analysis.onnx_graph import fix_input_shapes

        assert handle.path is not None
        model = onnx.load(str(handle.path))
        declared = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.input}
        shapes = handle.static_input_shapes
        if all(list(shapes.get(n, s)) == s for n, s in declared.items()):
            return handle.path, [], ""
        fix_input_shapes(model, shapes)
        fixed = work / "source_fixed.onnx"
        onnx.save(model, str(fixed))
        return fixed, [f"input shapes fixed to {shapes}"], ""
    if handle.format.is_torch:
        from edgepack.convert.torch_source import export_handle_to_onnx

        exported = export_handle_to_onnx(handle, work / "exported.onnx")
        return exported.path, [f"torch.onnx ({exported.exporter} exporter)", *exported.notes], "torch.onnx"
    path, notes = _tf2onnx(handle, work)
    return path, notes, "tf2onnx"


def _tf2onnx(handle: ModelHandle, work: Path) -> tuple[Path, list[str]]:
    from edgepack.convert.onnx_to_tflite import offline_env

    if importlib.util.find_spec("tf2onnx") is None:
        raise ConversionError("tf2onnx", "tf2onnx is not installed", "pip install tf2onnx")
    assert handle.path is not None
    out, notes = work / "tf2onnx.onnx", []
    if handle.format is ModelFormat.TFLITE:
        from edgepack.convert.densify import densify_count, densify_tflite

        tflite = handle.path
        if densify_count(handle.path):  # sparse weights, which tf2onnx reads as dense ones
            tflite = work / "densified.tflite"
            notes.append(f"sparse weights made dense first ({densify_tflite(handle.path, tflite)} DENSIFY ops "
                         "run once by TFLite): tf2onnx cannot read them")
        source = ["--tflite", str(tflite)]
    else:
        saved = handle.path
        if handle.format is ModelFormat.KERAS:
            saved = keras_saved_model(handle.path, work / "keras_saved_model")
        source = ["--saved-model", str(saved)]
    proc = subprocess.run([sys.executable, "-m", "tf2onnx.convert", *source, "--output", str(out),
                           "--opset", "17"], capture_output=True, text=True, env=offline_env(dict(os.environ)),
                          timeout=900, check=False)
    if proc.returncode != 0 or not out.exists():
        raise ConversionError("tf2onnx", last_error_line(proc.stderr + proc.stdout),
                              "tf2onnx 1.17 is the last release; it may not know this TensorFlow's ops")
    return out, notes


def keras_saved_model(path: Path, out: Path) -> Path:
    from edgepack.quiet import import_tensorflow

    import_tensorflow()
    import keras

    model = keras.models.load_model(str(path), compile=False)
    with captured_output():
        model.export(str(out), format="tf_saved_model", verbose=False)
    return out


def _calib_for_onnx2tf(handle: ModelHandle, calib: np.ndarray | None) -> np.ndarray | None:
    return calib if handle.format is not ModelFormat.KERAS else None


# --- routes -----------------------------------------------------------------------------------------

def _via_onnx2tf(target: ModelFormat) -> Callable[[ModelHandle, Path, np.ndarray | None], RouteOutput]:
    def run(handle: ModelHandle, work: Path, calib: np.ndarray | None) -> RouteOutput:
        from edgepack.convert.onnx_to_tflite import convert_onnx_to_tflite, unsupported_ops

        onnx_path, notes, _ = onnx_of(handle, work)
        missing = unsupported_ops(onnx_path)
        if missing:
            raise ConversionError("onnx2tf", f"op {missing[0]} is not supported by onnx2tf"
                                  + (f" (nor {', '.join(missing[1:])})" if len(missing) > 1 else ""))
        outputs = convert_onnx_to_tflite(onnx_path, work / "onnx2tf", calib=_calib_for_onnx2tf(handle, calib))
        if target is ModelFormat.SAVEDMODEL:
            if outputs.saved_model is None:
                raise ConversionError("onnx2tf", "no SavedModel was written")
            return RouteOutput(outputs.saved_model, "savedmodel", True, notes)
        return RouteOutput(outputs.float32, "tflite", True, notes)
    return run


def _litert_export(module: Any, example: tuple[Any, ...], out: Path) -> Path:
    """``module`` converted to TFLite by litert-torch, written to ``out``."""
    with captured_output():  # its import prints warnings about torchao kernels it cannot load
        import litert_torch
    try:
        with captured_output():
            litert_torch.convert(module, example).export(str(out))
    except Exception as exc:  # litert-torch raises many types; the route's failure is reported
        raise ConversionError("litert-torch", first_line(exc, with_type=True)) from None
    return out


def _litert_torch(handle: ModelHandle, work: Path, calib: np.ndarray | None) -> RouteOutput:
    from edgepack.convert.torch_source import example_inputs

    out = _litert_export(torch_module_of(handle), example_inputs(handle), work / "litert_torch.tflite")
    return RouteOutput(out, "tflite", False)


def _tflite_converter(handle: ModelHandle, work: Path, calib: np.ndarray | None) -> RouteOutput:
    from edgepack.convert.keras_to_tflite import convert_tensorflow_to_tflite

    assert handle.path is not None
    return RouteOutput(convert_tensorflow_to_tflite(handle.path, work / "converter.tflite"), "tflite", False)


def _to_onnx(handle: ModelHandle, work: Path, calib: np.ndarray | None) -> RouteOutput:
    path, notes, _ = onnx_of(handle, work)
    return RouteOutput(path, "onnx", False, notes)


def _keras_export(handle: ModelHandle, work: Path, calib: np.ndarray | None) -> RouteOutput:
    assert handle.path is not None
    return RouteOutput(keras_saved_model(handle.path, work / "saved_model"), "savedmodel", False)


def _onnx_to_torch(handle: ModelHandle, work: Path, calib: np.ndarray | None) -> RouteOutput:
    from edgepack.convert.onnx_to_torch import convert_onnx_to_torch
    from edgepack.data import random_dataset

    onnx_path, notes, _ = onnx_of(handle, work)
    example = random_dataset(handle.inputs, 1).batch([s.name for s in handle.inputs], 0)
    _, out = convert_onnx_to_torch(onnx_path, work / "torch", example)
    return RouteOutput(out, "torch", False, notes)


def graph_module(handle: ModelHandle, work: Path) -> tuple[Any, Path, list[str], str]:
    """The model's ONNX graph rebuilt in PyTorch by edgepack's converter, its shapes frozen and folded
    first: (the module, the ONNX file it stands for, the notes of getting that file, the note of the
    folding). The caller checks the module against the file."""
    import onnx

    from edgepack.convert.onnx_to_torch import torch_module_from_onnx
    from edgepack.convert.simplify import simplify_onnx

    onnx_path, notes, _ = onnx_of(handle, work)
    simple, note = simplify_onnx(onnx_path, work / "simplified.onnx")
    return torch_module_from_onnx(onnx.load(str(simple))), onnx_path, notes, note


def _graph_then_litert(handle: ModelHandle, work: Path, calib: np.ndarray | None) -> RouteOutput:
    """ONNX -> PyTorch (edgepack's converter, on the graph with its shapes folded) -> litert-torch: the
    other way to TFLite when onnx2tf cannot convert a graph (seen: a detector head's Concat)."""
    import torch

    from edgepack.data import random_dataset

    module, _, notes, folded = graph_module(handle, work)
    example = tuple(torch.from_numpy(x) for x in
                    random_dataset(handle.inputs, 1).batch([s.name for s in handle.inputs], 0))
    out = _litert_export(module, example, work / "litert_torch.tflite")
    return RouteOutput(out, "tflite", False, [*notes, *([folded] if folded else []),
                                              "the graph rebuilt in PyTorch by edgepack, then litert-torch"])


def routes_for(handle: ModelHandle, target: str) -> list[Route]:
    """Every route from this source to the target (as ``--to`` names it), before the profile orders them."""
    fmt, to = handle.format, ModelFormat.of_target(target)
    if to is ModelFormat.TFLITE:
        if fmt is ModelFormat.TFLITE:
            return []
        routes = [Route("onnx2tf" if fmt is ModelFormat.ONNX else _chain(fmt, "onnx2tf"), "onnx2tf",
                        _via_onnx2tf(ModelFormat.TFLITE))]
        if fmt is ModelFormat.ONNX:
            routes.append(Route("onnx-to-torch + litert-torch", "litert-torch", _graph_then_litert, fallback=True))
        if fmt.is_torch:
            routes.append(Route("litert-torch", "litert-torch", _litert_torch))
        if fmt.is_tensorflow:
            routes.append(Route("tflite-converter", "tflite-converter", _tflite_converter))
        return routes
    if to is ModelFormat.ONNX:
        if fmt is ModelFormat.ONNX:
            return []
        return [Route("torch.onnx" if fmt.is_torch else "tf2onnx", "torch.onnx" if fmt.is_torch else "tf2onnx",
                      _to_onnx)]
    if to is ModelFormat.SAVEDMODEL:
        if fmt is ModelFormat.SAVEDMODEL:
            return []
        routes = [Route("onnx2tf" if fmt is ModelFormat.ONNX else _chain(fmt, "onnx2tf"), "onnx2tf",
                        _via_onnx2tf(ModelFormat.SAVEDMODEL))]
        if fmt is ModelFormat.KERAS:
            routes.append(Route("keras-export", "keras-export", _keras_export))
        return routes
    if to is ModelFormat.TORCHSCRIPT:
        if fmt.is_torch:
            return []
        return [Route("onnx-to-torch" if fmt is ModelFormat.ONNX else _chain(fmt, "onnx-to-torch"),
                      "onnx-to-torch", _onnx_to_torch)]
    raise ValueError(target)


def _chain(fmt: ModelFormat, last: str) -> str:
    first = "torch.onnx" if fmt.is_torch else "tf2onnx"
    return f"{first} + {last}"

