"""A board that hangs, floods or lies at the SSH seam: one line, the right exit code, nothing left running.

The board is the real sshd on loopback; its "Python" is a shell script the test writes
(``SshDevice.broken_python``), exactly like a broken board.
"""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path

import pytest

from edgepack.runners import ssh
from edgepack.runners.base import RunRequest
from edgepack.runners.loopback import SshDevice, running

pytestmark = pytest.mark.device

# a Python that answers --describe (so that a build or profile gets as far as measuring) and then misbehaves
DESCRIBES = 'case " $* " in *" --describe "*) exec "$REAL" "$@";; esac\n'


def ssh_args(dev: SshDevice, python: str) -> list[str]:
    return ["--host", dev.target, "--known-hosts", str(dev.known_hosts), "--identity", str(dev.client_key),
            "--remote-python", python]


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
