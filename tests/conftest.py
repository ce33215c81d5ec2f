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
def digits_pt2(digits_model, artifacts_dir: Path) -> Path:
    """The trained digits CNN as a torch.export ExportedProgram file."""
    import torch

    path = artifacts_dir / "digits.pt2"
    torch.export.save(torch.export.export(digits_model, (torch.zeros(INPUT_SHAPE),)), str(path))
    return path


@pytest.fixture(scope="session")
def mobilenet_onnx(artifacts_dir: Path) -> Path:
    """The MobileNetV2-like model (depthwise convs, residual adds) at 3x32x32, exported to ONNX."""
    import torch

    from edgepack.convert.torch_to_onnx import export_to_onnx
    from edgepack.examples.mobilenet import mobilenet_like

    return export_to_onnx(mobilenet_like(), (torch.zeros(1, 3, 32, 32),), artifacts_dir / "mobilenet.onnx",
                          input_names=["image"]).path


@pytest.fixture(scope="session")
def keras_digits(digits: DigitsData, artifacts_dir: Path) -> Path:
    """A Keras digits CNN (NHWC), trained for a few epochs, saved as .keras."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1), batch_size=None, name="image"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(2),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train.transpose(0, 2, 3, 1), digits.y_train, epochs=15, batch_size=64, verbose=0)
    path = artifacts_dir / "keras_digits.keras"
    model.save(path)
    return path


@pytest.fixture(scope="session")
def digits_tflite(digits_onnx: Path, digits: DigitsData, artifacts_dir: Path) -> Path:
    """The ONNX export converted by onnx2tf (the real converter), fp32."""
    from edgepack.convert.onnx_to_tflite import convert_onnx_to_tflite

    return convert_onnx_to_tflite(digits_onnx, artifacts_dir / "digits_tflite", calib=digits.x_train).float32


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str]):
    """Run ``edgepack ARGV...`` in this process: (exit code, stdout, stderr); argparse's refusals end in
    SystemExit, as in the real command, and give its code."""
    from edgepack.cli import main

    def run(*argv: object) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in argv])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        out, err = capsys.readouterr()
        return code, out, err

    return run


def assert_one_line_error(result: tuple[int, str, str], *fragments: str) -> str:
    """Exit 2, nothing on stdout, one line on stderr naming each fragment; returns that line."""
    code, out, err = result
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, err
    assert lines[0].startswith("edgepack: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def one_line_error():
    return assert_one_line_error
