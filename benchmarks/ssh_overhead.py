"""Per-measurement overhead of SshRunner over LocalRunner, same model, same machine (loopback sshd).

    .venv/bin/python benchmarks/ssh_overhead.py [--repeats 5]

Both runners start the harness in a fresh process; the difference is SSH: connecting, the
content-addressed upload (first run only), the temporary directory, and fetching the JSON. Each row
is the median wall time of --repeats measurements, side by side in one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from edgepack.render import table
from edgepack.runners.base import RunRequest
from edgepack.runners.local import LocalRunner
from edgepack.runners.loopback import SshDevice

EXAMPLE = Path(__file__).resolve().parents[1] / "edgepack" / "examples" / "digits_cnn.onnx"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", type=Path, default=EXAMPLE)
    args = parser.parse_args()
    request = RunRequest(args.model, runs=20, warmup=2)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgepack-bench-") as tmp:
        device = SshDevice(Path(tmp) / "device").start()
        try:
            local, first, cached, reconnect = [], [], [], []
            for i in range(args.repeats):
                local.append(LocalRunner().run([request])[0].wall_s)
                runner = device.runner(remote_cache=f"{device.cache}/round{i}")
                start = time.perf_counter()
                m = runner.run([request])[0]
                first.append(time.perf_counter() - start)
                assert m.ok and m.uploaded_bytes > 0, m.error
                start = time.perf_counter()
                m = runner.run([request])[0]
                cached.append(time.perf_counter() - start)
                assert m.ok and m.uploaded_bytes == 0, m.error
                runner.close()
                start = time.perf_counter()
                m = runner.run([request])[0]
                reconnect.append(time.perf_counter() - start)
                runner.close()
        finally:
            device.kill()
    base = statistics.median(local)
    for label, values in (("LocalRunner (fresh process)", local),
                          ("SshRunner, first run (connect + upload model and harness)", first),
                          ("SshRunner, cached, same connection", cached),
                          ("SshRunner, cached, new connection", reconnect)):
        median = statistics.median(values)
        rows.append((label, f"{median * 1000:.0f}", f"{(median - base) * 1000:+.0f}"))
    size = args.model.stat().st_size
    print(f"{args.model.name} ({size / 1024:.0f} KiB), 20 timed runs per measurement, median of {args.repeats}, "
          "sshd on 127.0.0.1")
    print(table(["runner", "wall ms per measurement", "overhead ms vs local"], rows, "lrr"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
