from __future__ import annotations

from pathlib import Path

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
