"""The SSH runner against a real OpenSSH server on loopback, with real models and runtimes: the device
lock, the device's cache checked by sha256, and a board that hangs, floods or lies at the SSH seam (one
line, the right exit code, nothing left running).

A misbehaving board's "Python" is a shell script the test writes (``SshDevice.broken_python``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import tracemalloc
from pathlib import Path

import pytest

from edgepack.cli import main
from edgepack.profiles import ProfileRegistry
from edgepack.runners import ssh
from edgepack.runners.base import DeviceSetupError, RunRequest
from edgepack.runners.factory import SshOptions
from edgepack.runners.loopback import SshDevice, running
from edgepack.runners.ssh import HostKeyError

pytestmark = pytest.mark.device


def ssh_args(dev: SshDevice, python: str | None = None) -> list[str]:
    return ["--host", dev.target, "--known-hosts", str(dev.known_hosts), "--identity", str(dev.client_key),
            "--remote-python", python or dev.python]


def build_args(model: Path, tmp_path: Path) -> list[object]:
    return ["build", model, "--device", "rpi4", "--formats", "onnx", "--precisions", "fp32", "--threads", "1",
            "--runs", "3", "--warmup", "1", "--cache", tmp_path / "c", "-o", tmp_path / "dist"]


def assert_board_fault(result: tuple[int, str, str], *fragments: str) -> str:
    """Exit 1 (the board's fault), nothing on stdout, the last line of stderr the one error line."""
    code, out, err = result
    last = err.strip().splitlines()[-1]
    assert code == 1 and out == "" and "Traceback" not in err, err
    assert last.startswith("edgepack: error: ") and err.count("edgepack: error: ") == 1, err
    for fragment in fragments:
        assert fragment in last, last
    return last


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
        runs = data["measurements"][0]["latency_ms"]["runs"]  # at most 20: fewer once the median is known
        assert 10 <= len(runs) <= 20 and data["measurements"][0]["stopping"]["runs_done"] == len(runs)
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
        runner.run([RunRequest(digits_onnx, runs=200_000, warmup=0, timeout_s=60, target_ci=None)])))
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


# -- the device lock: who holds it is said, and it goes with the connection ----------------------------------

def test_the_lock_says_who_holds_it_and_goes_with_the_connection(device: SshDevice):
    from edgepack.runners.ssh import DeviceBusyError

    holder, waiter = device.runner(), device.runner(lock_timeout_s=1.0)
    said: list[str] = []
    waiter.say = said.append
    try:
        with holder.device_lock("measuring"):
            with pytest.raises(DeviceBusyError, match=r"stayed in use for 1 s \(measuring by .*pid"), \
                    waiter.device_lock("deploying x"):
                pass
            assert said and "in use (measuring by" in said[0]
            holder._client.get_transport().close()  # the connection dies while the lock is held
            start = time.monotonic()
            waiter.lock_timeout_s = 10.0
            with waiter.device_lock("deploying x"):
                assert time.monotonic() - start < 5
    finally:
        holder.close()
        waiter.close()


def test_a_lock_holder_line_with_escapes_is_printed_plain(device: SshDevice):
    holder, waiter = device.runner(), device.runner(lock_timeout_s=1.0)
    said: list[str] = []
    waiter.say = said.append
    try:
        with holder.device_lock("measuring"):
            (device.cache / "device.lock").write_text("\x1b]8;;http://evil\x07click\x1b]8;;\x07 \x1b[1Ahere\n")
            with pytest.raises(ssh.DeviceBusyError) as caught, waiter.device_lock("deploying x"):
                pass
    finally:
        holder.close()
        waiter.close()
    for text in (*said, str(caught.value)):
        assert "\x1b" not in text and "\x07" not in text and "http://evil" not in text
    assert "(click here)" in str(caught.value)


# -- the device's cache is verified by sha256, not trusted by size, and left clean ---------------------------

def test_a_tampered_device_cache_is_uploaded_again(device: SshDevice, digits_onnx: Path):
    from edgepack.runners.base import HARNESS

    request = RunRequest(digits_onnx, runs=3, warmup=0)
    assert device.runner().run([request])[0].ok
    model = device.cache / "models" / f"{hashlib.sha256(digits_onnx.read_bytes()).hexdigest()}.onnx"
    harness = device.cache / "models" / f"{hashlib.sha256(HARNESS.read_bytes()).hexdigest()}.py"
    size = model.stat().st_size
    model.write_bytes(b"\0" * size)  # same size, other bytes
    fake = b'import json; print(json.dumps({"latency_ms": {"p50": 0.0}, "harness_version": "fake"}))\n'
    harness.write_bytes(fake + b"#" * (harness.stat().st_size - len(fake) - 1) + b"\n")
    runner = device.runner()  # a new connection, which knows nothing of earlier uploads
    try:
        measurement = runner.run([request])[0]
    finally:
        runner.close()
    assert measurement.ok, measurement.error
    assert measurement.result.raw.get("harness_version") != "fake" and (measurement.result.p50_ms or 0) > 0
    assert model.read_bytes() == digits_onnx.read_bytes() and harness.read_bytes() == HARNESS.read_bytes()


def test_profile_over_ssh_leaves_no_trace_files_or_partial_uploads(device: SshDevice, digits_onnx: Path):
    models = device.cache / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / f"{'ab' * 32}.onnx.part-1700000000000000000").write_bytes(b"half an upload")  # a dead upload's
    (models / "ort_profile_2025-01-01_00-00-00.json").write_text("[]")  # an old harness's trace
    runner = device.runner()
    try:
        profiled, plain = runner.run([RunRequest(digits_onnx, runs=3000, op_profile=True, target_ci=None),
                                      RunRequest(digits_onnx, runs=3000, target_ci=None)])
    finally:
        runner.close()
    assert profiled.ok and profiled.result.op_profile is not None and profiled.result.op_profile.ops
    # the profiler kept every event of the timed runs: 190 MB against 68 MB for this model at 3000 runs
    assert (profiled.result.peak_rss_mb or 0) < (plain.result.peak_rss_mb or 0) * 1.25 + 20
    left = [p.name for p in models.iterdir()]  # the cache is the board's: other tests' models are there too
    assert not [n for n in left if ".part-" in n or n.startswith("ort_profile")] and f"{'ab' * 32}.onnx" not in left
    assert not device.leftover_temp_dirs()


# -- a board that hangs, floods, lies or lacks what it needs -------------------------------------------------

def test_a_board_whose_python_hangs_fails_the_build_in_one_line_and_is_left_clean(
        cli, device: SshDevice, digits_onnx: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(ssh, "DESCRIBE_TIMEOUT_S", 3.0)
    python = device.broken_python("hangs", 'echo $$ >> "$PIDS"\nsleep 600 &\necho $! >> "$PIDS"\nwait')
    start = time.monotonic()
    last = assert_board_fault(cli(*build_args(digits_onnx, tmp_path), *ssh_args(device, python)),
                              "did not finish within 3 s", "harness.py --describe", "killed")
    assert time.monotonic() - start < 60, last  # was: 124 s, then a TimeoutError traceback
    pids = device.started_pids("hangs")
    assert len(pids) == 2 and not [p for p in pids if running(p)]  # the shell and its sleep: both ended
    assert not (tmp_path / "dist").exists() and not device.leftover_temp_dirs()


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_board_flooding_its_output_is_cut_at_the_cap_in_bounded_memory(device: SshDevice, digits_onnx: Path,
                                                                         stream: str):
    redirect = " >&2" if stream == "stderr" else ""
    python = device.broken_python(f"floods-{stream}", f'echo $$ >> "$PIDS"\nexec yes edgepack{redirect}')
    runner = device.runner(python=python)
    tracemalloc.start()
    try:
        measurement = runner.run([RunRequest(digits_onnx, runs=3, warmup=0, timeout_s=120)])[0]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        runner.close()
    assert measurement.error == f"the board sent more than 16 MB on {stream}: stopped, and its processes killed"
    assert peak < 48 * 2**20, peak / 2**20  # 16 MB kept at most (was: all of it, 259 MB for 1.5 GB)
    pids = device.started_pids(f"floods-{stream}")
    assert pids and not [p for p in pids if running(p)]
    assert not device.leftover_temp_dirs()


def test_a_hung_measurement_is_killed_as_a_group_and_reported(device: SshDevice, digits_onnx: Path):
    python = device.broken_python("hangs-measuring", 'echo $$ >> "$PIDS"\nsleep 600 &\necho $! >> "$PIDS"\nwait')
    runner = device.runner(python=python)
    try:
        measurement = runner.run([RunRequest(digits_onnx, runs=3, warmup=0, timeout_s=2)])[0]
    finally:
        runner.close()
    assert measurement.error == "timeout: killed after 2 s"
    pids = device.started_pids("hangs-measuring")
    assert len(pids) == 2 and not [p for p in pids if running(p)]


ESCAPES = r"printf '\033]0;owned\007\033[2J\033[31mred\r\nedgepack: error: fake line\n' >&2"


def test_text_from_the_board_reaches_the_terminal_without_escapes(cli, one_line_error, device: SshDevice,
                                                                  digits_onnx: Path, tmp_path: Path):
    python = device.broken_python("says-escapes", f"{ESCAPES}\nexit 127")  # "not found", in colours
    line = one_line_error(cli("profile", digits_onnx, "--device", "rpi4", *ssh_args(device, python)),
                          "was not found on the device", "red edgepack: error: fake line")
    assert "\x1b" not in line and "\r" not in line and "\x07" not in line and "owned" not in line


@pytest.fixture(scope="module")
def python_without_numpy(tmp_path_factory) -> str:
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    return str(venv / "bin" / "python")


def test_a_board_without_numpy_or_python_is_named(cli, one_line_error, device: SshDevice, digits_onnx: Path,
                                                  python_without_numpy: str, tmp_path: Path):
    build = ["build", digits_onnx, "--device", "rpi4", "--formats", "onnx", "--precisions", "fp32", "--threads", "1",
             "--runs", "3", "--cache", tmp_path / "c", "-o", tmp_path / "dist"]
    for python, message in ((python_without_numpy, "numpy is not installed on the device"),
                            ("/opt/no/such/python3", "'/opt/no/such/python3' was not found on the device")):
        code, out, err = cli(*build, *ssh_args(device, python))  # after its progress lines, the reason, once
        assert code == 2 and out == "" and "Traceback" not in err and "no candidate meets" not in err
        assert err.splitlines()[-1].startswith("edgepack: error: ") and message in err.splitlines()[-1]
    one_line_error(cli("profile", digits_onnx, "--device", "rpi4", *ssh_args(device, python_without_numpy)),
                   "numpy is not installed on the device", "pip install numpy")
    assert not (tmp_path / "dist").exists()


def test_sshd_dying_mid_profile_reads_connection_lost(fresh_device: SshDevice, digits_onnx: Path):
    from edgepack.profiling import profile_model

    rpi4 = ProfileRegistry.discover([]).get("rpi4")
    options = SshOptions((fresh_device.target,), fresh_device.known_hosts, fresh_device.client_key,
                         remote_python=fresh_device.python, ssh_config=fresh_device.root / "no_ssh_config")
    report: list[object] = []
    thread = threading.Thread(target=lambda: report.append(profile_model(
        digits_onnx, rpi4, options, runs=3, warmup=300_000, threads=1, timeout_s=120)))  # long: in its warm-up
    thread.start()
    deadline = time.monotonic() + 60
    while not (pids := [p.read_text().strip() for p in fresh_device.tmp.glob("edgepack.*/.edgepack-harness.pid")]) \
            or not pids[0].isdigit():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)
    pid = int(pids[0])
    fresh_device.kill()
    thread.join(timeout=60)
    with contextlib.suppress(ProcessLookupError):  # the harness outlives its connection by design: end it here
        os.killpg(pid, signal.SIGKILL)
    assert report, "profile did not return"
    error = report[0].measurements[0].error
    assert error and error.startswith("connection lost"), error
