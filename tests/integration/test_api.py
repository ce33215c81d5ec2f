"""The Python API: the README's example runs as written; models and data in the forms ML code has them;
errors are exceptions, never SystemExit."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgepack
from edgepack.errors import EdgepackError, UsageError

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_example_runs_as_written(tmp_path: Path):
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", readme_example()], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert "MACs" in lines[0] and "stm32h7's op list" in lines[0]
    assert re.match(r"tflite (fp32|int8) x\d: p50 [\d.]+ ms, [\d.]+ MB -> dist/digits_cnn-host$", lines[-1])
    assert (tmp_path / "dist").is_dir() and any((tmp_path / "dist").glob("*/manifest.json"))


def test_data_as_arrays_dicts_and_batches_and_an_onnx_proto(digits, digits_onnx: Path, tmp_path: Path):
    import onnx
    import torch

    from edgepack.api import dataset, load

    handle = load(onnx.load(str(digits_onnx)), tmp_path)
    assert handle.format.value == "onnx" and handle.inputs[0].shape == (1, 1, 8, 8)
    x, y = digits.x_test[:40], digits.y_test[:40]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y)),
                                         batch_size=16)
    for given in (x, {"x": x, "y": y}, loader, [torch.from_numpy(x[:20]), torch.from_numpy(x[20:])]):
        data = dataset(given, handle, tmp_path, "evaluation")
        assert len(data) == 40 and np.allclose(next(iter(data.inputs.values())), x)
    assert np.array_equal(dataset(loader, handle, tmp_path, "evaluation").labels, y)


def test_errors_are_exceptions_not_system_exit(digits_onnx: Path, digits_model, tmp_path: Path):
    with pytest.raises(EdgepackError, match="unknown device 'rpi9'"):
        edgepack.inspect(digits_onnx, device="rpi9")
    with pytest.raises(UsageError, match="needs example_input"):
        edgepack.build(digits_model, device="host", options=edgepack.BuildOptions(output_dir=tmp_path))
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_speed'"):
        edgepack.build(digits_onnx, device="host", max_speed=3)
    with pytest.raises(EdgepackError, match="no --host given to reach the rpi4"):
        edgepack.profile(digits_onnx, device="rpi4")
    assert not any(tmp_path.iterdir())


def test_quantize_a_torch_module_from_a_dataloader(digits, digits_model, tmp_path: Path):
    import torch

    batches = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.from_numpy(digits.x_train[:200])),
                                          batch_size=50)
    result = edgepack.quantize(digits_model, [b[0] for b in batches], "int8", tmp_path, format="onnx",
                               eval={"x": digits.x_test, "y": digits.y_test}, example_input=torch.zeros(1, 1, 8, 8))
    assert result.artifact.path.parent == tmp_path and result.artifact.path.suffix == ".onnx"
    assert result.fidelity.samples == len(digits.x_test) and result.fidelity.accuracy > 0.95
    assert result.to_dict()["mode"] == "int8"
