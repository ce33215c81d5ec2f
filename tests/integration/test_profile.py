"""``edgepack profile`` on this machine (edgepack/profiling.py, the local runner): timed without the
profiler's cost, nothing left beside the model, and a corrupt model refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

from edgepack.runners.base import RunRequest
from edgepack.runners.local import LocalRunner


def test_local_profile_times_without_the_profiler_and_leaves_nothing(cli, tmp_path: Path, digits_onnx: Path):
    model = tmp_path / "models" / "digits.onnx"
    model.parent.mkdir()
    model.write_bytes(digits_onnx.read_bytes())
    code, out, _ = cli("profile", model, "--runs", "3000", "--json")
    assert code == 0
    profiled = json.loads(out)
    assert profiled["op_profile"]["ops"] and {o["type"] for o in profiled["op_profile"]["ops"]} >= {"Conv", "Gemm"}
    assert sorted(p.name for p in model.parent.iterdir()) == ["digits.onnx"]  # no ort_profile_*.json
    # The profiler kept every event of the timed runs: 190 MB against 68 MB for this model at 3000 runs.
    # And the peak RSS is the harness's own (VmHWM), not ru_maxrss inherited from this large process
    # (torch and TensorFlow loaded: ~490 MB reported for a 0.3 MB model before).
    plain = LocalRunner().run([RunRequest(model, runs=3000)])[0]
    assert plain.result.peak_rss_mb is not None and profiled["peak_rss_mb"] < plain.result.peak_rss_mb * 1.25 + 20
    assert plain.result.peak_rss_mb < 150


def test_profile_refuses_a_corrupt_model_here(cli, one_line_error, tmp_path: Path, digits_onnx: Path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(digits_onnx.read_bytes()[: digits_onnx.stat().st_size // 2])
    one_line_error(cli("profile", corrupt), "corrupt.onnx")
