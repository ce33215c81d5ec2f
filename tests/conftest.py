"""Shared, session-scoped models and data: trained once, converted once, reused by every test."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepack.examples.digits import INPUT_SHAPE, DigitsData, load_digits_data, train_digits_cnn


@pytest.fixture(scope="session")
def digits() -> DigitsData:
    return load_digits_data()


@pytest.fixture(scope="session")
def digits_model(digits: DigitsData):
    """The digits CNN trained on the training split (about 98-99% test accuracy)."""
    return train_digits_cnn(digits)


@pytest.fixture(scope="session")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="session")
def digits_onnx(digits_model, artifacts_dir: Path) -> Path:
    import torch

    from edgepack.convert.torch_to_onnx import export_to_onnx

    return export_to_onnx(digits_model, (torch.zeros(INPUT_SHAPE),), artifacts_dir / "digits.onnx",
                          input_names=["image"]).path


@pytest.fixture(scope="session")
def digits_tflite(digits_onnx: Path, digits: DigitsData, artifacts_dir: Path) -> Path:
    """The ONNX export converted by onnx2tf (the real converter), fp32."""
    from edgepack.convert.onnx_to_tflite import convert_onnx_to_tflite

    return convert_onnx_to_tflite(digits_onnx, artifacts_dir / "digits_tflite", calib=digits.x_train).float32


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
