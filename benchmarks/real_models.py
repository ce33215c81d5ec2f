"""Every edgepack command on every real model of the corpus (edgepack/examples/real_models.py): the
outcome of each as a user sees it — ok, refused (exit 2 with its one line) or a TRACEBACK (a bug).

    .venv/bin/python benchmarks/real_models.py                       # inspect and convert, every model
    .venv/bin/python benchmarks/real_models.py --commands inspect --models magika,ppocrv5_rec

Each command runs as `python -m edgepack.cli ...` in a fresh process, with a timeout, in a scratch
directory; the models are downloaded once into ~/.cache/edgepack/test-models.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edgepack.examples.real_models import CORPUS, RealModel, fetch, real_inputs

COMMANDS = ("inspect", "convert", "quantize", "prune", "profile", "build")


def argv_for(command: str, model: RealModel, path: Path, work: Path, data: Path) -> list[str]:
    shape = ["--input-shape", model.input_shape] if model.input_shape else []
    prep = list(model.preprocessing) if model.data != "bytes" else []
    fmt = "onnx" if model.suffix == ".onnx" else "tflite"
    if command == "inspect":
        return ["inspect", str(path), "--device", "rpi4", *shape]
    if command == "convert":
        target = "tflite" if fmt == "onnx" else "onnx"
        return ["convert", str(path), "--to", target, "-o", str(work / f"{model.name}.{target}"), "--calib",
                str(data), *prep, "--json", *shape]
    if command == "quantize":
        return ["quantize", str(path), "--calib", str(data), *prep, "--format", fmt,
                "-o", str(work / f"{model.name}_int8.{fmt}"), "--json", *shape]
    if command == "prune":
        return ["prune", str(path), "--calib", str(data), *prep, "--ratio", "0.25", "--distill-epochs", "2",
                "--time-budget", "30", "-o", str(work / f"{model.name}_pruned.onnx"), "--json", *shape]
    if command == "profile":
        return ["profile", str(path), "--device", "host", "--runs", "20", "--json", *shape]
    return ["build", str(path), "--device", "host", "--calib", str(data), *prep, "--prune", "0",
            "--precisions", "fp32,int8", "--max-measurements", "3", "--runs", "20", "-o", str(work / "dist"),
            "--cache", str(work / "cache"),
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


def _worst(outputs: list[dict[str, Any]]) -> str:
    """The worst output's deciding figure, as edgepack's fidelity module words it."""
    from edgepack.fidelity import OutputDrift

    drifts = [OutputDrift(**o) for o in outputs]
    if not drifts:
        return "-"
    judged = [(1 - d.agreement if d.agreement is not None else d.channel_error_rel, d) for d in drifts]
    return max(judged, key=lambda j: j[0])[1].describe()


def figures(command: str, done: subprocess.CompletedProcess[str] | None) -> dict[str, Any]:
    """What the JSON of a successful run says: fidelity, size ratio, p50."""
    if done is None or done.returncode != 0:
        return {}
    try:
        data = json.loads(done.stdout)
    except json.JSONDecodeError:
        return {}
    if command == "quantize":
        return {"fidelity": _worst(data["fidelity"]["outputs"]), "size_ratio": data["size_ratio"],
                "artifact": data["artifact"]["path"]}
    if command == "convert":
        return {"fidelity": _worst(data["validation"]["outputs"]) if data.get("validation") else "-"}
    if command == "profile":
        return {"p50_ms": (data.get("latency_ms") or {}).get("p50")}
    if command == "prune":
        stages = data["stages"]
        return {"fidelity": stages[-1].get("vs_original", "-"),
                "size_ratio": stages[-1]["size_bytes"] / stages[0]["size_bytes"]}
    if command == "build":
        best = data.get("chosen") or {}
        drop = best.get("accuracy_drop")
        return {"fidelity": (f"{best['label']}: drop {drop:.2f} pts" if drop is not None else best["label"])
                if best else "-"}
    return {}


def _cell(value: Any, fmt: str = "{:.2f}") -> str:
    return "-" if value is None else fmt.format(value) if isinstance(value, float) else str(value)


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
            found: dict[str, dict[str, Any]] = {}
            for command in commands:
                done, seconds = _run(argv_for(command, model, path, Path(tmp), data), tmp, args.timeout)
                found[command] = figures(command, done)
                if command == "profile" and found.get("quantize", {}).get("artifact"):
                    # int8 and fp32 measured side by side, in this run
                    int8, _ = _run(argv_for(command, model, Path(found["quantize"]["artifact"]), Path(tmp), data),
                                   tmp, args.timeout)
                    fp32_ms, int8_ms = found[command].get("p50_ms"), figures(command, int8).get("p50_ms")
                    if fp32_ms and int8_ms:
                        found[command]["int8/fp32"] = int8_ms / fp32_ms
                f = found[command]
                rows.append((model.name, command, f"{seconds:.1f}", outcome(done), f.get("fidelity", ""),
                             _cell(f.get("size_ratio")), _cell(f.get("int8/fp32")), _cell(f.get("p50_ms"), "{:.3f}")))
                print("  ".join([f"{rows[-1][0]:34}", f"{command:8}", f"{rows[-1][2]:>6} s", rows[-1][3][:90],
                                 *[c for c in rows[-1][4:] if c not in ("", "-")]]), flush=True)
    print()
    from edgepack.render import table

    print(table(["model", "command", "s", "outcome", "fidelity (worst output)", "size ratio", "int8/fp32 p50",
                 "p50 ms (host)"], [(r[0], r[1], r[2], r[3][:80], *r[4:]) for r in rows], "llrllrrr"))
    tracebacks = sum(r[3].startswith(("TRACEBACK", "TIMEOUT")) for r in rows)
    print(f"\n{len(rows)} runs: {sum(r[3] == 'ok' for r in rows)} ok, "
          f"{sum(r[3].startswith('refused') for r in rows)} refused, {tracebacks} tracebacks or timeouts")


def _run(argv: list[str], cwd: str, timeout: float) -> tuple[subprocess.CompletedProcess[str] | None, float]:
    start = time.perf_counter()
    try:
        done: subprocess.CompletedProcess[str] | None = subprocess.run(
            [sys.executable, "-m", "edgepack.cli", *argv], capture_output=True, text=True, timeout=timeout, cwd=cwd)
    except subprocess.TimeoutExpired:
        done = None
    return done, time.perf_counter() - start


if __name__ == "__main__":
    main()
