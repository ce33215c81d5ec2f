"""What earlier builds measured on a board, kept for the predictor: ``<cache>/predictor-2.jsonl``.

One line per observation (a measured latency, or one kind of kernel's share of a per-op profile), with
the board's identity (profile and host key, as the records key it) and the model's sha256. A build on a
board starts its predictor from every observation of other models on that board, so the second model on
a board is predicted from the first's kernel coefficients; its own model's figures come back through the
records instead, so a rebuild takes the same path as the build it repeats. Append-only and flushed line
by line, like the records; a line that is not an observation this version reads is skipped.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from edgepack.predict import Observation
from edgepack.strict_json import dumps


class BoardMemory:
    FILE = "predictor-2.jsonl"  # 2: kernels costed on one thread

    def __init__(self, cache: Path) -> None:
        self.path = cache / self.FILE
        self._lock = threading.Lock()

    def load(self, devices: set[str], model: str) -> list[Observation]:
        """Every observation made on one of ``devices`` of a model other than ``model`` (a sha256); the
        same one seen twice counts once (the last)."""
        found: dict[tuple[str, frozenset[str], str, str], Observation] = {}
        try:
            lines = self.path.read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            return []
        for line in lines:
            try:
                data = json.loads(line)
                if data.get("device") not in devices or data.get("model") == model:
                    continue
                o = Observation.from_dict(data["observation"])
            except (ValueError, KeyError, TypeError, AttributeError):
                continue
            if o.ms > 0:
                found[(o.source, o.kinds, o.features.runtime, data["device"])] = o
        return list(found.values())

    def add(self, device: str, model: str, observations: list[Observation]) -> None:
        if not observations:
            return
        text = "".join(dumps({"device": device, "model": model, "observation": o.to_dict()}) + "\n"
                       for o in observations)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
