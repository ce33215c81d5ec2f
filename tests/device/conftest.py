from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepack.runners.loopback import SSHD, SshDevice

pytestmark = pytest.mark.device


@pytest.fixture(scope="session", autouse=True)
def _need_sshd() -> None:
    if not SSHD.exists():
        pytest.fail("/usr/sbin/sshd is missing: `make test` installs openssh-server (make device-deps)")


@pytest.fixture(scope="session")
def device(tmp_path_factory: pytest.TempPathFactory):
    """A long-lived SSH device shared by the tests that do not break it."""
    dev = SshDevice(tmp_path_factory.mktemp("device")).start()
    yield dev
    dev.kill()


@pytest.fixture()
def fresh_device(tmp_path: Path):
    """A device of its own, for tests that kill or restart it."""
    dev = SshDevice(tmp_path / "device").start()
    yield dev
    dev.kill()


@pytest.fixture(scope="module")
def package(tmp_path_factory, digits, digits_onnx: Path) -> Path:
    """A package edgepack built (fp32 ONNX, measured on this machine), for the deploy tests."""
    from edgepack.cli import main

    root = tmp_path_factory.mktemp("package")
    np.savez(root / "calib.npz", x=digits.x_train[:100])
    np.savez(root / "eval.npz", x=digits.x_test[:60], y=digits.y_test[:60])
    code = main(["build", str(digits_onnx), "--device", "host", "--calib", str(root / "calib.npz"), "--eval",
                 str(root / "eval.npz"), "--formats", "onnx", "--precisions", "fp32", "--threads", "1",
                 "--runs", "5", "--warmup", "1", "--cache", str(root / "cache"), "-o", str(root / "dist")])
    assert code == 0
    return root / "dist" / "digits-host"
