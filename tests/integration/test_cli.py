"""The command line: tables, --json on stdout only, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgepack.cli import main
from edgepack.profiles import BUILTIN_DIR

EXAMPLE = Path(__file__).resolve().parents[2] / "edgepack" / "examples" / "digits_cnn.onnx"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("edgepack: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_devices_table_and_json(capsys):
    code, out, _ = run(capsys, "devices")
    assert code == 0
    for name in ("rpi4", "rpi5", "rpi-zero-2w", "android-gpu", "coral-edgetpu", "host"):
        assert name in out
    code, out, err = run(capsys, "devices", "--json")
    assert code == 0 and err == ""
    names = {d["name"] for d in json.loads(out)}
    assert {"rpi4", "coral-edgetpu", "host"} <= names


def test_devices_show(capsys):
    code, out, _ = run(capsys, "devices", "show", "coral-edgetpu")
    assert code == 0 and "requires int8" in out and "coral.ai" in out
    code, out, _ = run(capsys, "devices", "show", "rpi4", "--json")
    data = json.loads(out)
    assert data["class"] == "cpu" and data["roofline"]["fp32_gflops"] == 96.0
    assert data["ssh"]["user"] == "pi" and data["benchmark"]["threads"] == 4


def test_unknown_device_is_a_one_line_error(capsys):
    assert_user_error(*run(capsys, "devices", "show", "rpi44"), "unknown device 'rpi44'",
                      "did you mean 'rpi4'")
    assert_user_error(*run(capsys, "inspect", str(EXAMPLE), "--device", "corall-edgetpu"),
                      "did you mean 'coral-edgetpu'")


def test_invalid_profile_is_a_one_line_error(capsys, tmp_path: Path):
    bad = tmp_path / "board.toml"
    bad.write_text((BUILTIN_DIR / "rpi4.toml").read_text().replace("cores = 4", "cores = 4\ncorez = 1"))
    assert_user_error(*run(capsys, "devices", "--profile", str(bad)), str(bad), "corez", "unknown key")


def test_inspect_example_json(capsys):
    code, out, err = run(capsys, "inspect", str(EXAMPLE), "--device", "rpi4", "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["macs"] == 370_944 and data["params"] == 71_754
    assert data["model"]["inputs"][0] == {"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32",
                                          "layout": "NCHW"}
    assert data["compatibility"]["compatible"] is True
    assert data["latency_estimate"]["kind"].startswith("estimate")
    assert sum(layer["macs"] for layer in data["layers"]) == data["macs"]
    assert data["op_histogram"]["Conv"] == 2


def test_inspect_table_labels_the_estimate(capsys):
    code, out, _ = run(capsys, "inspect", str(EXAMPLE), "--device", "coral-edgetpu")
    assert code == 0
    assert "ESTIMATE" in out and "not measured" in out
    assert "runs only int8" in out


def test_missing_and_unknown_files(capsys, tmp_path: Path):
    assert_user_error(*run(capsys, "inspect", str(tmp_path / "nope.onnx")), "nope.onnx",
                      "no such file")
    other = tmp_path / "model.bin"
    other.write_bytes(b"\x00" * 10)
    assert_user_error(*run(capsys, "inspect", str(other)), "unknown model format '.bin'")
    assert_user_error(*run(capsys, "inspect"), "no model given")


def test_truncated_and_corrupt_models(capsys, tmp_path: Path, digits_onnx: Path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(digits_onnx.read_bytes()[: digits_onnx.stat().st_size // 3])
    assert_user_error(*run(capsys, "inspect", str(truncated)), "truncated.onnx", "not a", "ONNX")
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"this is not a flatbuffer" * 10)
    assert_user_error(*run(capsys, "inspect", str(garbage)), "garbage.tflite", "TFLite")
    keras_file = tmp_path / "broken.keras"
    keras_file.write_bytes(b"PK\x03\x04 not really a zip")
    assert_user_error(*run(capsys, "inspect", str(keras_file)), "broken.keras", "Keras")
    torchscript = tmp_path / "weights.pt"
    torchscript.write_bytes(b"\x80\x02pickle")
    assert_user_error(*run(capsys, "inspect", str(torchscript)), "weights.pt", "TorchScript")


def test_bad_input_shape(capsys):
    assert_user_error(*run(capsys, "inspect", str(EXAMPLE), "--input-shape", "1,a,8"),
                      "not a list of integers")
    assert_user_error(*run(capsys, "inspect", str(EXAMPLE), "--input-shape", "1,3,8,8"),
                      "contradicts the model's fixed shape")
    assert_user_error(*run(capsys, "inspect", "--torch-module", "edgepack.examples.digits:digits_cnn"),
                      "--input-shape")
    assert_user_error(*run(capsys, "inspect", "--torch-module", "edgepack.examples.digits:nothing",
                           "--input-shape", "1,1,8,8"), "no callable 'nothing'")


def test_console_script_exit_code_and_stderr(tmp_path: Path):
    script = Path(sys.executable).parent / "edgepack"
    proc = subprocess.run([str(script), "inspect", str(tmp_path / "missing.onnx"), "--json"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "missing.onnx" in proc.stderr


def test_devices_and_inspect_fit_in_100_columns(capsys):
    for argv in (["devices"], ["inspect", str(EXAMPLE), "--device", "coral-edgetpu"],
                 ["inspect", str(EXAMPLE), "--device", "android-gpu"]):
        code, out, _ = run(capsys, *argv)
        assert code == 0 and max(len(line) for line in out.splitlines()) <= 100, argv
