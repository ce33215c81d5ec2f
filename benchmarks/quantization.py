"""int8 side by side: edgepack against the two tools' defaults, measured with the real runtimes.

    .venv/bin/python benchmarks/quantization.py [--skip-mobilenet]

For the digits CNN (trained here) and a MobileNetV2-like model at 224x224 (random weights, calibrated
on crops of the two photos scikit-learn ships), in one run:
  fp32                       the ONNX export, and its TFLite conversion
  edgepack int8 tflite/onnx  `edgepack quantize` (per-channel, calibrated, U8S8 QDQ on x86)
  ORT quantize_static        onnxruntime.quantization.quantize_static with its defaults
  TFLite default int8        TFLiteConverter, Optimize.DEFAULT + representative dataset, nothing else
Size of the file; accuracy on the digits test split (or, for the MobileNet, cosine similarity and
top-1 agreement with fp32 on held-out crops); median single-thread latency from the harness in a
fresh process per candidate (LocalRunner on this machine: x86_64, not a board).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgepack.compress import quantize as q
from edgepack.convert.validate import compare
from edgepack.data import Dataset
from edgepack.engines import engine_for, engine_for_file
from edgepack.model import load_model
from edgepack.profiles import ProfileRegistry
from edgepack.render import human_bytes, table
from edgepack.runners.base import RunRequest
from edgepack.runners.local import LocalRunner


def digits_case(work: Path) -> tuple[Path, Dataset, Dataset]:
    import torch

    from edgepack.convert.torch_to_onnx import export_to_onnx
    from edgepack.examples.digits import INPUT_SHAPE, load_digits_data, train_digits_cnn

    data = load_digits_data()
    path = export_to_onnx(train_digits_cnn(data), (torch.zeros(INPUT_SHAPE),), work / "digits.onnx",
                          input_names=["image"]).path
    return path, Dataset({"image": data.x_train[:300]}), Dataset({"image": data.x_test}, data.y_test)


def mobilenet_case(work: Path) -> tuple[Path, Dataset, Dataset]:
    import torch
    from sklearn.datasets import load_sample_images

    from edgepack.convert.torch_to_onnx import export_to_onnx
    from edgepack.examples.mobilenet import mobilenet_like

    path = export_to_onnx(mobilenet_like(classes=1000), (torch.zeros(1, 3, 224, 224),), work / "mobilenet.onnx",
                          input_names=["image"]).path
    rng = np.random.default_rng(0)
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    crops = []
    for photo in load_sample_images().images:
        for _ in range(48):
            y, x = rng.integers(0, photo.shape[0] - 224), rng.integers(0, photo.shape[1] - 224)
            crop = (photo[y:y + 224, x:x + 224] / 255.0 - mean) / std
            crops.append(crop.transpose(2, 0, 1).astype(np.float32))
    crops = np.stack(crops)[rng.permutation(96)]
    return path, Dataset({"image": crops[:64]}), Dataset({"image": crops[64:]})


def latency_ms(path: Path, runs: int) -> float:
    m = LocalRunner().run([RunRequest(path, threads=1, warmup=5, runs=runs, timeout_s=600)])[0]
    if not m.ok:
        raise RuntimeError(m.error)
    return float(m.p50_ms or 0.0)


def ort_default(src: Path, out: Path, calib: Dataset) -> Path:
    from onnxruntime.quantization import quantize_static

    from edgepack.compress.quantize_onnx import _Reader

    feeds = [{"image": calib.inputs["image"][i:i + 1]} for i in range(len(calib))]
    quantize_static(str(src), str(out), _Reader(feeds))
    return out


def tflite_default(saved_model: Path, out: Path, feeds: list[dict[str, np.ndarray]]) -> Path:
    from edgepack.quiet import captured_output, import_tensorflow

    tf = import_tensorflow()
    with captured_output():
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))  # type: ignore[attr-defined]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]  # type: ignore[attr-defined]
        converter.representative_dataset = lambda: iter(feeds)
        out.write_bytes(converter.convert())
    return out


def run_case(name: str, onnx_path: Path, calib: Dataset, held_out: Dataset, work: Path, runs: int) -> list[tuple]:
    host = ProfileRegistry.discover().get("host")
    handle = load_model(onnx_path)
    source = engine_for(handle)
    base_tflite = q.TfliteQuantizer.make_base(handle, work, host, calib)  # onnx2tf SavedModel, checked
    base_onnx = q.OnnxQuantizer.make_base(handle, work, host, calib)
    from edgepack.compress.quantize_tflite import float_tflite, signature_inputs

    signature = signature_inputs(base_tflite.path)
    feeds = [dict(zip(signature, [b.from_source(calib.inputs[b.source_name][i:i + 1]) for b in base_tflite.inputs],
                      strict=True)) for i in range(len(calib))]
    candidates = [
        ("fp32 onnx", onnx_path, base_onnx),
        ("fp32 tflite", float_tflite(base_tflite.path, work / f"{name}_fp32.tflite"), base_tflite),
        ("edgepack int8 tflite", q.quantize_model(handle, calib, host, work / f"{name}_ep.tflite", fmt="tflite",
                                                  eval_data=held_out).artifact.path, base_tflite),
        ("edgepack int8 onnx", q.quantize_model(handle, calib, host, work / f"{name}_ep.onnx", fmt="onnx",
                                                eval_data=held_out).artifact.path, base_onnx),
        ("ORT quantize_static defaults", ort_default(onnx_path, work / f"{name}_ort.onnx", calib), base_onnx),
        ("TFLite converter default int8", tflite_default(base_tflite.path, work / f"{name}_tfl.tflite", feeds),
         base_tflite),
    ]
    rows = []
    for label, path, base in candidates:
        engine = engine_for_file(path, "onnx" if path.suffix == ".onnx" else "tflite")
        report = compare(label, source, engine, base.inputs, base.outputs, held_out, "held-out", host.tolerances,
                         max_samples=len(held_out))
        quality = (f"{100 * report.accuracy:.2f}%" if report.accuracy is not None else
                   f"cos {report.outputs[0].cosine:.6f}, top-1 {100 * (report.top1_agreement or 0):.1f}%")
        rows.append((name, label, human_bytes(path.stat().st_size), quality, f"{latency_ms(path, runs):.3f}"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skip-mobilenet", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepack-qbench-") as tmp:
        work = Path(tmp)
        rows += run_case("digits CNN", *digits_case(work), work, runs=300)
        if not args.skip_mobilenet:
            rows += run_case("MobileNetV2-like 224", *mobilenet_case(work), work, runs=30)
    print("int8 quantization, side by side (latency: median of single-thread runs, harness in a fresh process, "
          "this x86_64 machine)")
    print(table(["model", "variant", "size", "accuracy / fidelity to fp32", "p50 ms"], rows, "llrlr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
