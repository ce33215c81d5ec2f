"""A pool of real loopback boards: a board that dies mid-build is dropped and the build finishes on the
others; two builds on one board take turns on its lock and never time it at the same moment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgepack.bundle import write_build_package
from edgepack.data import Dataset
from edgepack.model import load_model
from edgepack.pipeline import BuildOptions, build
from edgepack.profiles import ProfileRegistry
from edgepack.runners.factory import SshOptions
from edgepack.runners.loopback import SshDevice, free_port, keygen
from edgepack.search.space import Constraints

pytestmark = pytest.mark.device


@pytest.fixture()
def boards(tmp_path: Path):
    key = tmp_path / "client_ed25519"
    keygen(key)
    devices = [SshDevice(tmp_path / f"board{i}", client_key=key).start() for i in range(3)]
    yield devices
    for d in devices:
        d.kill()


def test_a_board_killed_mid_build_is_dropped_and_the_others_finish(boards: list[SshDevice], digits,
                                                                  digits_onnx: Path, tmp_path: Path):
    known = tmp_path / "known_hosts"
    known.write_text("".join(d.known_hosts_line() for d in boards))
    ssh = SshOptions(tuple(d.target for d in boards), known, boards[0].client_key, False, boards[0].python)
    options = BuildOptions(Constraints(max_accuracy_drop=3.0), formats=["onnx", "tflite"], precisions=["fp32", "int8"],
                           prune_ratios=(0.0,), threads=[1, 2], runs=20, warmup=2, cache_dir=tmp_path / "cache",
                           jobs=2)
    said: list[str] = []
    killed: list[str] = []

    def say(line: str) -> None:
        said.append(line)
        if line.startswith("measure") and not killed:  # the first measurement is in: one board dies
            victim = next(d for d in boards if d.target.split("@")[1] in line)
            victim.kill()
            killed.append(victim.target.split("@")[1])

    result = build(load_model(digits_onnx), ProfileRegistry.discover().get("host"), options, ssh,
                   Dataset({"image": digits.x_train[:200]}), Dataset({"image": digits.x_test}, digits.y_test), say)
    assert killed and result.chosen is not None
    after = said[said.index(next(s for s in said if s.startswith("measure"))) + 1:]
    lost = [s for s in said if "lost" in s]
    assert len(lost) <= 1 and all(killed[0] in s and "dropped" in s for s in lost)
    # nothing after the kill was measured on the dead board, and the board check ran on a live one
    assert not any(s.startswith(("measure", "confirm")) and s.endswith(killed[0]) for s in after)
    assert result.device_accuracy is not None and result.device_accuracy.ran
    assert result.device_accuracy.accuracy_drop_pts is not None and result.device_accuracy.accuracy_drop_pts < 3.0
    package = write_build_package(result, tmp_path / "dist")
    assert json.loads((package / "manifest.json").read_text())["plan"]["checked_on_device"]["samples"] > 0


def _intervals(cache: Path) -> list[tuple[float, float]]:
    lines = [json.loads(line) for line in (cache / "records.jsonl").read_text().splitlines() if line.strip()]
    return [tuple(r["result"]["measured_at"]) for r in lines if "measured_at" in r["result"]]


def test_two_builds_on_one_board_take_turns(device: SshDevice, digits, digits_onnx: Path, tmp_path: Path):
    np.save(tmp_path / "calib.npy", digits.x_train[:100])
    np.savez(tmp_path / "eval.npz", x=digits.x_test[:100], y=digits.y_test[:100])
    argv = [str(Path(sys.executable).parent / "edgepack"), "build", str(digits_onnx), "--device", "host",
            "--host", device.target, "--known-hosts", str(device.known_hosts), "--identity", str(device.client_key),
            "--remote-python", device.python, "--calib", str(tmp_path / "calib.npy"),
            "--eval", str(tmp_path / "eval.npz"), "--formats", "onnx", "--precisions", "fp32", "--prune", "0",
            "--threads", "1", "--runs", "300"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with device.runner().device_lock("a test holding the board"):  # both builds find the board in use
        procs = [subprocess.Popen([*argv, "--cache", str(tmp_path / f"cache{i}"), "-o", str(tmp_path / f"dist{i}")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
                 for i in range(2)]
        time.sleep(12)
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
        assert "the device is in use (a test holding the board" in err and "waiting" in err
    first, second = _intervals(tmp_path / "cache0"), _intervals(tmp_path / "cache1")
    assert first and second
    for a_start, a_end in first:
        for b_start, b_end in second:
            assert a_end <= b_start or b_end <= a_start, "two measurements overlapped on one board"


# -- a board that cannot be reached at the start ---------------------------------------------------------
def _pool_build(cli, model: Path, hosts: list[str], known_hosts: Path, identity: Path, python: str, root: Path,
                *extra: object) -> tuple[int, str, str]:
    return cli("build", model, "--device", "host", *[a for h in hosts for a in ("--host", h)],
               "--known-hosts", known_hosts, "--identity", identity, "--remote-python", python,
               "--formats", "onnx", "--precisions", "fp32", "--prune", "0", "--threads", "1", "--runs", "3",
               "--warmup", "1", "--cache", root / "cache", "-o", root / "dist", *extra)


def test_a_board_unreachable_at_the_start_is_dropped_once_and_the_build_finishes(cli, device: SshDevice,
                                                                               digits_onnx: Path, tmp_path: Path):
    dead = f"root@127.0.0.1:{free_port()}"  # nothing listens there: connection refused
    code, out, err = _pool_build(cli, digits_onnx, [device.target, dead], device.known_hosts, device.client_key,
                                 device.python, tmp_path, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["measured_on"] == device.target  # the dead board is not where anything was measured
    assert {r["board"] for r in result["candidates"] if r["board"]} == {device.target}
    said = [line for line in err.splitlines() if dead in line]
    assert len(said) == 1 and "cannot be reached" in said[0] and "dropped" in said[0], err
    assert len(list((tmp_path / "dist").glob("*/manifest.json"))) == 1


def test_with_every_board_unreachable_the_build_is_one_line_naming_each(cli, one_line_error, device: SshDevice,
                                                                        digits_onnx: Path, tmp_path: Path):
    dead = [f"root@127.0.0.1:{free_port()}" for _ in range(2)]
    line = one_line_error(_pool_build(cli, digits_onnx, dead, device.known_hosts, device.client_key, device.python,
                                      tmp_path), "no board could be reached", *dead)
    assert line.count("cannot connect") == 2
    assert not (tmp_path / "dist").exists()


def test_the_users_own_ssh_mistakes_still_end_a_pool_build(cli, one_line_error, device: SshDevice,
                                                           digits_onnx: Path, tmp_path: Path):
    dead = f"root@127.0.0.1:{free_port()}"
    stranger = SshDevice(tmp_path / "stranger", client_key=device.client_key).start()  # its key is not known
    try:
        one_line_error(_pool_build(cli, digits_onnx, [device.target, stranger.target, dead], device.known_hosts,
                                   device.client_key, device.python, tmp_path / "a"), "not in known_hosts")
    finally:
        stranger.kill()
    garbage = tmp_path / "not_a_key"
    garbage.write_text("this is not a private key\n")
    line = one_line_error(_pool_build(cli, digits_onnx, [device.target, dead], device.known_hosts, garbage,
                                      device.python, tmp_path / "b"), device.target)
    assert "cannot be reached" not in line and "no board could be reached" not in line
