"""Every source format loads into a handle that knows its I/O, hash and size; inspect counts agree."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from edgepack.inspection import inspect_model
from edgepack.model import ModelFormat, load_model

DIGITS_MACS = 370_944
DIGITS_PARAMS = 71_754


def test_onnx_handle(digits_onnx: Path):
    handle = load_model(digits_onnx)
    assert handle.format is ModelFormat.ONNX
    assert handle.sha256 == hashlib.sha256(digits_onnx.read_bytes()).hexdigest()
    assert handle.size_bytes == digits_onnx.stat().st_size
    assert [(t.name, t.shape, t.dtype, t.layout) for t in handle.inputs] == [
        ("image", (1, 1, 8, 8), "float32", "NCHW")]
    assert handle.outputs[0].shape == (1, 10)


@pytest.mark.slow
def test_tflite_handle(digits_tflite: Path):
    handle = load_model(digits_tflite)
    assert handle.format is ModelFormat.TFLITE
    assert handle.inputs[0].shape == (1, 8, 8, 1) and handle.inputs[0].layout == "NHWC"
    assert handle.outputs[0].shape == (1, 10)


def test_torchscript_and_exported_program(digits_model, tmp_path: Path):
    import torch

    example = (torch.zeros(1, 1, 8, 8),)
    scripted = tmp_path / "digits.pt"
    torch.jit.save(torch.jit.trace(digits_model, example), str(scripted))
    handle = load_model(scripted, input_shape="1,1,8,8")
    assert handle.format is ModelFormat.TORCHSCRIPT and handle.inputs[0].shape == (1, 1, 8, 8)
    result = inspect_model(handle, None)
    assert result.summary.macs == DIGITS_MACS and result.summary.params == DIGITS_PARAMS
    assert "exported from torchscript" in result.analysed_as

    program = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(digits_model, example), str(program))
    handle = load_model(program)
    assert handle.format is ModelFormat.EXPORTED_PROGRAM
    assert handle.inputs[0].shape == (1, 1, 8, 8) and handle.inputs[0].layout == "NCHW"
    assert inspect_model(handle, None).summary.macs == DIGITS_MACS


def test_torch_module_factory():
    handle = load_model(torch_module="edgepack.examples.digits:digits_cnn", input_shape="1,1,8,8")
    assert handle.format is ModelFormat.TORCH_MODULE
    assert handle.path is None and len(handle.sha256) == 64 and handle.size_bytes > DIGITS_PARAMS * 4
    assert inspect_model(handle, None).summary.params == DIGITS_PARAMS


@pytest.mark.slow
def test_keras_and_savedmodel(tmp_path: Path):
    import keras

    model = keras.Sequential([
        keras.Input((8, 8, 1), batch_size=1),
        keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    rng = np.random.default_rng(0)  # non-zero biases: the TFLite converter drops all-zero ones
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    path = tmp_path / "small.keras"
    model.save(path)
    handle = load_model(path)
    assert handle.format is ModelFormat.KERAS
    assert handle.inputs[0].shape == (1, 8, 8, 1) and handle.inputs[0].layout == "NHWC"
    summary = inspect_model(handle, None).summary
    # conv: 4*8*8 outputs * 9 = 2,304 MACs, 4*9+4 = 40 params; dense: 10*256 = 2,560 MACs, 2,570 params
    assert summary.macs == 2_304 + 2_560
    assert summary.params == 40 + 2_570

    saved = tmp_path / "saved"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    handle = load_model(saved)
    assert handle.format is ModelFormat.SAVEDMODEL
    assert handle.inputs[0].shape == (None, 8, 8, 1)  # Keras exports a dynamic batch
    assert len(handle.sha256) == 64 and handle.size_bytes > 0
