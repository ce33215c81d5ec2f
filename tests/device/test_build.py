"""``edgepack build`` and ``edgepack deploy`` against the real SSH device, with real converters and runtimes."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import main
from edgepack.runners.loopback import SshDevice

pytestmark = pytest.mark.device
CLASSIFY = Path(__file__).resolve().parents[2] / "firmware_examples" / "rpi_python" / "classify.py"


def ssh_args(dev: SshDevice) -> list[str]:
    return ["--host", dev.target, "--known-hosts", str(dev.known_hosts), "--identity", str(dev.client_key),
            "--remote-python", dev.python]


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def write_pngs(folder: Path, x: np.ndarray) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True)
    paths = []
    for i, image in enumerate(x):
        path = folder / f"{i:04d}.png"
        Image.fromarray(np.round(image[0] * 255).astype(np.uint8), mode="L").save(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def build_setup(tmp_path_factory, device: SshDevice, digits, digits_onnx: Path):
    root = tmp_path_factory.mktemp("build")
    write_pngs(root / "calib", digits.x_train[:300])
    np.savez(root / "eval.npz", x=digits.x_test, y=digits.y_test)
    argv = ["build", str(digits_onnx), "--device", "rpi4", *ssh_args(device), "--calib", str(root / "calib"),
            "--eval", str(root / "eval.npz"), "--formats", "onnx,tflite", "--precisions", "fp32,int8",
            "--prune", "0,0.5", "--threads", "1,2", "--max-accuracy-drop", "3", "--runs", "20", "--warmup", "3",
            "--cache", str(root / "cache"), "-o", str(root / "dist"), "--json"]
    code, out = cli(*argv)
    assert code == 0
    return root, argv, json.loads(out)


def test_build_writes_a_package_that_matches_its_files(build_setup, device: SshDevice):
    root, _, result = build_setup
    assert set(result) >= {"package", "chosen", "candidates", "measurements"}
    package = Path(result["package"])
    assert package == root / "dist" / "digits-rpi4"
    manifest = json.loads((package / "manifest.json").read_text())
    files = {p.name for p in package.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == files
    assert files == {manifest["model_file"], "run.py", "README.md", "report.html", "sample.npy"}
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((package / name).read_bytes()).hexdigest() == digest
    assert hashlib.sha256((package / manifest["model_file"]).read_bytes()).hexdigest() == manifest["artifact_sha256"]
    with tarfile.open(root / "dist" / "digits-rpi4.tar.gz") as tar:
        inside = ["digits-rpi4", *(f"digits-rpi4/{n}" for n in [*files, "manifest.json"])]
        assert sorted(tar.getnames()) == sorted(inside)
    assert not list((root / "dist").glob(".edgepack-*"))

    chosen = result["chosen"]
    measured = [c for c in result["candidates"] if c["status"] == "measured"]
    assert chosen["status"] == "measured" and chosen["feasible"] and chosen["pareto"]
    assert chosen["latency_ms"] == min(c["latency_ms"] for c in measured if c["feasible"])
    assert sum(c["chosen"] for c in result["candidates"]) == 1
    plan = manifest["plan"]
    assert (plan["format"], plan["precision"], plan["prune_ratio"], plan["threads"]) == tuple(
        chosen["plan"][k] for k in ("format", "precision", "prune_ratio", "threads"))
    if plan["prune_ratio"]:
        assert plan["pruning"]["history"]
    if plan["precision"] == "int8":
        assert plan["quantization"]["calibration_samples"] > 0
    assert manifest["measured"]["latency_ms"]["p50"] == chosen["latency_ms"]
    assert manifest["measured"]["environment"]["python"] and manifest["measured"]["op_profile"]
    on_device = result["checked_on_device"]  # the held-out set, run by the device's runtime, scored here
    assert on_device["samples"] == 360 and on_device["accuracy"] >= 0.9
    assert abs(on_device["accuracy_drop_pts"] - chosen["accuracy_drop"]) < 0.5  # the same runtime as the host
    assert manifest["plan"]["checked_on_device"] == on_device
    assert manifest["constraints"]["max_accuracy_drop"] == {
        "limit": 3.0, "value": max(chosen["accuracy_drop"], on_device["accuracy_drop_pts"]), "held": True}
    assert manifest["preprocessing"]["scale"] == "1/255"
    assert manifest["inputs"][0]["source_layout"] == "NCHW"
    report = (package / "report.html").read_text()
    assert "<svg" in report and chosen["label"] in report
    assert result["measurements"]["new"] >= 3 and result["measurements"]["cached"] == 0
    assert len(measured) <= 12 and not device.leftover_temp_dirs()


def test_rerun_measures_nothing_again(build_setup):
    _, argv, first = build_setup
    code, out = cli(*argv)
    assert code == 0
    second = json.loads(out)
    assert (second["measurements"]["new"], second["measurements"]["cached"]) == (0, first["measurements"]["new"])
    assert {p: c["cached"] for p, c in second["measurements"]["by_purpose"].items()} == \
        {p: c["new"] for p, c in first["measurements"]["by_purpose"].items()}
    assert second["chosen"]["plan"] == first["chosen"]["plan"]
    assert second["chosen"]["latency_ms"] == first["chosen"]["latency_ms"]


def test_no_feasible_candidate_says_what_blocks(build_setup, capsys):
    root, argv, _ = build_setup
    out_dir = root / "nowhere"
    argv = [*argv[: argv.index("-o")], "-o", str(out_dir), "--max-latency-ms", "0.000001"]
    code, _ = cli(*argv)
    err = capsys.readouterr().err
    assert code == 2
    assert "no candidate meets the constraints; nearest: " in err and "> 1e-06 ms" in err
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_a_killed_build_resumes_from_its_records(tmp_path: Path, device: SshDevice, digits, digits_onnx: Path):
    np.savez(tmp_path / "calib.npz", x=digits.x_train[:200])
    argv = [sys.executable, "-m", "edgepack.cli", "build", str(digits_onnx), "--device", "rpi4", *ssh_args(device),
            "--calib", str(tmp_path / "calib.npz"), "--formats", "onnx", "--precisions", "fp32,int8,dynamic",
            "--prune", "0", "--threads", "1,2", "--runs", "300", "--cache", str(tmp_path / "cache"),
            "-o", str(tmp_path / "dist"), "--json"]
    records = tmp_path / "cache" / "records.jsonl"
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not (records.exists() and records.read_text().count("\n") >= 2):
        assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    recorded = records.read_text().count("\n")
    assert not (tmp_path / "dist" / "digits-rpi4").exists()  # the killed build wrote no package

    done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    # every record of the killed run read back (and a record this run made may be read again: the chosen
    # one's per-op profile comes with its latency); the keys below say nothing was measured twice
    assert result["measurements"]["cached"] >= recorded and result["measurements"]["new"] >= 1
    assert (tmp_path / "dist" / "digits-rpi4" / "manifest.json").exists()
    keys = [json.dumps(json.loads(line)["key"], sort_keys=True) for line in records.read_text().splitlines()]
    assert len(keys) == len(set(keys))  # nothing was measured twice
    assert not device.leftover_temp_dirs()  # the killed run's work directory went once its harness ended


def test_deploy_then_classify_images_on_the_device(build_setup, device: SshDevice, digits, tmp_path: Path):
    root, _, result = build_setup
    package = Path(result["package"])
    remote = tmp_path / "remote"
    code, out = cli("deploy", str(root / "dist" / "digits-rpi4.tar.gz"), "--device", "rpi4", *ssh_args(device),
                    "--remote-dir", str(remote), "--json")
    assert code == 0
    first = json.loads(out)[0]
    current = remote / "digits-rpi4" / "current"
    assert current.is_symlink() and current.resolve() == Path(first["path"]).resolve()
    assert first["files_verified"] == len(json.loads((package / "manifest.json").read_text())["files"])
    here = subprocess.run([sys.executable, str(package / "run.py"), str(package / "sample.npy")],
                          capture_output=True, text=True, check=True)
    assert first["smoke_test"] == json.loads(here.stdout)  # the device ran the same model on the same sample

    images = write_pngs(tmp_path / "images", digits.x_test[:60])
    runner = device.runner()
    try:
        code, out, err = runner.execute(" ".join([device.python, str(CLASSIFY), str(current), *map(str, images)]))
    finally:
        runner.close()
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    predicted = np.array([line["top"][0]["class"] for line in lines])
    assert len(lines) == 60 and (predicted == digits.y_test[:60]).mean() >= 0.9

    # a second deployment keeps the first as the previous; a failing one changes nothing
    code, out = cli("deploy", str(package), "--device", "rpi4", *ssh_args(device), "--remote-dir", str(remote),
                    "--json")
    second = json.loads(out)[0]
    assert code == 0 and Path(second["previous"]).name == Path(first["path"]).name
    broken = tmp_path / "broken" / package.name
    shutil.copytree(package, broken)
    model = broken / json.loads((broken / "manifest.json").read_text())["model_file"]
    model.write_bytes(b"not a model")
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["files"][model.name] = hashlib.sha256(b"not a model").hexdigest()
    (broken / "manifest.json").write_text(json.dumps(manifest))
    code, _ = cli("deploy", str(broken), "--device", "rpi4", *ssh_args(device), "--remote-dir", str(remote))
    assert code == 2
    assert current.resolve() == Path(second["path"]).resolve()
    releases = sorted(p.name for p in (remote / "digits-rpi4" / "releases").iterdir())
    assert releases == sorted([Path(first["path"]).name, Path(second["path"]).name])  # no partial upload left


def test_deploy_refuses_a_changed_package(build_setup, device: SshDevice, tmp_path: Path, capsys):
    _, _, result = build_setup
    copy = tmp_path / "digits-rpi4"
    shutil.copytree(result["package"], copy)
    (copy / "run.py").write_text("print('changed')\n")
    code, _ = cli("deploy", str(copy), "--device", "rpi4", *ssh_args(device), "--remote-dir", str(tmp_path / "r"))
    assert code == 2
    assert "run.py does not match manifest.json" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_unreachable_board_is_one_line_and_exit_2(tmp_path: Path, digits_onnx: Path, capsys):
    from edgepack.runners.loopback import free_port

    code, out = cli("build", str(digits_onnx), "--device", "rpi4", "--host", f"root@127.0.0.1:{free_port()}",
                    "--known-hosts", str(tmp_path / "kh"), "--cache", str(tmp_path / "c"), "-o", str(tmp_path / "d"))
    err = capsys.readouterr().err
    assert code == 2 and out == "" and "cannot connect" in err and err.count("\n") == 1
    assert not (tmp_path / "d").exists()
