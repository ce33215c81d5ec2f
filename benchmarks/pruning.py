"""Structured pruning at ratios 0.3 / 0.5 / 0.7: what shrinks, and whether the milliseconds follow.

    .venv/bin/python benchmarks/pruning.py [--mobilenet-size 128] [--distill-epochs 10]

For the digits CNN (trained here; accuracy on the test split) and the MobileNetV2-like model (random
weights, so no accuracy: cosine similarity of its logits to the unpruned model's on held-out crops of
scikit-learn's two photos):
with channel counts exact and rounded to multiples of 8 (edgepack's default): parameters, MACs, the ONNX
file's size, median single-thread latency measured by the harness in a
fresh process (ONNX Runtime, this x86_64 machine), and accuracy / agreement after pruning and after
distillation from the unpruned model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgepack.compress.channels import prune
from edgepack.compress.distill import distill
from edgepack.compress.pruning import _stage
from edgepack.render import human_bytes, table


def digits() -> tuple[str, Any, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    from edgepack.examples.digits import load_digits_data, train_digits_cnn

    data = load_digits_data()
    return "digits CNN", train_digits_cnn(data), data.x_train, data.x_test, data.y_train, data.y_test, None


def mobilenet(size: int) -> tuple[str, Any, np.ndarray, np.ndarray, None, None, None]:
    from sklearn.datasets import load_sample_images

    from edgepack.examples.mobilenet import mobilenet_like

    rng = np.random.default_rng(0)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    crops = []
    for photo in load_sample_images().images:
        for _ in range(160):
            y, x = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
            crops.append(((photo[y:y + size, x:x + size] / 255.0 - mean) / std).transpose(2, 0, 1))
    crops = np.stack(crops).astype(np.float32)[rng.permutation(320)]
    return f"MobileNetV2-like {size}", mobilenet_like(), crops[:256], crops[256:], None, None, None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mobilenet-size", type=int, default=128)
    parser.add_argument("--distill-epochs", type=int, default=10)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepack-pbench-") as tmp:
        work = Path(tmp)
        for name, model, x_train, x_test, y_train, y_test, _ in (digits(), mobilenet(args.mobilenet_size)):
            example = (torch.zeros(1, *x_train.shape[1:]),)
            base = _stage("base", model, model, example, "image", x_test, y_test, work)
            def quality(stage: Any, module: Any, original: Any = model, labelled: bool = y_test is not None,
                        x_test: np.ndarray = x_test) -> str:
                if labelled:
                    return f"{100 * stage.accuracy:.2f}%"
                with torch.no_grad():
                    a = original(torch.from_numpy(x_test)).reshape(-1).double()
                    b = module(torch.from_numpy(x_test)).reshape(-1).double()
                return f"cos {float(a @ b / (a.norm() * b.norm())):.4f}"

            rows.append((name, "0 (original)", f"{base.params:,}", f"{base.macs:,}", human_bytes(base.size_bytes),
                         f"{base.latency_ms:.4f}", quality(base, model), "-"))
            for ratio, round_to in ((0.3, None), (0.3, 8), (0.5, None), (0.5, 8), (0.7, None), (0.7, 8)):
                pruned = prune(model, example, ratio, round_to=round_to)
                after = _stage(f"r{ratio}", pruned.module, model, example, "image", x_test, y_test, work)
                student, _ = distill(model, pruned.module, x_train, labels=y_train, held_out=x_test,
                                     epochs=args.distill_epochs)
                distilled = _stage(f"d{ratio}", student, model, example, "image", x_test, y_test, work)
                label = f"{ratio}" + (f", round {round_to}" if round_to else ", exact")
                rows.append((name, label, f"{after.params:,}", f"{after.macs:,}", human_bytes(after.size_bytes),
                             f"{after.latency_ms:.4f} ({after.latency_ms / base.latency_ms:.2f}x)",
                             quality(after, pruned.module), quality(distilled, student)))
    print("Structured pruning (Torch-Pruning, magnitude importance; latency: ONNX Runtime, 1 thread, median, "
          "this x86_64 machine)")
    print(table(["model", "ratio", "params", "MACs", "ONNX size", "p50 ms (vs original)", "after pruning",
                 "after distillation"], rows, "lrrrrrrr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
