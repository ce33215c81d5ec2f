"""The pruning axis of ``edgepack build``: do two ratios give two models, and does pruning to a size
budget on unlabelled data keep the accuracy?

    .venv/bin/python benchmarks/pruning_axis.py

1. The bundled digits CNN (the one ``make demo`` builds) pruned at 30% and 50% as the build prunes it:
   parameters, the largest output difference between the two on the held-out split, and which hidden
   units are never active there (a unit that never fires can go at no cost, so two ratios that differ
   only in such units are the same function: the build keeps one candidate).
2. ``edgepack prune --max-size-mb`` (40% of the file) with unlabelled calibration data only (the demo's
   300 samples, a fifth held out; no labels, no --eval), scored on the labelled evaluation split:
   distillation of 10 and 30 epochs, each without and with mixup.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgepack.compress.channels import count_params, prune
from edgepack.compress.distill import outputs_of
from edgepack.compress.pruning import prune_model, torch_module_for_pruning
from edgepack.data import Dataset
from edgepack.engines import engine_for_file
from edgepack.examples.digits import load_digits_data
from edgepack.model import load_model
from edgepack.profiles import ProfileRegistry
from edgepack.render import table

MODEL = Path(__file__).resolve().parents[1] / "edgepack" / "examples" / "digits_cnn.onnx"


def two_ratios(held: np.ndarray, work: Path) -> list[list[str]]:
    import torch

    profile = ProfileRegistry.discover().get("host")
    original = torch_module_for_pruning(load_model(MODEL), work, held, profile, []).eval()
    example = (torch.zeros(1, 1, 8, 8),)
    hidden = {}
    linear = next(m for m in original.modules() if isinstance(m, torch.nn.Linear))
    handle = linear.register_forward_hook(lambda _m, _i, out: hidden.setdefault("h", out))
    with torch.no_grad():
        original(torch.from_numpy(held))
    handle.remove()
    dead = int(((hidden["h"] > 0).sum(0) == 0).sum())
    pruned = {r: prune(original, example, r).module for r in (0.3, 0.5)}
    with torch.no_grad():
        a, b = (outputs_of(pruned[r], held)[0].numpy() for r in (0.3, 0.5))
    rows = [[f"{r:.0%}", str(count_params(m)), ", ".join(str(tuple(p.weight.shape)) for p in m.modules()
                                                         if isinstance(p, torch.nn.Conv2d | torch.nn.Linear))]
            for r, m in pruned.items()]
    print(table(["ratio", "parameters", "layer shapes"], rows, "rrl"))
    print(f"largest output difference 30% vs 50% on {len(held)} held-out samples: {np.abs(a - b).max():.2e} "
          f"(peak {np.abs(a).max():.2f}); hidden units never active there: {dead} of {hidden['h'].shape[1]}")
    return rows


def unlabelled(calib: np.ndarray, x: np.ndarray, y: np.ndarray, work: Path) -> list[list[str]]:
    profile = ProfileRegistry.discover().get("host")
    size = MODEL.stat().st_size
    source = engine_for_file(MODEL, "onnx")

    def accuracy(engine) -> float:
        return float(np.mean([engine.run([v[None]])[0].argmax() == t for v, t in zip(x, y, strict=True)]))

    base = accuracy(source)
    rows = []
    for epochs in (10, 30):
        for mixup in (False, True):
            start = time.perf_counter()
            result = prune_model(load_model(MODEL), Dataset({"image": calib}), profile, work / f"p{epochs}{mixup}.onnx",
                                 max_size_mb=0.4 * size / 1e6, distill_epochs=epochs, mixup=mixup)
            got = accuracy(engine_for_file(result.artifact.path, "onnx"))
            rows.append([str(epochs), "yes" if mixup else "no", f"{result.artifact.size_bytes / size:.0%}",
                         f"{base:.2%}", f"{got:.2%}", f"{100 * (base - got):+.2f}",
                         result.distill_report.stopped_because if result.distill_report else "-",
                         f"{time.perf_counter() - start:.0f}"])
    print(table(["epochs", "mixup", "size", "original", "pruned", "loss pts", "stopped", "s"], rows, "rlrrrrlr"))
    return rows


def main() -> int:
    data = load_digits_data()
    calib = data.x_train[:300]  # as make demo's calib.npz: the first 300 training images, no labels
    with tempfile.TemporaryDirectory(prefix="edgepack-axis-") as tmp:
        two_ratios(data.x_test, Path(tmp))
        unlabelled(calib, data.x_test, data.y_test, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
