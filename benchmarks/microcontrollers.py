"""Microcontrollers and NPUs: what the real toolchains say of the digits CNN and the MobileNetV2-like net.

    .venv/bin/python benchmarks/microcontrollers.py

Each model is built with ``edgepack build --device D --prune 0`` for the Ethos-U55 microcontroller
(alif-e7: Vela + TFLite Micro), the Cortex-M7 (stm32h7) and the ESP32-S3 (TFLite Micro), sharing one
cache (one int8 artifact per model). Printed per model and profile: ops on the NPU (Vela), SRAM (the
arena plus the firmware's), flash (the model plus the firmware), the arena TFLite Micro planned, the
estimated latency and where it comes from, and the accuracy under TFLite Micro beside LiteRT's (digits:
labelled held-out digits; MobileNet-like: random weights, so top-1 agreement with the original).
Then the same int8 models with float input and output, compiled by Vela through ``edgepack inspect``:
which ops fall back to the Cortex-M55.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edgepack.cli import main as edgepack_main
from edgepack.render import table

PROFILES = ("alif-e7", "stm32h7", "esp32-s3")


def run(*argv: str) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = edgepack_main([*argv, "--json"])
    if code != 0:
        raise SystemExit(f"edgepack {' '.join(argv)} exited {code}")
    return json.loads(out.getvalue())


def models(folder: Path) -> list[tuple[str, Path, list[str], list[str]]]:
    """(name, model, build data flags, quantize data flags)."""
    import torch

    from edgepack.convert.torch_to_onnx import export_to_onnx
    from edgepack.examples.digits import load_digits_data
    from edgepack.examples.mobilenet import mobilenet_like
    from edgepack.examples.real_models import real_inputs

    digits = load_digits_data()
    np.savez(folder / "calib.npz", x=digits.x_train[:300])
    np.savez(folder / "eval.npz", x=digits.x_test, y=digits.y_test)
    mobilenet = export_to_onnx(mobilenet_like(), (torch.zeros(1, 3, 32, 32),), folder / "mobilenet.onnx",
                               input_names=["image"]).path
    photos = real_inputs(SimpleNamespace(data="photos"), folder / "photos", 64)
    digits_flags = ["--calib", str(folder / "calib.npz"), "--eval", str(folder / "eval.npz")]
    return [("digits CNN", Path("edgepack/examples/digits_cnn.onnx"), digits_flags, digits_flags),
            ("MobileNetV2-like 32x32", mobilenet, ["--calib", str(photos)], ["--calib", str(photos)])]


def accuracy(check: dict) -> str:
    if "accuracy" in check:
        return f"{check['accuracy']:.2%}"
    figures = [o.get("figure", "") for o in (check.get("outputs") or {}).values()]
    return "; ".join(figures) or "-"


def main() -> None:
    folder = Path(tempfile.mkdtemp(prefix="edgepack-mcu-bench-"))
    rows, fallbacks = [], []
    for name, model, build_flags, quantize_flags in models(folder):
        for device in PROFILES:
            data = run("build", str(model), "--device", device, *build_flags, "--prune", "0", "--cache",
                       str(folder / "cache"), "-o", str(folder / "dist"))
            chosen, check = data["chosen"], data["checked_on_device"] or {}
            t = chosen["toolchain"]
            vela = t.get("vela")
            host = f"{chosen['accuracy']:.2%}" if chosen.get("accuracy") is not None else \
                f"drop {chosen['accuracy_drop']:.2f} pts"
            rows.append((name, device, f"{vela['npu_ops']}/{vela['ops']}" if vela else "- (CPU)",
                         f"{t['sram_kb']:.1f}", f"{t['flash_kb']:.1f}", f"{t['arena_bytes'] / 1024:.1f}",
                         f"{chosen['latency_ms']:.3f}", chosen["latency_source"].split(" (")[0],
                         accuracy(check), host))
        float_io = folder / f"{model.stem}_float_io.tflite"
        run("quantize", str(model), *quantize_flags, "--format", "tflite", "--io-dtype", "float32",
            "-o", str(float_io))
        found = run("inspect", str(float_io), "--device", "alif-e7")["toolchain"]["vela"]
        cpu = ", ".join(f"{o['op']} ({o['name'][:30]})" for o in found["cpu_ops"]) or "none"
        fallbacks.append((name, f"{found['npu_ops']}/{found['ops']}", cpu, f"{found['inference_ms']:.3f}"))
    print(table(["model", "profile", "ops on NPU", "SRAM KB", "flash KB", "arena KB", "est. ms", "latency from",
                 "accuracy (TFLM)", "accuracy (LiteRT)"], rows, "llrrrrrlrr"))
    print("\nSRAM: arena (Vela's SRAM for the NPU profile, when larger) + the firmware's; flash: the model "
          "(Vela's for the NPU) + the firmware's, from each profile")
    print("\nint8 with float input/output, compiled by Vela for alif-e7 (ethos-u55-256):")
    print(table(["model", "ops on NPU", "on the Cortex-M55", "NPU ms"], fallbacks, "lrlr"))
    print(f"\n(work folder: {folder})", file=sys.stderr)


if __name__ == "__main__":
    main()
