"""Every edgepack command on every real model of the corpus (edgepack/examples/real_models.py): the
outcome of each as a user sees it — ok, refused (exit 2 with its one line) or a TRACEBACK (a bug).

    .venv/bin/python benchmarks/real_models.py                       # inspect and convert, every model
    .venv/bin/python benchmarks/real_models.py --commands inspect --models magika,ppocrv5_rec

Each command runs as `python -m edgepack.cli ...` in a fresh process, with a timeout, in a scratch
directory; the models are downloaded once into ~/.cache/edgepack/test-models.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgepack.examples.real_models import CORPUS, RealModel, fetch, real_inputs

COMMANDS = ("inspect", "convert", "quantize", "build")


def argv_for(command: str, model: RealModel, path: Path, work: Path, data: Path) -> list[str]:
    shape = ["--input-shape", model.input_shape] if model.input_shape else []
    prep = list(model.preprocessing) if model.data != "bytes" else []
    fmt = "onnx" if model.suffix == ".onnx" else "tflite"
    if command == "inspect":
        return ["inspect", str(path), "--device", "rpi4", *shape]
    if command == "convert":
        target = "tflite" if fmt == "onnx" else "onnx"
        return ["convert", str(path), "--to", target, "-o", str(work / f"{model.name}.{target}"), *shape]
    if command == "quantize":
        return ["quantize", str(path), "--calib", str(data), *prep, "--format", fmt,
                "-o", str(work / f"{model.name}_int8.{fmt}"), "--json", *shape]
    return ["build", str(path), "--device", "host", "--calib", str(data), *prep, "--prune", "0",
            "--max-measurements", "4", "--runs", "20", "-o", str(work / "dist"), "--cache", str(work / "cache"),
            "--json", *shape]


def outcome(done: subprocess.CompletedProcess[str] | None) -> str:
    if done is None:
        return "TIMEOUT"
    if "Traceback" in done.stderr or done.returncode not in (0, 2):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"TRACEBACK ({done.returncode}): {last[:100]}"
    if done.returncode == 2:
        return "refused: " + done.stderr.strip().splitlines()[-1].removeprefix("edgepack: error: ")[:110]
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--models", help="comma-separated names (default: the whole corpus)")
    parser.add_argument("--timeout", type=float, default=900.0)
    args = parser.parse_args()
    commands = args.commands.split(",")
    models = [m for m in CORPUS if not args.models or m.name in args.models.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepack-real-") as tmp:
        for model in models:
            path = fetch(model.name)
            data = real_inputs(model, Path(tmp) / "data" / model.name)
            for command in commands:
                start = time.perf_counter()
                try:
                    done = subprocess.run([sys.executable, "-m", "edgepack.cli",
                                           *argv_for(command, model, path, Path(tmp), data)],
                                          capture_output=True, text=True, timeout=args.timeout, cwd=tmp)
                except subprocess.TimeoutExpired:
                    done = None
                rows.append((model.name, command, f"{time.perf_counter() - start:.1f}", outcome(done)))
                print(f"{rows[-1][0]:34} {rows[-1][1]:8} {rows[-1][2]:>6} s  {rows[-1][3]}", flush=True)
    tracebacks = sum(r[3].startswith(("TRACEBACK", "TIMEOUT")) for r in rows)
    print(f"\n{len(rows)} runs: {sum(r[3] == 'ok' for r in rows)} ok, "
          f"{sum(r[3].startswith('refused') for r in rows)} refused, {tracebacks} tracebacks or timeouts")


if __name__ == "__main__":
    main()
