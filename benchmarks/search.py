"""How well ``edgepack build``'s search does against measuring everything, on the SSH device.

    .venv/bin/python benchmarks/search.py [--runs 100] [--models digits,mobilenet]

For each model: run the build (strategy + predictor, fresh records), then build every artifact of
the same space and measure EVERY candidate on the same device in the same run (fresh harness process
each, three rounds interleaved: this machine is shared and noisy). Printed per model: measurements
the build used against the exhaustive count; the chosen
candidate's latency in the exhaustive run against the best feasible one there; and the share of
candidates whose latency the build's final predictor put within +-10% of the exhaustive measurement.

The device is a real OpenSSH server on loopback (this machine, 2 cores), profile ``host``: formats
onnx and tflite; fp32, fp16 (TFLite), int8, dynamic; pruning 0/0.3/0.5/0.7; 1 thread (--threads
1,2 adds the second: on this shared 2-vCPU machine its p50s are bimodal, see the noise column). The
build runs with its defaults (at most 12 measurements, then the contenders' confirmation rounds).
digits: the bundled CNN with its held-out split (accuracy limit 1 point). mobilenet: the
MobileNetV2-like model at 3x96x96 with random weights, so it has no accuracy to keep: the limit is
lifted (latency-only search) and it is calibrated on random images.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgepack.data import Dataset
from edgepack.model import load_model
from edgepack.pipeline import Build, BuildOptions
from edgepack.profiles import ProfileRegistry
from edgepack.render import table
from edgepack.runners.base import RunRequest
from edgepack.runners.factory import SshOptions
from edgepack.runners.loopback import SshDevice, keygen
from edgepack.search.space import Constraints

EXAMPLE = Path(__file__).resolve().parents[1] / "edgepack" / "examples" / "digits_cnn.onnx"


def digits_case(work: Path) -> tuple[Path, Dataset, Dataset, Constraints]:
    from edgepack.examples.digits import load_digits_data

    data = load_digits_data()
    return (EXAMPLE, Dataset({"image": data.x_train[:300]}), Dataset({"image": data.x_test}, data.y_test),
            Constraints(max_accuracy_drop=1.0))


def mobilenet_case(work: Path) -> tuple[Path, Dataset, Dataset, Constraints]:
    import torch

    from edgepack.convert.torch_to_onnx import export_to_onnx
    from edgepack.examples.mobilenet import mobilenet_like

    path = export_to_onnx(mobilenet_like(), (torch.zeros(1, 3, 96, 96),), work / "mobilenet.onnx",
                          input_names=["image"]).path
    rng = np.random.default_rng(0)
    images = rng.normal(0, 1, (260, 3, 96, 96)).astype(np.float32)
    return path, Dataset({"image": images[:200]}), Dataset({"image": images[200:]}), Constraints(max_accuracy_drop=100)


def run_case(name: str, case: tuple[Path, Dataset, Dataset, Constraints], device: SshDevice, work: Path,
             runs: int, rounds: int, threads: list[int], saved: list[dict[str, object]]) -> list[list[str]]:
    model, calib, eval_data, constraints = case
    profile = ProfileRegistry.discover().get("host")
    ssh = SshOptions((device.target,), device.known_hosts, device.client_key, False, device.python)
    options = BuildOptions(constraints, runs=runs, threads=threads, output_dir=work / "dist",
                           cache_dir=work / f"cache-{name}")
    (work / f"cache-{name}" / "records.jsonl").unlink(missing_ok=True)  # built artifacts may be reused

    def say(line: str) -> None:
        print(f"  [{name}] {line}", file=sys.stderr, flush=True)

    build = Build(load_model(model), profile, options, ssh, calib, eval_data, say)
    result = build.run()
    used = result.counts.new.get("latency", 0)  # search and confirmation; not the op profile or accuracy check
    assert result.chosen is not None and result.predictor is not None

    # exhaustive: every artifact built, every candidate measured ROUNDS times (rounds interleaved, a
    # fresh harness process each), on the same device, now; truth = the median of its p50s
    from edgepack.search.estimate import features_of

    runner = build.runners[0]
    todo = []
    for c in result.candidates:
        if c.error and not c.built:
            continue
        built = build.artifacts.local.build(c.plan)
        if not c.built:  # the build never built it: give the predictor the real features now
            c.features = features_of(built.artifact.path, built.artifact.format, c.plan, profile)
        todo.append((c, built))
    samples: dict[str, list[float]] = {c.plan.key: [] for c, _ in todo}
    rss: dict[str, float] = {}
    for _ in range(rounds):
        for c, built in todo:
            m = runner.run([RunRequest(built.artifact.path, threads=c.plan.threads,
                                       warmup=profile.benchmark.warmup, runs=runs)])[0]
            if m.ok and m.p50_ms is not None:
                samples[c.plan.key].append(m.p50_ms)
                rss[c.plan.key] = m.result.get("peak_rss_mb") or 0.0
            else:
                say(f"exhaustive: {c.plan.label}: {m.error}")
    runner.close()
    truth = {k: statistics.median(v) for k, v in samples.items() if v}
    feasible = {c.plan.key: not build.options.constraints.violations(built.size_mb, rss.get(c.plan.key),
                                                                     truth[c.plan.key], built.accuracy_drop)
                for c, built in todo if c.plan.key in truth}
    spread = statistics.median(max(v) / min(v) - 1 for v in samples.values() if len(v) > 1) if rounds > 1 else 0.0
    for c in result.candidates:
        if c.plan.key in truth:
            saved.append({"model": name, "plan": c.plan.to_dict(), "features": c.features.__dict__,
                          "p50_ms": truth[c.plan.key], "feasible": feasible[c.plan.key],
                          "measured_by_build": c.measured})
    best_key = min((k for k in truth if feasible[k]), key=truth.__getitem__)
    best = next(c for c in result.candidates if c.plan.key == best_key)
    chosen_truth = truth[result.chosen.plan.key]
    errors = [abs(result.predictor.latency_ms(c.features) - truth[c.plan.key]) / truth[c.plan.key]
              for c in result.candidates if c.plan.key in truth]
    within = sum(e <= 0.10 for e in errors) / len(errors)
    before = result.predictor_errors  # each measured candidate, predicted just before it was measured
    return [[name, str(len(result.candidates)), str(used), str(len(truth)), f"{used / len(truth):.0%}",
             result.chosen.plan.label, f"{chosen_truth:.4f}", best.plan.label, f"{truth[best_key]:.4f}",
             f"{(chosen_truth / truth[best_key] - 1):+.1%}", f"{within:.0%}",
             f"{statistics.median(errors):.0%}", f"{statistics.median(before):.0%}", f"{spread:.0%}"]]


def pool_case(name: str, case: tuple[Path, Dataset, Dataset, Constraints], devices: list[SshDevice], work: Path,
              runs: int, threads: list[int]) -> list[list[str]]:
    """The same build on one board and on ``len(devices)`` boards (artifacts built once, beforehand; fresh
    records each time): wall seconds of measuring and of the whole build, and the choice."""
    model, calib, eval_data, constraints = case
    profile = ProfileRegistry.discover().get("host")
    work.mkdir(parents=True, exist_ok=True)
    known = work / "known_hosts"
    known.write_text("".join(d.known_hosts_line() for d in devices))
    rows = []
    for count in (0, 1, len(devices)):  # 0: a warm-up that builds every artifact the search asks for
        boards = devices[:max(count, 1)]
        ssh = SshOptions(tuple(d.target for d in boards), known, devices[0].client_key, False, devices[0].python)
        options = BuildOptions(constraints, runs=runs, threads=threads, output_dir=work / "dist",
                               cache_dir=work / f"cache-{name}")
        (work / f"cache-{name}" / "records.jsonl").unlink(missing_ok=True)
        tag = f"  [{name} x{len(boards)}]"
        start = time.perf_counter()
        result = Build(load_model(model), profile, options, ssh, calib, eval_data,
                       lambda line, tag=tag: print(tag, line, file=sys.stderr, flush=True)).run()
        wall = time.perf_counter() - start
        if count:
            assert result.chosen is not None
            rows.append([name, str(len(boards)), str(sum(result.counts.new.values())),
                         f"{result.counts.seconds:.1f}", f"{wall:.1f}", result.chosen.plan.label])
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300, help="timed runs per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="exhaustive: measurements per candidate")
    parser.add_argument("--models", default="digits,mobilenet")
    parser.add_argument("--threads", default="1", help="thread counts in the space (default 1: on this shared "
                        "2-vCPU machine a 2-thread p50 flips between two modes from one process to the next)")
    parser.add_argument("--work", type=Path, help="keep built artifacts here between runs (default: a temp dir)")
    parser.add_argument("--save", type=Path, help="write every candidate's features and measured p50 as JSON")
    parser.add_argument("--hosts", type=int, default=1, help="N > 1: the build on one board and on a pool of N "
                        "loopback boards, side by side (wall time of measuring, same choice?), instead")
    args = parser.parse_args()
    if args.hosts > 1:
        return compare_pools(args)
    cases = {"digits": digits_case, "mobilenet": mobilenet_case}
    rows: list[list[str]] = []
    saved: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-search-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        device = SshDevice(Path(tmp) / "device").start()
        try:
            for name in args.models.split(","):
                rows += run_case(name, cases[name](work), device, work / name, args.runs, args.rounds,
                                 [int(t) for t in args.threads.split(",")], saved)
        finally:
            device.kill()
    if args.save:
        args.save.write_text(json.dumps(saved, indent=1))
    print(table(["model", "candidates", "build measured", "exhaustive", "share", "build chose", "its p50 ms",
                 "exhaustive best", "best p50 ms", "chosen vs best", "predictor within 10%", "median error",
                 "error before measuring", "noise"], rows, "lrrrrlrlrrrrrr"))
    print(f"p50 figures: the median of {args.rounds} interleaved exhaustive measurements per candidate (same "
          "device, same run). build measured: the build's measurements of candidates, confirmation rounds "
          "included, the chosen one's per-op profile run not. predictor within 10% / median error: the build's "
          "final fit on every candidate. error before measuring: the build's own figure, each candidate it "
          "measured predicted just before. noise: median spread (max/min - 1) of a candidate's p50s.")
    return 0


def compare_pools(args: argparse.Namespace) -> int:
    cases = {"digits": digits_case, "mobilenet": mobilenet_case}
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-pool-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        key = Path(tmp) / "client_ed25519"
        keygen(key)
        devices = [SshDevice(Path(tmp) / f"board{i}", client_key=key).start() for i in range(args.hosts)]
        try:
            for name in args.models.split(","):
                rows += pool_case(name, cases[name](work), devices, work / name, args.runs,
                                  [int(t) for t in args.threads.split(",")])
        finally:
            for d in devices:
                d.kill()
    print(table(["model", "boards", "measurements", "measuring s", "build s", "chosen"], rows, "lrrrrl"))
    print("measuring s: wall time inside the Measurer (transfers, lock, harness runs), artifacts already built; "
          "build s: the whole build. Boards: loopback sshd on this 2-vCPU machine, one harness thread each.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
