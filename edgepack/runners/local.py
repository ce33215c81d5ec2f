"""LocalRunner: the harness in a fresh subprocess on this machine (measurements say "local")."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edgepack.runners.base import (
    HARNESS,
    HarnessResult,
    Measurement,
    Runner,
    RunRequest,
    parse_description,
    parse_harness_output,
)


class LocalRunner(Runner):
    """Each request runs in a new Python process, so no measurement inherits another's caches."""

    LABEL = "local"

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable
        self.label = self.LABEL

    def run(self, requests: list[RunRequest]) -> list[Measurement]:
        return [self._one(r) for r in requests]

    def describe(self) -> HarnessResult:
        done = subprocess.run([self.python, str(HARNESS), "--describe"], capture_output=True, text=True, timeout=60)
        return parse_description(done.stdout)

    def _one(self, request: RunRequest) -> Measurement:
        with tempfile.TemporaryDirectory(prefix="edgepack-run-") as tmp:
            outputs = Path(tmp) / "outputs.npz" if request.want_outputs else None
            args = request.harness_args(str(request.model.resolve()),
                                        str(request.inputs.resolve()) if request.inputs else None,
                                        str(outputs) if outputs else None)
            start, began = time.perf_counter(), time.time()
            proc = subprocess.Popen([self.python, str(HARNESS), *args], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, start_new_session=True, cwd=tmp)
            try:
                stdout, stderr = proc.communicate(timeout=request.timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
                return Measurement(request, self.label, HarnessResult(),
                                   f"timeout: killed after {request.timeout_s:g} s",
                                   wall_s=time.perf_counter() - start)
            measurement = parse_harness_output(request, self.label, stdout, stderr, proc.returncode,
                                               time.perf_counter() - start)
            measurement.measured_at = (began, time.time())
            if measurement.ok and outputs is not None and outputs.exists():
                import numpy as np

                with np.load(outputs) as archive:
                    measurement.outputs = {k: archive[k] for k in archive.files}
            return measurement
