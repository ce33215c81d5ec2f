"""TFLite quantization with ``tf.lite.TFLiteConverter`` on a SavedModel, calibrated on the user's data.

Modes: ``int8`` (integer kernels; float, int8 or uint8 I/O), ``fp16`` (float16 weights) and
``dynamic`` (int8 weights, float activations). Layers kept in float go through the converter's
quantization debugger (``denylisted_nodes``); its per-layer statistics rank the layers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.artifact import Binding
from edgepack.compress.plan import Precision
from edgepack.compress.quantizer import (
    FloatLayer,
    QuantizeBase,
    Quantizer,
    identity_bindings,
    sensitivity_samples,
    tflite_io,
)
from edgepack.conversion_error import ConversionError
from edgepack.convert.tensor_names import RenamedNames, restore_tflite
from edgepack.data import Dataset
from edgepack.engines import Engine
from edgepack.errors import first_line
from edgepack.formats import ArtifactFormat
from edgepack.model import ModelFormat, ModelHandle
from edgepack.profiles import DeviceProfile
from edgepack.quiet import captured_output
from edgepack.stages import StageClock

Feed = Callable[[], Iterator[dict[str, np.ndarray]]]  # calibration samples keyed by signature input name


def _as_lists(feed: Feed) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The quantization debugger wants each sample as a list in input order, not a dict."""
    def lists() -> Iterator[list[np.ndarray]]:
        for sample in feed():
            yield list(sample.values())
    return lists


def _converter(saved_model: Path, mode: Precision, feed: Feed | None, io_dtype: str) -> Any:
    with captured_output():
        import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode is Precision.FP16:
        converter.target_spec.supported_types = [tf.float16]
    elif mode is Precision.INT8:
        converter.representative_dataset = feed
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_dtype != "float32":
            converter.inference_input_type = getattr(tf, io_dtype)
            converter.inference_output_type = getattr(tf, io_dtype)
    return converter


def signature_inputs(saved_model: Path) -> list[str]:
    with captured_output():
        import tensorflow as tf

        function = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    _, kwargs = function.structured_input_signature
    return sorted(kwargs)


def quantize_tflite(saved_model: Path, out: Path, mode: Precision, feed: Feed | None, io_dtype: str = "float32",
                    float_layers: list[str] | None = None) -> Path:
    """Write a quantized TFLite file; ``float_layers`` (op output tensor names) stay in float."""
    if float_layers:
        assert feed is not None
        return quantize_calibrated(calibrate(saved_model, feed), saved_model, out, float_layers)
    try:
        with captured_output():
            flatbuffer = _converter(saved_model, mode, feed, io_dtype).convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError
        first = first_line(exc, 300)
        raise ConversionError(f"tflite {mode} quantization", first) from None
    out.write_bytes(restore_tflite(flatbuffer, RenamedNames.of(saved_model)))  # the model's own tensor names
    return out


def calibrate(saved_model: Path, feed: Feed) -> bytes:
    """The float model with its int8 calibration (float I/O): each sample of ``feed`` run once. Every int8
    candidate quantizes from it (``quantize_calibrated``), with or without layers kept in float, and the
    layer ranking reads it: calibrating is the slow part of quantizing, done once."""
    try:
        with captured_output():
            converter = _converter(saved_model, Precision.INT8, feed, "float32")
            converter.experimental_mlir_quantizer = True  # as the converter's quantization debugger sets it
            converter._experimental_calibrate_only = True
            calibrated: bytes = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError
        raise ConversionError("tflite int8 calibration", first_line(exc, 300)) from None
    return calibrated


def _mlir_quantize(calibrated: bytes, float_layers: list[str], debug: bool = False) -> bytes:
    """What ``converter.convert()`` does after calibrating (per-channel weights, float I/O), with these op
    output tensors denylisted (kept in float); ``debug``: with NumericVerify ops for the layer ranking."""
    with captured_output():
        from tensorflow.lite.python.convert import mlir_quantize

        quantized: bytes = mlir_quantize(calibrated, disable_per_channel=False, fully_quantize=False,
                                         enable_numeric_verify=debug, denylisted_nodes=list(float_layers) or None)
    return quantized


def quantize_calibrated(calibrated: bytes, saved_model: Path, out: Path, float_layers: list[str]) -> Path:
    """int8 from a calibrated model (``calibrate``), ``float_layers`` (op output tensor names) kept in float."""
    try:
        flatbuffer = _mlir_quantize(calibrated, float_layers)
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError
        raise ConversionError("tflite int8 quantization", first_line(exc, 300)) from None
    out.write_bytes(restore_tflite(flatbuffer, RenamedNames.of(saved_model)))  # the model's own tensor names
    return out


def float_tflite(saved_model: Path, out: Path) -> Path:
    """The fp32 TFLite of the same SavedModel: the size and fidelity baseline."""
    with captured_output():
        import tensorflow as tf

        flatbuffer = tf.lite.TFLiteConverter.from_saved_model(str(saved_model)).convert()
    out.write_bytes(restore_tflite(flatbuffer, RenamedNames.of(saved_model)))
    return out


def _relative_rmse(floats: Any, quantized: Any, scale: float, zero_point: int) -> float:
    """RMS of (float - dequantized) over RMS of float, over every debug sample of one layer."""
    f = np.concatenate([np.asarray(x, np.float64).reshape(-1) for x in floats])
    q = np.concatenate([(np.asarray(x, np.int32).reshape(-1) - zero_point) * scale for x in quantized])
    signal = float(np.sqrt(np.mean(f * f))) or 1.0
    return float(np.sqrt(np.mean((f - q) ** 2))) / signal


def layer_sensitivity(calibrated: bytes, feed: Feed) -> list[tuple[str, float]]:
    """Quantized layers of a calibrated model (``calibrate``) ranked by the relative RMS error of their
    output on the samples of ``feed``, worst first.

    Names are op output tensor names, as the debugger's ``denylisted_nodes`` takes them.
    """
    with captured_output():
        import tensorflow as tf

        options = tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics={"relative_rmse": _relative_rmse})
        debugger = tf.lite.experimental.QuantizationDebugger(
            quant_debug_model_content=_mlir_quantize(calibrated, [], debug=True), debug_dataset=_as_lists(feed),
            debug_options=options)
        debugger.run()
    ranked = []
    for key, stats in debugger.layer_statistics.items():
        # "NumericVerify/{tensor}{digit}:{index}", parsed as the debugger itself does
        name = key.rsplit(":", 1)[0].removeprefix("NumericVerify/")
        name = name[:-1] if name[-1:].isdigit() else name
        ranked.append((name, float(stats.get("relative_rmse", 0.0))))
    return sorted(ranked, key=lambda item: item[1], reverse=True)


class TfliteQuantizer(Quantizer):
    """The TFLite converter from a SavedModel: full-integer int8 (per-channel weights), fp16, dynamic."""

    format = ArtifactFormat.TFLITE

    def __init__(self, mode: Precision, base: QuantizeBase, calib: Dataset, work: Path, io: str,
                 profile: DeviceProfile, calibrate_method: str) -> None:
        super().__init__(mode, base, calib, work, io, profile, calibrate_method)
        self.per_channel = True  # the TFLite converter quantizes weights per channel
        signature = signature_inputs(base.path)
        self.signature_feeds = [self._by_signature(feed, signature) for feed in self.feeds]
        self._calibration: bytes | None = None  # int8 with float I/O: calibrated once, for every candidate

    def _calibrated(self) -> bytes:
        if self._calibration is None:
            self._calibration = calibrate(self.base.path, self._feed)
        return self._calibration

    @staticmethod
    def make_base(handle: ModelHandle, work: Path, profile: DeviceProfile, calib: Dataset, clock: StageClock,
                  source: Engine) -> QuantizeBase:
        from edgepack.convert.convert import convert_model, require_static_inputs
        from edgepack.convert.routes import keras_saved_model
        require_static_inputs(handle)
        names = [s.name for s in handle.inputs]
        if handle.format is ModelFormat.SAVEDMODEL:
            assert handle.path is not None
            inputs, outputs = identity_bindings(handle, source, calib.batch(names, 0))
            return QuantizeBase(handle.path, inputs, outputs)
        if handle.format is ModelFormat.KERAS:
            assert handle.path is not None
            with clock.stage("convert", "keras -> savedmodel (keras export)"):
                saved = keras_saved_model(handle.path, work / "keras_saved_model")
            inputs, outputs = identity_bindings(handle, source, calib.batch(names, 0))
            return QuantizeBase(saved, inputs, outputs)
        result = convert_model(handle, "savedmodel", work / "base_saved_model", profile, calib, clock=clock,
                               source=source)
        return QuantizeBase(result.artifact.path, result.artifact.inputs, result.artifact.outputs)

    @staticmethod
    def _by_signature(feed: dict[str, np.ndarray], signature: list[str]) -> dict[str, np.ndarray]:
        if set(feed) == set(signature):
            return feed
        return dict(zip(signature, feed.values(), strict=True))

    def _feed(self) -> Iterator[dict[str, np.ndarray]]:
        yield from self.signature_feeds

    def fp32_size(self) -> int:
        return float_tflite(self.base.path, self.work / "fp32.tflite").stat().st_size

    def build(self, float_layers: list[str]) -> Path:
        if self.mode is Precision.INT8 and self.io == "float32":  # the only one with layers kept in float
            return quantize_calibrated(self._calibrated(), self.base.path, self.next_path(), float_layers)
        return quantize_tflite(self.base.path, self.next_path(), self.mode, self._feed, self.io, float_layers)

    def ranking(self, held_out: Dataset, quantized: Path) -> list[FloatLayer]:
        """Layers by the error of their own output, on a few calibration samples (a ranking: the candidates
        it leads to are judged on every held-out sample; quantizer.SENSITIVITY_VALUES)."""
        count = sensitivity_samples(self.signature_feeds)

        def sample() -> Iterator[dict[str, np.ndarray]]:
            yield from self.signature_feeds[:count]

        return [FloatLayer(n, s, 0) for n, s in layer_sensitivity(self._calibrated(), sample)]

    def bindings(self, candidate: Path) -> tuple[list[Binding], list[Binding]]:
        return tflite_io(candidate, self.base.inputs, self.base.outputs)
