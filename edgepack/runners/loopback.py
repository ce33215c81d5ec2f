"""A real OpenSSH server on 127.0.0.1 standing in for a board, for tests and benchmarks.

Not a fake: it is OpenSSH's own sshd with its own host key and authorized key, reached by the real
SshRunner. The "device's" Python is this interpreter (numpy, onnxruntime, ai_edge_litert), so the
harness runs exactly as it does on a board. See shared/design/DEVICE_TESTS.md.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SSHD = Path("/usr/sbin/sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie waiting to be reaped has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


class SshDevice:
    """One sshd with its own host key, a client key allowed to log in, and its own TMPDIR and cache."""

    def __init__(self, root: Path, client_key: Path | None = None) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.tmp = root / "device_tmp"  # the device's TMPDIR: temp dirs must not outlive a run
        self.cache = root / "device_xdg" / "edgepack"  # its own cache and lock: boards of a pool are apart
        self.tmp.mkdir(exist_ok=True)
        self.host_key = root / "host_ed25519"
        keygen(self.host_key)
        self.client_key = client_key or root / "client_ed25519"
        if client_key is None:
            keygen(self.client_key)
        shutil.copyfile(f"{self.client_key}.pub", root / "authorized_keys")
        (root / "authorized_keys").chmod(0o600)
        self.port = free_port()
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text(self.known_hosts_line())
        self.python = sys.executable  # the device's Python: numpy, onnxruntime and ai_edge_litert
        self.proc: subprocess.Popen[bytes] | None = None

    def known_hosts_line(self) -> str:
        key_type, key_b64 = Path(f"{self.host_key}.pub").read_text().split()[:2]
        return f"[127.0.0.1]:{self.port} {key_type} {key_b64}\n"

    @property
    def target(self) -> str:
        return f"root@127.0.0.1:{self.port}"

    def start(self) -> SshDevice:
        config = self.root / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {self.root / 'sshd.pid'}", f"AuthorizedKeysFile {self.root / 'authorized_keys'}",
            "PubkeyAuthentication yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "AllowTcpForwarding no", "X11Forwarding no",
            "PermitRootLogin prohibit-password", "Subsystem sftp internal-sftp", "MaxStartups 50:30:100",
            f"SetEnv TMPDIR={self.tmp} XDG_CACHE_HOME={self.cache.parent}", ""]))
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=subprocess.DEVNULL,
                                     stderr=(self.root / "sshd.log").open("ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError((self.root / "sshd.log").read_text()) from None
                time.sleep(0.05)
        raise RuntimeError("sshd did not start")

    def kill(self) -> None:
        """Kill sshd and its session children (found through the pid's children, never by name)."""
        if self.proc is None:
            return
        children = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout.split()
        self.proc.kill()
        self.proc.wait()
        for child in children:
            subprocess.run(["kill", "-9", child], capture_output=True)
        self.proc = None

    def runner(self, **overrides: Any) -> Any:  # an SshRunner
        from edgepack.runners.ssh import SshRunner
        from edgepack.runners.ssh_login import parse_target

        target = parse_target(self.target, "root", 22, ssh_config=self.root / "no_ssh_config",
                              identity=self.client_key)
        options = {"python": self.python, "known_hosts": self.known_hosts, "remote_cache": str(self.cache)}
        options.update(overrides)
        return SshRunner(target, **options)

    def leftover_temp_dirs(self) -> list[Path]:
        return sorted(self.tmp.glob("edgepack.*"))

    def broken_python(self, name: str, script: str) -> str:
        """A board whose "Python" is this shell script (a hung or lying interpreter); returns its path.

        ``script`` is the body after ``#!/bin/sh``; ``$REAL`` in it is this device's real Python and
        ``$PIDS`` a file it may append process ids to (read them with ``started_pids(name)``).
        """
        path = self.root / f"{name}.sh"
        pids = self.root / f"{name}.pids"
        path.write_text(f"#!/bin/sh\nREAL={self.python}\nPIDS={pids}\n{script}\n")
        path.chmod(0o755)
        return str(path)

    def started_pids(self, name: str) -> list[int]:
        """The process ids that the broken Python ``name`` wrote to its ``$PIDS`` file."""
        found = self.root / f"{name}.pids"
        return [int(p) for p in found.read_text().split()] if found.exists() else []
