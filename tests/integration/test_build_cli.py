"""``edgepack build`` on this machine (the local runner) and its one-line errors for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import main


def build(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["build", *argv])
    except SystemExit as stop:  # argparse's refusals (flags out of range)
        code = stop.code
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize(("extra", "message"), [
    (["--device", "rpi4"], "no --host given to reach the rpi4"),
    (["--device", "host", "--formats", "coreml"], "host does not allow format coreml"),
    (["--device", "host", "--prune", "0,1.5"], "--prune: must be numbers in [0, 1) separated by commas"),
    (["--device", "host", "--prune", "half"], "--prune: must be numbers in [0, 1) separated by commas"),
    (["--device", "host", "--threads", "8"], "host has 2 cores"),
    (["--device", "nosuch"], "unknown device"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, digits_onnx: Path, tmp_path: Path, extra, message):
    code, out, err = build(capsys, str(digits_onnx), *extra, "--cache", str(tmp_path / "c"), "-o", str(tmp_path / "d"))
    assert code == 2 and out == ""
    assert err.startswith("edgepack: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "d").exists()


def test_too_little_calibration_data_to_hold_out(capsys, digits_onnx: Path, digits, tmp_path: Path):
    np.save(tmp_path / "few.npy", digits.x_train[:12])
    code, _, err = build(capsys, str(digits_onnx), "--device", "host", "--calib", str(tmp_path / "few.npy"),
                         "--cache", str(tmp_path / "c"), "-o", str(tmp_path / "d"))
    assert code == 2 and "too few to hold some out" in err


def test_local_build_says_it_measured_this_machine(capsys, digits_onnx: Path, digits, tmp_path: Path):
    np.save(tmp_path / "calib.npy", digits.x_train[:100])
    argv = [str(digits_onnx), "--device", "host", "--calib", str(tmp_path / "calib.npy"), "--formats", "onnx",
            "--precisions", "fp32,dynamic", "--prune", "0", "--runs", "20", "--cache", str(tmp_path / "c"),
            "-o", str(tmp_path / "d")]
    code, out, err = build(capsys, *argv)
    assert code == 0, err
    assert "measured on local (this machine, not a board)" in out and "no --eval: the last 20" in out
    assert f"package: {tmp_path / 'd' / 'digits-host'}" in out
    code, out, _ = build(capsys, *argv, "--json")
    data = json.loads(out)
    assert code == 0 and data["measurements"]["new"] == 0 and data["measured_on"].startswith("local")
    manifest = json.loads((tmp_path / "d" / "digits-host" / "manifest.json").read_text())
    assert manifest["measured"]["measured_on"].startswith("local") and manifest["device"] == "host"
