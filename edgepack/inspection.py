"""``edgepack inspect``: what a model is and what it would cost on a device, before any measurement."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepack.analysis.compat import Compatibility, OpIssue, check_compatibility
from edgepack.analysis.graph import GraphSummary
from edgepack.analysis.roofline import RooflineEstimate, estimate_latency
from edgepack.model import ModelFormat, ModelHandle
from edgepack.profiles import DeviceProfile
from edgepack.toolchains import NO_EDGETPU_COMPILER


@dataclass
class Inspection:
    model: ModelHandle
    summary: GraphSummary
    analysed_as: str  # "onnx", "tflite", or e.g. "onnx (exported from torchscript)"
    device: DeviceProfile | None
    compatibility: Compatibility | None
    estimate: RooflineEstimate | None
    toolchain: dict[str, Any] = field(default_factory=dict)  # the device's own compiler/analyzer said

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
            data["toolchain"] = self.toolchain
        return data


def summarize_model(handle: ModelHandle) -> tuple[GraphSummary, str]:
    """The graph summary, analysing torch models via an ONNX export and Keras via a TFLite conversion."""
    shapes = handle.static_input_shapes
    if handle.format is ModelFormat.ONNX:
        import onnx

        from edgepack.analysis.onnx_graph import summarize_onnx

        assert handle.path is not None
        values = {t.name: t.value for t in handle.inputs if t.value is not None}  # --input-value
        return summarize_onnx(onnx.load(str(handle.path)), shapes, values), "onnx"
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
    inspection = Inspection(handle, summary, analysed_as, device, compatibility, estimate)
    if device is not None and compatibility is not None:
        inspection.toolchain = toolchain_check(handle, summary, device, compatibility)
    return inspection


def toolchain_check(handle: ModelHandle, summary: GraphSummary, device: DeviceProfile,
                    compatibility: Compatibility) -> dict[str, Any]:
    """What the device's own toolchain says of this model: Vela's placement of each op (an int8 TFLite
    model), TFLite's GPU analyzer, and, for the Edge TPU, that no compiler of it ran."""
    found: dict[str, Any] = {}
    tflite = handle.format is ModelFormat.TFLITE
    if device.compiler == "vela":
        if tflite and summary.precision == "int8":
            from edgepack.toolchains.vela import VelaError, compile_model

            with tempfile.TemporaryDirectory(prefix="edgepack-vela-") as folder:
                try:
                    report = compile_model(handle.path, device, Path(folder))
                    found["vela"] = {**report.to_dict(), "per_op": [op.to_dict() for op in report.ops]}
                except VelaError as exc:
                    found["vela"] = {"error": str(exc)}
        else:
            found["vela"] = {"not_run": "Vela compiles int8 TFLite models: this one is "
                                        f"{summary.precision} {handle.format.value} (edgepack build makes one)"}
    if device.gpu_check == "tflite-analyzer":
        if tflite:
            from edgepack.quiet import captured_output
            from edgepack.toolchains.gpu_analyzer import analyze, analyzer_status

            with captured_output():
                verdict = analyze(handle.path)
            if verdict is None:
                found["gpu_analyzer"] = {"not_used": f"{analyzer_status()[1]}: the op list spoke"}
            else:
                compatibility.issues = [OpIssue(op, summary.op_histogram.get(op, 1), "unsupported", why)
                                        for op, why in verdict.ops.items()]
                compatibility.checked_by = verdict.analyzer
        else:
            found["gpu_analyzer"] = {"not_run": "the analyzer reads TFLite models; the op list spoke"}
    if "tflite-edgetpu" in device.runtimes:
        found["edgetpu_compiler"] = {"not_run": f"{NO_EDGETPU_COMPILER}: the op list is Coral's documentation"}
    return found
