"""TableRunner: a test double for the search logic only. It answers each request with a latency looked
up in a table by the model file's name, instantly and deterministically; it never runs a model. Device
tests use real sshd boards; this is for testing batching, confirmation, records and counters in
milliseconds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from edgepack.runners.base import HarnessResult, Measurement, Runner, RunRequest


@dataclass
class TableRunner(Runner):
    latencies_ms: dict[str, float]  # model file name -> p50
    label: str = "table"
    lost_after: int | None = None  # the board is lost (connection and reconnect fail) after this many runs
    runs: list[str] = field(default_factory=list)  # file names, in the order they were measured
    seconds: float = 0.005  # each run takes this long, so every board of a pool gets a share of a batch

    def run(self, requests: list[RunRequest]) -> list[Measurement]:
        out = []
        for request in requests:
            if self.lost_after is not None and len(self.runs) >= self.lost_after:
                out.append(Measurement(request, self.label, HarnessResult(), "connection lost: the board is gone",
                                       board_lost=True))
                continue
            self.runs.append(request.model.name)
            began = time.time()
            time.sleep(self.seconds)
            p50 = self.latencies_ms.get(request.model.name)
            if p50 is None:
                out.append(Measurement(request, self.label, HarnessResult({"error_kind": "runtime_error"}),
                                       f"no latency for {request.model.name} in the table"))
                continue
            result = {"latency_ms": {"p50": p50, "p90": p50 * 1.1, "runs": [p50] * request.runs},
                      "peak_rss_mb": 10.0, "runtime": "table", "op_profile": {"ops": []} if request.op_profile
                      else None}
            out.append(Measurement(request, self.label, HarnessResult(result), measured_at=(began, time.time())))
        return out

    def identity(self) -> str:
        if self.lost_after is not None and len(self.runs) >= self.lost_after:
            from edgepack.errors import EdgepackError

            raise EdgepackError(f"{self.label}: cannot connect")
        return f"table:{self.label}"
