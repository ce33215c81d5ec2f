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

from edgepack.convert.errors import ConversionError
from edgepack.convert.tensor_names import RenamedNames, restore_tflite
from edgepack.errors import first_line
from edgepack.quiet import captured_output

Feed = Callable[[], Iterator[dict[str, np.ndarray]]]  # calibration samples keyed by signature input name


def _as_lists(feed: Feed) -> Callable[[], Iterator[list[np.ndarray]]]:
    """The quantization debugger wants each sample as a list in input order, not a dict."""
    def lists() -> Iterator[list[np.ndarray]]:
        for sample in feed():
            yield list(sample.values())
    return lists


def _converter(saved_model: Path, mode: str, feed: Feed | None, io_dtype: str) -> Any:
    with captured_output():
        import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
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


def quantize_tflite(saved_model: Path, out: Path, mode: str, feed: Feed | None, io_dtype: str = "float32",
                    float_layers: list[str] | None = None) -> Path:
    """Write a quantized TFLite file; ``float_layers`` (op output tensor names) stay in float."""
    try:
        with captured_output():
            converter = _converter(saved_model, mode, feed, io_dtype)
            if float_layers:
                import tensorflow as tf

                options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(float_layers))
                debugger = tf.lite.experimental.QuantizationDebugger(
                    converter=converter, debug_dataset=_as_lists(feed), debug_options=options)
                flatbuffer = debugger.get_nondebug_quantized_model()
            else:
                flatbuffer = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError
        first = first_line(exc, 300)
        raise ConversionError(f"tflite {mode} quantization", first) from None
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


def layer_sensitivity(saved_model: Path, feed: Feed) -> list[tuple[str, float]]:
    """Quantized layers ranked by the relative RMS error of their output, worst first.

    Names are op output tensor names, as the debugger's ``denylisted_nodes`` takes them.
    """
    with captured_output():
        import tensorflow as tf

        converter = _converter(saved_model, "int8", feed, "float32")
        options = tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics={"relative_rmse": _relative_rmse})
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=_as_lists(feed), debug_options=options)
        debugger.run()
    ranked = []
    for key, stats in debugger.layer_statistics.items():
        # "NumericVerify/{tensor}{digit}:{index}", parsed as the debugger itself does
        name = key.rsplit(":", 1)[0].removeprefix("NumericVerify/")
        name = name[:-1] if name[-1:].isdigit() else name
        ranked.append((name, float(stats.get("relative_rmse", 0.0))))
    return sorted(ranked, key=lambda item: item[1], reverse=True)
