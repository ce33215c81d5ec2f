"""Keras (.keras/.h5) and SavedModel -> TFLite with ``tf.lite.TFLiteConverter``."""

from __future__ import annotations

import tempfile
from pathlib import Path

from edgepack.conversion_error import ConversionError
from edgepack.errors import first_line
from edgepack.quiet import captured_output

ROUTE = "keras/savedmodel->tflite (TFLiteConverter)"


def convert_tensorflow_to_tflite(model_path: Path, out_path: Path) -> Path:
    """fp32 TFLite from a Keras file (exported to a SavedModel first) or a SavedModel directory."""
    with captured_output():
        import tensorflow as tf

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgepack-keras-") as tmp:
        saved_model = model_path
        if model_path.is_file():
            import keras

            model = keras.models.load_model(str(model_path), compile=False)
            saved_model = Path(tmp) / "saved_model"
            with captured_output():
                model.export(str(saved_model), format="tf_saved_model", verbose=False)
        try:
            with captured_output():
                converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
                flatbuffer = converter.convert()
        except Exception as exc:  # the converter raises ConverterError, ValueError, ...: all one cause
            raise ConversionError(ROUTE, first_line(exc, 300)) from None
    out_path.write_bytes(flatbuffer)
    return out_path
