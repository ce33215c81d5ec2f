"""The SSH runner against a real OpenSSH server on loopback, with real models and runtimes."""

from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from edgepack.cli import main
from edgepack.runners.base import DeviceSetupError, RunRequest
from edgepack.runners.loopback import SshDevice
from edgepack.runners.ssh import HostKeyError

pytestmark = pytest.mark.device


def profile_cli(capsys, dev: SshDevice, model: Path, *extra: str) -> tuple[int, str, str]:
    code = main(["profile", str(model), "--device", "rpi4", "--host", dev.target, "--known-hosts",
                 str(dev.known_hosts), "--identity", str(dev.client_key), "--remote-python", dev.python,
                 "--runs", "20", "--warmup", "2", "--json", *extra])
    out, err = capsys.readouterr()
    return code, out, err


def test_profile_onnx_and_tflite_over_ssh(device: SshDevice, digits_onnx: Path, digits_tflite: Path, capsys):
    for model, runtime in ((digits_onnx, "onnxruntime"), (digits_tflite, "ai_edge_litert")):
        code, out, err = profile_cli(capsys, device, model)
        assert code == 0, err
        data = json.loads(out)
        assert data["device"] == "rpi4" and data["runtime"] == runtime and data["host"] == device.target
        lat = data["latency_ms"]
        assert set(lat) >= {"p50", "p90", "p99", "mean", "min", "max"}
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert data["peak_rss_mb"] > 10 and data["load_ms"] > 0
        assert data["environment"]["python"] and data["environment"]["uname"]
        assert len(data["measurements"][0]["latency_ms"]["runs"]) == 20
    onnx_ops = json.loads(profile_cli(capsys, device, digits_onnx)[1])["op_profile"]["ops"]
    assert any(op["type"] == "Conv" for op in onnx_ops)
    assert not device.leftover_temp_dirs()


def test_model_cache_uploads_once(device: SshDevice, digits_onnx: Path):
    runner = device.runner()
    first, second = runner.run([RunRequest(digits_onnx, runs=3, warmup=0)] * 2)
    assert first.ok and second.ok
    runner.close()
    third = device.runner().run([RunRequest(digits_onnx, runs=3, warmup=0)])[0]  # a new connection
    assert third.ok and third.uploaded_bytes == 0 and second.uploaded_bytes == 0
    digest = __import__("hashlib").sha256(digits_onnx.read_bytes()).hexdigest()
    cached = [p.name for p in (device.cache / "models").iterdir() if p.name.startswith(digest)]
    assert third.result.p50_ms and cached == [f"{digest}.onnx"]  # one copy, by its sha256, no partial upload


def test_unknown_host_key_is_refused_and_trust_new_host_saves_it(device: SshDevice, digits_onnx: Path, tmp_path,
                                                                 capsys):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyError, match="not in known_hosts"):
        device.runner(known_hosts=empty).run([RunRequest(digits_onnx, runs=1, warmup=0)])
    code = main(["profile", str(digits_onnx), "--device", "rpi4", "--host", device.target, "--known-hosts",
                 str(empty), "--identity", str(device.client_key), "--remote-python", device.python])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--trust-new-host" in err and "Traceback" not in err
    assert empty.read_text() == ""
    ok = device.runner(known_hosts=empty, trust_new_host=True).run([RunRequest(digits_onnx, runs=1, warmup=0)])[0]
    assert ok.ok
    assert f"[127.0.0.1]:{device.port}" in empty.read_text()
    again = device.runner(known_hosts=empty).run([RunRequest(digits_onnx, runs=1, warmup=0)])[0]
    assert again.ok


def test_changed_host_key_is_refused_even_with_trust_new_host(device: SshDevice, digits_onnx: Path, tmp_path):
    impostor = SshDevice(tmp_path / "other")  # a different host key, written for our device's address
    known = tmp_path / "known_hosts"
    known.write_text(impostor.known_hosts_line().replace(f"]:{impostor.port} ", f"]:{device.port} "))
    before = known.read_text()
    for trust in (False, True):
        with pytest.raises(HostKeyError, match="CHANGED"):
            device.runner(known_hosts=known, trust_new_host=trust).run([RunRequest(digits_onnx, runs=1)])
    assert known.read_text() == before


def test_hostile_file_names_are_quoted(device: SshDevice, digits_onnx: Path, tmp_path: Path):
    tag = f"pwned{device.port}"
    weird = tmp_path / f"my model 'x' \"y\"; touch {tag}a; $(touch {tag}b) `touch {tag}c`.onnx"
    shutil.copyfile(digits_onnx, weird)
    inputs = tmp_path / f"in puts; touch {tag}d.npz"
    import numpy as np

    np.savez(inputs, image=np.zeros((1, 1, 8, 8), np.float32))
    measurement = device.runner().run([RunRequest(weird, runs=2, warmup=0, inputs=inputs, want_outputs=True)])[0]
    assert measurement.ok, measurement.error
    for where in (Path.home(), device.root, device.tmp, tmp_path):
        assert not list(where.glob(f"{tag}*")), "a file name reached a shell unquoted"
    assert measurement.outputs is not None and list(measurement.outputs) == ["output_0"]
    assert not device.leftover_temp_dirs()


def test_hanging_run_times_out_and_leaves_nothing(device: SshDevice, digits_onnx: Path):
    pid_file = device.root / "hung.pid"
    hang = device.root / "hanging python"
    hang.write_text(f"#!/bin/sh\necho $$ > '{pid_file}'\nexec sleep 300\n")
    hang.chmod(0o755)
    start = time.monotonic()
    measurement = device.runner(python=str(hang)).run([RunRequest(digits_onnx, runs=1, timeout_s=2)])[0]
    assert time.monotonic() - start < 20
    assert measurement.error is not None and measurement.error.startswith("timeout: killed after 2 s")
    pid = int(pid_file.read_text())
    for _ in range(50):
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists(), "the hung process is still running on the device"
    assert not device.leftover_temp_dirs()


def test_missing_runtime_names_the_pip_install(device: SshDevice, digits_onnx: Path):
    bare = device.root / "bare python"  # the same interpreter without its site-packages: no numpy
    bare.write_text(f"#!/bin/sh\nexec '{device.python}' -S \"$@\"\n")
    bare.chmod(0o755)
    # numpy missing fails every candidate alike: the user's to fix, raised once (not a failed measurement)
    with pytest.raises(DeviceSetupError, match=r"numpy is not installed on the device.*pip install numpy"):
        device.runner(python=str(bare)).run([RunRequest(digits_onnx, runs=1)])
    assert not device.leftover_temp_dirs()


def test_sshd_killed_mid_run_then_reconnect(fresh_device: SshDevice, digits_onnx: Path):
    runner = fresh_device.runner()
    assert runner.run([RunRequest(digits_onnx, runs=1, warmup=0)])[0].ok
    result: list = []
    long_run = threading.Thread(target=lambda: result.extend(
        runner.run([RunRequest(digits_onnx, runs=200_000, warmup=0, timeout_s=60)])))
    long_run.start()
    time.sleep(1.5)
    fresh_device.kill()
    long_run.join(30)
    assert not long_run.is_alive()
    assert result and result[0].error is not None
    fresh_device.start()  # same port, same host key
    again = runner.run([RunRequest(digits_onnx, runs=2, warmup=0)])[0]
    assert again.ok, again.error
    for _ in range(100):  # the orphaned harness may still be finishing in the stale dir we removed
        if not fresh_device.leftover_temp_dirs():
            break
        time.sleep(0.1)
    assert not fresh_device.leftover_temp_dirs()
