"""aarch64 against x86: the digits CNN's fp32 and int8 artifacts, TFLite and ONNX, on the 360 held-out digits.

    sudo .venv/bin/python benchmarks/arm_parity.py      (root: it starts the emulated board)

Each artifact runs the held-out digits twice through the same harness: on this machine with the venv's
runtimes (x86_64: ai_edge_litert, onnxruntime), and on the emulated Raspberry Pi OS board with its own
(aarch64: Debian 12's Python 3.11 and numpy 1.24, tflite-runtime 2.14.0, onnxruntime 1.20.1). Printed:
the largest absolute difference of the scores (int8 outputs dequantized), the top-1 agreement of the two,
and the accuracy of each. Then ``edgepack build --device rpi4`` runs on the board for int8 TFLite and
int8 ONNX (Arm's S8S8), and the accuracy its on-board check recorded is printed beside the host's check.
The int8 artifacts here are built for the rpi4 profile (aarch64): ONNX with signed int8 activations.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgepack.artifact import Artifact
from edgepack.cli import main as edgepack_main
from edgepack.compress.quantize import quantize_model
from edgepack.compress.quantizer import identity_bindings
from edgepack.convert.convert import convert_model
from edgepack.data import load_dataset
from edgepack.device_accuracy import write_inputs
from edgepack.engines import dequantize_output, engine_for
from edgepack.examples.digits import load_digits_data
from edgepack.model import load_model
from edgepack.profiles import ProfileRegistry
from edgepack.render import table
from edgepack.runners.base import Runner, RunRequest
from edgepack.runners.emulated import EmulatedBoard
from edgepack.runners.local import LocalRunner

SOURCE = Path(__file__).resolve().parents[1] / "edgepack" / "examples" / "digits_cnn.onnx"


def artifacts(work: Path, calib_path: Path, eval_path: Path) -> dict[str, Artifact]:
    rpi4 = ProfileRegistry.discover([]).get("rpi4")
    handle = load_model(SOURCE)
    calib = load_dataset(calib_path, handle.inputs)
    held_out = load_dataset(eval_path, handle.inputs, purpose="evaluation")
    inputs, outputs = identity_bindings(handle, engine_for(handle), calib.batch([s.name for s in handle.inputs], 0))
    made = {"onnx fp32": Artifact(SOURCE, "onnx", "as given", handle.sha256, inputs, outputs),
            "tflite fp32": convert_model(handle, "tflite", work / "fp32.tflite", rpi4, data=calib).artifact}
    for fmt in ("onnx", "tflite"):
        made[f"{fmt} int8"] = quantize_model(load_model(SOURCE), calib, rpi4, work / f"int8.{fmt}", fmt=fmt,
                                             eval_data=held_out, max_accuracy_drop=3.0).artifact
    return made


def scores(runner: Runner, artifact: Artifact, inputs: Path) -> np.ndarray:
    request = RunRequest(artifact.path, threads=4, warmup=0, runs=1, inputs=inputs, want_outputs=True, timeout_s=900)
    measurement = runner.run([request])[0]
    if not measurement.ok:
        raise SystemExit(f"{artifact.path.name} on {runner.label}: {measurement.error}")
    binding = artifact.outputs[0]
    detail = {"quantization": (binding.scale or 0.0, binding.zero_point or 0)}
    return dequantize_output(np.asarray(measurement.outputs["output_0"]), detail).reshape(360, -1).astype(np.float64)


def build_on_board(board: EmulatedBoard, fmt: str, calib: Path, held_out: Path, work: Path) -> dict:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = edgepack_main(["build", str(SOURCE), "--device", "rpi4", *board.flags(), "--calib", str(calib),
                              "--eval", str(held_out), "--formats", fmt, "--precisions", "int8", "--prune", "0",
                              "--threads", "4", "--cache", str(work / f"cache-{fmt}"), "-o", str(work / f"dist-{fmt}"),
                              "--json"])
    if code != 0:
        raise SystemExit(f"build --formats {fmt} on the board: exit {code}")
    return json.loads(out.getvalue())


def main() -> int:
    digits = load_digits_data()
    with tempfile.TemporaryDirectory(prefix="edgepack-arm-parity-") as tmp:
        work = Path(tmp)
        np.savez(work / "calib.npz", x=digits.x_train[:300])
        np.savez(work / "eval.npz", x=digits.x_test, y=digits.y_test)
        made = artifacts(work, work / "calib.npz", work / "eval.npz")
        handle = load_model(SOURCE)
        held_out = load_dataset(work / "eval.npz", handle.inputs, purpose="evaluation")
        started = time.perf_counter()
        board = EmulatedBoard.start(work / "board", say=lambda line: print(line, file=sys.stderr))
        print(f"board started in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        try:
            rows, reference = [], None
            for name, artifact in made.items():
                inputs = work / f"inputs-{name.replace(' ', '-')}.npz"
                write_inputs(artifact, held_out, inputs)
                x86, arm = scores(LocalRunner(), artifact, inputs), scores(board.runner(), artifact, inputs)
                reference = x86 if reference is None else reference  # the original (onnx fp32 on x86)
                rows.append((name, f"{np.abs(x86 - arm).max():.3g}", f"{np.mean(x86.argmax(1) == arm.argmax(1)):.2%}",
                             f"{np.abs(x86 - reference).max():.3g}", f"{np.abs(arm - reference).max():.3g}",
                             f"{np.mean(x86.argmax(1) == digits.y_test):.2%}",
                             f"{np.mean(arm.argmax(1) == digits.y_test):.2%}"))
            print("the digits CNN on 360 held-out digits: aarch64 (emulated Raspberry Pi OS board) against x86_64")
            print(table(["artifact", "max |x86 - arm|", "top-1 agreement", "max |x86 - original|",
                         "max |arm - original|", "accuracy x86", "accuracy arm"], rows, "lrrrrrr"))
            print("(scores are logits, about -20 to 20; the original: the fp32 ONNX model on x86)")
            builds = []
            for fmt in ("tflite", "onnx"):
                result = build_on_board(board, fmt, work / "calib.npz", work / "eval.npz", work)
                check, chosen = result["checked_on_device"], result["chosen"]
                builds.append((f"{fmt} int8", f"{check['accuracy']:.2%}", f"{check['source_accuracy']:.2%}",
                               f"{check['accuracy_drop_pts']:.2f}", f"{chosen['accuracy_drop']:.2f}",
                               f"~{chosen['predicted_ms']:.3f} (predicted)"))
            print()
            print("edgepack build --device rpi4 on the emulated board: the chosen int8 artifact's check on the board")
            print(table(["build", "accuracy on board", "original", "drop on board (pts)", "drop on host (pts)",
                         "p50 ms"], builds, "lrrrrr"))
        finally:
            board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
