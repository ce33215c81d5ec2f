"""How long ``edgepack build`` takes for a real model, first with an empty cache and then rerun with its records.

    .venv/bin/python benchmarks/build_time.py [--models ppocrv5_det] [--flags "--prune 0"]

Each build runs as a user runs it (``python -m edgepack.cli build MODEL --calib DATA --prune 0 --json``, a
fresh process; everything else default), measuring on a real OpenSSH server on loopback (this machine,
2 cores; profile ``host``). The first build starts from an empty cache (every conversion, calibration
and measurement done); the rerun uses the same cache (the records and artifacts the first one left).
Prints, per model: the two wall times, the candidates and measurements, and the first build's stage
times (``--json``'s ``stages``), summed by stage; the first build's ``--json`` is kept as
``~/.cache/edgepack/bench-build/build-MODEL.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from search import build, model_argv

from edgepack.render import table
from edgepack.runners.loopback import SshDevice


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="ppocrv5_det")
    parser.add_argument("--flags", default="--prune 0", help="build flags (default: '--prune 0')")
    parser.add_argument("--timeout", type=float, default=1800.0)
    args = parser.parse_args()
    rows, stage_rows = [], []
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-build-") as tmp:
        work = Path(tmp)
        device = SshDevice(work / "device").start()
        try:
            for name in args.models.split(","):
                def say(line: str, name: str = name) -> None:
                    print(f"  [{name}] {line}", file=sys.stderr, flush=True)

                data = Path.home() / ".cache" / "edgepack" / "bench-build"
                argv = model_argv(name, data)
                cache = work / f"cache-{name}"
                start = time.perf_counter()
                first, first_s = build(argv, device, cache, work / "dist", args.flags.split(), args.timeout, say)
                rerun, rerun_s = build(argv, device, cache, work / "dist", args.flags.split(), args.timeout, say)
                say(f"first {first_s:.0f} s, rerun {rerun_s:.1f} s ({time.perf_counter() - start:.0f} s in all)")
                if first is None or rerun is None:
                    continue
                (data / f"build-{name}.json").write_text(json.dumps(first))  # every stage, with what it worked on
                measured = sum(r["latency_source"] == "measured" for r in first["candidates"])
                rows.append([name, f"{Path(argv[0]).stat().st_size / 1e6:.2f}", str(len(first["candidates"])),
                             str(measured), f"{first_s:.0f}", f"{rerun_s:.1f}", str(rerun["measurements"]["new"]),
                             first["chosen"]["label"] if first["chosen"] else "nothing"])
                by_stage: dict[str, float] = {}
                for stage in first.get("stages") or ():
                    by_stage[stage["stage"]] = by_stage.get(stage["stage"], 0.0) + stage["seconds"]
                stage_rows += [[name, stage, f"{seconds:.1f}"]
                               for stage, seconds in sorted(by_stage.items(), key=lambda kv: -kv[1])]
        finally:
            device.kill()
    print(table(["model", "MB", "candidates", "measured", "first build s", "rerun s",
                 "rerun's new measurements", "chose"], rows))
    print()
    print(table(["model", "stage (first build)", "seconds"], stage_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
