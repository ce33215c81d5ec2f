"""``edgepack inspect``: what a model is and what it would cost on a device, before any measurement."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.analysis.compat import Compatibility, check_compatibility
from edgepack.analysis.graph import GraphSummary
from edgepack.analysis.roofline import RooflineEstimate, estimate_latency
from edgepack.model import ModelFormat, ModelHandle
from edgepack.profiles import DeviceProfile


@dataclass
class Inspection:
    model: ModelHandle
    summary: GraphSummary
    analysed_as: str  # "onnx", "tflite", or e.g. "onnx (exported from torchscript)"
    device: DeviceProfile | None
    compatibility: Compatibility | None
    estimate: RooflineEstimate | None

    def to_dict(self, per_layer: bool = True) -> dict[str, Any]:
        s = self.summary
        data: dict[str, Any] = {
            "model": self.model.to_dict(),
            "analysed_as": self.analysed_as,
            "params": s.params,
            "macs": s.macs,
            "weight_bytes": s.weight_bytes,
            "peak_activation_bytes": s.peak_activation_bytes,
            "peak_activation_kind": "estimate (live tensors in execution order, no buffer reuse)",
            "precision": s.precision,
            "weight_storage": s.weight_storage,
            "op_histogram": s.op_histogram,
            "input_shapes": {k: list(v) for k, v in s.input_shapes.items()},
            "notes": [*self.model.notes, *s.notes],
        }
        if per_layer:
            data["layers"] = [layer.to_dict() for layer in s.layers]
        if self.device is not None:
            data["device"] = self.device.name
            data["compatibility"] = self.compatibility.to_dict() if self.compatibility else None
            data["latency_estimate"] = self.estimate.to_dict() if self.estimate else None
        return data


def static_input_shapes(handle: ModelHandle) -> dict[str, tuple[int, ...]]:
    return {t.name: tuple(int(d) for d in t.shape)  # type: ignore[arg-type]
            for t in handle.inputs if t.is_static}


def summarize_model(handle: ModelHandle) -> tuple[GraphSummary, str]:
    """The graph summary, analysing torch models via an ONNX export and Keras via a TFLite conversion."""
    shapes = static_input_shapes(handle)
    if handle.format is ModelFormat.ONNX:
        import onnx

        from edgepack.analysis.onnx_graph import summarize_onnx

        assert handle.path is not None
        return summarize_onnx(onnx.load(str(handle.path)), shapes), "onnx"
    if handle.format is ModelFormat.TFLITE:
        from edgepack.analysis.tflite_graph import summarize_tflite

        assert handle.path is not None
        return summarize_tflite(handle.path, shapes), "tflite"
    with tempfile.TemporaryDirectory(prefix="edgepack-inspect-") as tmp:
        if handle.format.is_tensorflow:
            from edgepack.analysis.tflite_graph import summarize_tflite
            from edgepack.convert.keras_to_tflite import convert_tensorflow_to_tflite

            assert handle.path is not None
            tflite = convert_tensorflow_to_tflite(handle.path, Path(tmp) / "model.tflite")
            return summarize_tflite(tflite, shapes), f"tflite (converted from {handle.format.value})"
        import onnx

        from edgepack.analysis.onnx_graph import summarize_onnx
        from edgepack.convert.torch_source import export_handle_to_onnx

        exported = export_handle_to_onnx(handle, Path(tmp) / "model.onnx")
        return (summarize_onnx(onnx.load(str(exported.path))),
                f"onnx (exported from {handle.format.value} by the {exported.exporter} exporter)")


def inspect_model(handle: ModelHandle, device: DeviceProfile | None) -> Inspection:
    summary, analysed_as = summarize_model(handle)
    compatibility = check_compatibility(summary, device) if device else None
    estimate = estimate_latency(summary, device) if device else None
    return Inspection(handle, summary, analysed_as, device, compatibility, estimate)
