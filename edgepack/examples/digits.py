"""A small CNN for scikit-learn's bundled 8x8 digits: the demo's example and the tests' model.

``python -m edgepack.examples.digits OUT.onnx`` trains it (about 98% test accuracy in a few seconds
on a CPU) and exports it to ONNX; that is how ``edgepack/examples/digits_cnn.onnx`` was made.
``python -m edgepack.examples.digits --data DIR`` writes the demo's data: ``calib.npz`` (300 training
images) and ``eval.npz`` (the held-out test split with labels, never seen in training).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

INPUT_SHAPE = (1, 1, 8, 8)


@dataclass
class DigitsData:
    """Digits as float32 NCHW images in [0, 1] and int64 labels, split 80/20 with a fixed seed."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_data(seed: int = 0) -> DigitsData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(x))
    split = int(0.8 * len(x))
    train, test = order[:split], order[split:]
    return DigitsData(x[train], y[train], x[test], y[test])


def digits_cnn() -> Any:
    """The untrained architecture: 2 convs (16, 32 channels), a max-pool, 2 linear layers.

    Per inference: 370,944 MACs and 71,754 parameters (tests/integration/test_inspect_counts.py has the sums).
    """
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 128), nn.ReLU(),
        nn.Linear(128, 10),
    ).eval()


def train_digits_cnn(data: DigitsData | None = None, epochs: int = 40, seed: int = 0) -> Any:
    """Train :func:`digits_cnn` with Adam on the training split; returns the model in eval mode."""
    import torch
    from torch import nn

    data = data or load_digits_data()
    torch.manual_seed(seed)
    model = digits_cnn().train()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def main(out: str) -> int:
    import torch

    from edgepack.convert.torch_to_onnx import export_to_onnx

    data = load_digits_data()
    model = train_digits_cnn(data)
    print(f"test accuracy {accuracy(model, data.x_test, data.y_test):.4f}")
    export_to_onnx(model, (torch.zeros(INPUT_SHAPE),), Path(out), input_names=["image"])
    return 0


def write_demo_data(folder: str) -> int:
    data = load_digits_data()
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / "calib.npz", x=data.x_train[:300])
    np.savez(out / "eval.npz", x=data.x_test, y=data.y_test)
    print(f"wrote {out / 'calib.npz'} (300 training images) and {out / 'eval.npz'} "
          f"({len(data.x_test)} held-out images with labels)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--data":
        sys.exit(write_demo_data(sys.argv[2]))
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "digits_cnn.onnx"))
