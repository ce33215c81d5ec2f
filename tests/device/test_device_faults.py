"""Fixes from the fault and abuse probe that involve a board: a real sshd on loopback (issue 11).

Each test failed before its fix; the numbers are the probe's items.
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
import tarfile
import threading
import time
from pathlib import Path

import pytest

from edgepack.deploy import deploy_package
from edgepack.profiles import ProfileRegistry
from edgepack.runners.base import RunRequest
from edgepack.runners.factory import SshOptions
from edgepack.runners.loopback import SshDevice

pytestmark = pytest.mark.device


def ssh_args(dev: SshDevice, python: str | None = None) -> list[str]:
    return ["--host", dev.target, "--known-hosts", str(dev.known_hosts), "--identity", str(dev.client_key),
            "--remote-python", python or dev.python]


def ssh_options(dev: SshDevice) -> SshOptions:
    return SshOptions((dev.target,), dev.known_hosts, dev.client_key, remote_python=dev.python,
                      ssh_config=dev.root / "no_ssh_config")


def release_is_complete(release: Path) -> bool:
    manifest = json.loads((release / "manifest.json").read_text())
    return all(hashlib.sha256((release / n).read_bytes()).hexdigest() == h for n, h in manifest["files"].items())


# -- 2. concurrent deploys take the device's lock -------------------------------------------------------

def test_three_concurrent_deploys_ten_rounds_current_is_always_complete(device: SshDevice, package: Path,
                                                                        tmp_path: Path):
    host = ProfileRegistry.discover([]).get("host")
    remote = tmp_path / "remote"
    waits: list[str] = []
    for _ in range(10):
        results: list[object] = []

        def deploy(results: list[object] = results) -> None:
            try:
                results.append(deploy_package(package, host, ssh_options(device), str(remote), say=waits.append)[0])
            except Exception as exc:  # collected: every deploy must succeed
                results.append(exc)

        threads = [threading.Thread(target=deploy) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(not isinstance(r, Exception) for r in results), results
        current = remote / "digits-host" / "current"
        assert current.is_symlink() and release_is_complete(current.resolve())
        assert any(current.resolve().name == Path(r.path).name for r in results)  # one of this round's
        releases = sorted(p.name for p in (remote / "digits-host" / "releases").iterdir())
        assert not [r for r in releases if r.startswith(".")] and 1 <= len(releases) <= 2
    assert any("the device is in use (deploying digits-host by" in w for w in waits)  # it waited, and said for whom
    assert not device.leftover_temp_dirs()


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


# -- 4. only regular files the manifest lists, with plain names ------------------------------------------

def tamper(package: Path, tmp_path: Path, kind: str) -> Path:
    copy = tmp_path / package.name
    shutil.copytree(package, copy)
    if kind == "unlisted file":
        (copy / "numpy.py").write_text("raise SystemExit('imported from the package')\n")
    elif kind == "symlink":
        secret = tmp_path / "secret.txt"
        secret.write_text("not for the board")
        (copy / "README.md").unlink()
        (copy / "README.md").symlink_to(secret)
        manifest = json.loads((copy / "manifest.json").read_text())
        manifest["files"]["README.md"] = hashlib.sha256(secret.read_bytes()).hexdigest()
        (copy / "manifest.json").write_text(json.dumps(manifest))
    else:
        outside = tmp_path / "outside.txt"
        outside.write_text("outside")
        manifest = json.loads((copy / "manifest.json").read_text())
        name = "../outside.txt" if kind == "dotdot name" else str(outside)
        manifest["files"][name] = hashlib.sha256(b"outside").hexdigest()
        (copy / "manifest.json").write_text(json.dumps(manifest))
    if kind == "unlisted file":  # as the probe did: inside a .tar.gz
        archive = tmp_path / f"{package.name}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            tar.add(copy, arcname=package.name)
        return archive
    return copy


@pytest.mark.parametrize(("kind", "message"), [
    ("unlisted file", "numpy.py is not listed in manifest.json"),
    ("symlink", "README.md is a link"),
    ("dotdot name", "manifest.json names '../outside.txt', not a plain file name"),
    ("absolute name", "not a plain file name"),
])
def test_deploy_refuses_what_the_manifest_does_not_cover(cli, one_line_error, device: SshDevice, package: Path,
                                                         tmp_path: Path, kind: str, message: str):
    tampered = tamper(package, tmp_path, kind)
    one_line_error(cli("deploy", tampered, "--device", "host", *ssh_args(device), "--remote-dir", tmp_path / "r"),
                   message)
    assert not (tmp_path / "r").exists()  # nothing uploaded


# -- 5. the device's cache is verified by sha256, not trusted by size -------------------------------------

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
    assert measurement.result.get("harness_version") != "fake" and (measurement.result.p50_ms or 0) > 0
    assert model.read_bytes() == digits_onnx.read_bytes() and harness.read_bytes() == HARNESS.read_bytes()


# -- 10, 11. profile over SSH: no profiler in the timing, nothing left in the cache ------------------------

def test_profile_over_ssh_leaves_no_trace_files_or_partial_uploads(device: SshDevice, digits_onnx: Path):
    models = device.cache / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / f"{'ab' * 32}.onnx.part-1700000000000000000").write_bytes(b"half an upload")  # a dead upload's
    (models / "ort_profile_2025-01-01_00-00-00.json").write_text("[]")  # an old harness's trace
    runner = device.runner()
    try:
        profiled, plain = runner.run([RunRequest(digits_onnx, runs=3000, op_profile=True),
                                      RunRequest(digits_onnx, runs=3000)])
    finally:
        runner.close()
    assert profiled.ok and (profiled.result.op_profile or {}).get("ops")
    # the profiler kept every event of the timed runs: 190 MB against 68 MB for this model at 3000 runs
    assert (profiled.result.peak_rss_mb or 0) < (plain.result.peak_rss_mb or 0) * 1.25 + 20
    left = [p.name for p in models.iterdir()]  # the cache is the board's: other tests' models are there too
    assert not [n for n in left if ".part-" in n or n.startswith("ort_profile")] and f"{'ab' * 32}.onnx" not in left
    assert not device.leftover_temp_dirs()


# -- 13. what is missing on the board is said; a lost connection is called that --------------------------

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
        digits_onnx, rpi4, options, runs=300_000, warmup=0, threads=1, timeout_s=120)))
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
