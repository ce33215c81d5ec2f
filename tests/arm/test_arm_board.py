"""Every on-device path on an aarch64 board: the emulated Raspberry Pi OS (Debian 12 arm64 under qemu),
with its own Python 3.11, numpy 1.24, tflite-runtime and onnxruntime, reached over its own sshd."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import main
from edgepack.runners.emulated import EmulatedBoard

pytestmark = pytest.mark.arm
ROOT = Path(__file__).resolve().parents[2]
CLASSIFY = ROOT / "firmware_examples" / "rpi_python" / "classify.py"
RUNTIMES = {"tflite": ("tflite_runtime", "2.14.0"), "onnx": ("onnxruntime", "1.20.1")}


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    return code, out.getvalue()


@pytest.fixture(scope="module")
def data_files(tmp_path_factory: pytest.TempPathFactory, digits) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("arm-data")
    np.savez(root / "calib.npz", x=digits.x_train[:300])
    np.savez(root / "eval.npz", x=digits.x_test, y=digits.y_test)
    return root / "calib.npz", root / "eval.npz"


def build_argv(board: EmulatedBoard, model: Path, fmt: str, data: tuple[Path, Path], root: Path) -> list[str]:
    return ["build", str(model), "--device", "rpi4", *board.flags(), "--calib", str(data[0]), "--eval", str(data[1]),
            "--formats", fmt, "--precisions", "int8", "--prune", "0", "--threads", "4",
            "--cache", str(root / "cache"), "-o", str(root / "dist"), "--json"]


@pytest.mark.parametrize("fmt", ["tflite", "onnx"])
def test_profile_runs_on_aarch64_and_says_emulated(arm_board: EmulatedBoard, digits_tflite: Path,
                                                    digits_onnx: Path, fmt: str):
    model = digits_tflite if fmt == "tflite" else digits_onnx
    argv = ["profile", model, "--device", "rpi4", *arm_board.flags(), "--runs", "5", "--warmup", "1"]
    code, out = cli(*argv, "--json")
    assert code == 0, out
    data = json.loads(out)
    env = data["environment"]
    assert (env["machine"], env["emulated"], env["python"][:4], env["numpy"][:4]) == ("aarch64", True, "3.11", "1.24")
    assert (data["runtime"], data["runtime_version"]) == RUNTIMES[fmt]
    assert data["latency_source"] == data["measurements"][0]["latency_source"] == "emulated: not a latency"
    assert data["error"] is None and data["latency_ms"]["p50"] > 0
    code, text = cli(*argv)
    assert code == 0 and "EMULATED: NOT A LATENCY" in text
    assert not list((arm_board.root / "tmp").glob("edgepack.*"))


def _build(fmt: str, board: EmulatedBoard, model: Path, data_files, factory: pytest.TempPathFactory):
    root = factory.mktemp(f"arm-build-{fmt}")
    code, out = cli(*build_argv(board, model, fmt, data_files, root))
    assert code == 0, out
    return fmt, root, json.loads(out)


@pytest.fixture(scope="module")
def tflite_build(arm_board: EmulatedBoard, digits_onnx: Path, data_files, tmp_path_factory):
    return _build("tflite", arm_board, digits_onnx, data_files, tmp_path_factory)


@pytest.fixture(scope="module")
def onnx_build(arm_board: EmulatedBoard, digits_onnx: Path, data_files, tmp_path_factory):
    return _build("onnx", arm_board, digits_onnx, data_files, tmp_path_factory)


@pytest.fixture(params=["tflite", "onnx"])
def arm_build(request: pytest.FixtureRequest) -> tuple[str, Path, dict]:
    return request.getfixturevalue(f"{request.param}_build")


def test_build_ranks_by_the_predictor_and_checks_accuracy_with_the_boards_runtime(arm_build):
    fmt, _, result = arm_build
    chosen = result["chosen"]
    assert (chosen["plan"]["format"], chosen["plan"]["precision"]) == (fmt, "int8")
    # nothing about speed was measured: every latency is the predictor's, and says so
    assert "emulated: not a latency" in result["measured_on"]
    assert chosen["status"] == "predicted" and chosen["latency_ms"] is None and chosen["predicted_ms"] > 0
    assert chosen["latency_source"] == "predicted"
    by_purpose = result["measurements"]["by_purpose"]
    assert by_purpose["latency"]["new"] == by_purpose["op-profile"]["new"] == 0
    assert by_purpose["accuracy"]["new"] == 1
    # the held-out digits, run by the board's own aarch64 runtime, scored here
    on_board = result["checked_on_device"]
    assert on_board["samples"] == 360 and on_board["accuracy"] >= 0.9
    assert abs(on_board["accuracy_drop_pts"] - chosen["accuracy_drop"]) < 1.0
    manifest = json.loads((Path(result["package"]) / "manifest.json").read_text())
    measured = manifest["measured"]
    assert measured["latency_source"] == "predicted" and "emulated" in measured["why"]
    assert measured["environment"]["machine"] == "aarch64" and "latency_ms" not in measured
    assert manifest["plan"]["checked_on_device"] == on_board
    if fmt == "onnx":  # Arm takes signed int8 activations (S8S8); x86 would get uint8
        assert manifest["plan"]["quantization"]["activation_type"] == "int8"
    report = (Path(result["package"]) / "report.html").read_text()
    assert "predicted, not measured" in report


def test_deploy_then_classify_on_the_board(arm_build, arm_board: EmulatedBoard, digits, tmp_path: Path):
    from PIL import Image

    fmt, _, result = arm_build
    package = Path(result["package"])
    code, out = cli("deploy", package, "--device", "rpi4", *arm_board.flags(), "--json")
    assert code == 0, out
    deployed = json.loads(out)[0]
    here = subprocess.run([sys.executable, str(package / "run.py"), str(package / "sample.npy")],
                          capture_output=True, text=True, check=True)
    on_x86, on_arm = json.loads(here.stdout), deployed["smoke_test"]
    assert on_arm["top"][0]["class"] == on_x86["top"][0]["class"]
    if fmt == "tflite":  # the same int8 kernels: the same scores. (ONNX Runtime's S8S8 on x86 takes another
        # path than Arm's, and its scores differ by more: benchmarks/arm_parity.py has the figures.)
        assert on_arm["top"][0]["score"] == pytest.approx(on_x86["top"][0]["score"], rel=1e-3)

    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(digits.x_test[:40]):
        Image.fromarray(np.round(image[0] * 255).astype(np.uint8), mode="L").save(images / f"{i:03d}.png")
    runner = arm_board.runner()
    try:
        sftp = runner.open_sftp()
        try:
            with contextlib.suppress(OSError):
                sftp.mkdir("images")
            sftp.put(str(CLASSIFY), "classify.py")
            for path in sorted(images.iterdir()):
                sftp.put(str(path), f"images/{path.name}")
        finally:
            sftp.close()
        code, out, err = runner.execute(f"{arm_board.python} classify.py {deployed['current']} images/*.png",
                                        timeout=300)
        runner.execute("rm -rf images classify.py")
    finally:
        runner.close()
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    predicted = np.array([line["top"][0]["class"] for line in lines])
    assert len(lines) == 40 and (predicted == digits.y_test[:40]).mean() >= 0.9


def test_a_build_killed_on_the_board_resumes(arm_board: EmulatedBoard, digits_onnx: Path, data_files,
                                             tflite_build, tmp_path: Path):
    # the artifacts built before, not their records: the build goes straight to the check on the board
    shutil.copytree(tflite_build[1] / "cache", tmp_path / "cache", ignore=shutil.ignore_patterns("records.jsonl*"))
    argv = [sys.executable, "-m", "edgepack.cli", *build_argv(arm_board, digits_onnx, "tflite", data_files, tmp_path)]
    board_tmp = arm_board.root / "tmp"
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not list(board_tmp.glob("edgepack.*/.edgepack-harness.pid")):  # the check is running on the board
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "dist" / "digits_cnn-rpi4").exists()

    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["checked_on_device"]["samples"] == 360 and Path(result["package"], "manifest.json").exists()
    # the orphaned harness was ended by the next holder of the board's lock, its directory removed
    assert not list(board_tmp.glob("edgepack.*"))
    again = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads(again.stdout)["measurements"]["new"] == 0  # the check came from the records


def test_a_board_stops_without_a_trace(tmp_path: Path):
    from edgepack.runners.emulated import _mounts_under

    board = EmulatedBoard.start(tmp_path / "board", say=lambda _: None)
    runner = board.runner()
    try:
        code, out, _ = runner.execute("uname -m; cat /proc/1/comm; mount | wc -l")
    finally:
        runner.close()
    machine, first, mounts = out.split()
    assert code == 0 and machine == "aarch64" and first == "sshd"  # the board's own PID 1: its sshd
    assert int(mounts) >= 3 and not _mounts_under(tmp_path)  # its /proc, /dev, /sys: never seen out here
    pids = board.processes()
    assert pids
    board.stop()
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()
                and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"]
    assert not board.root.exists() and not (tmp_path / "board" / "board.json").exists()
    assert (tmp_path / "board" / "client_ed25519").exists()  # only what it made for the board went
