"""An emulated Raspberry Pi OS board: Debian 12 arm64 under qemu-user, reached over real SSH.

Raspberry Pi OS Bookworm is Debian 12 arm64: the same Python 3.11 and numpy 1.24. This module builds
that userland once with debootstrap (cached as a tarball under ``~/.cache/edgepack/boards/``), puts
aarch64 wheels of the runtimes in a venv for user ``pi``, and starts the board's own sshd (an aarch64
binary, run by qemu through binfmt_misc) on a loopback port. Everything the board runs - the harness,
``run.py``, ``classify.py`` - runs as aarch64 code with the board's Python, numpy and runtimes.

The board lives in its own PID and mount namespaces (``unshare``): its /proc, /dev and /sys mounts are
never seen outside, and ending the namespace's first process ends every process the board started and
undoes every mount, whatever state it was left in. Needs root (chroot, namespaces) and the
``qemu-user-static``, ``binfmt-support`` and ``debootstrap`` packages (``make board-deps``).

Its latencies are those of an emulator, not of a board: the harness reports ``emulated: true`` and
edgepack labels them so everywhere. See ``python -m edgepack.runners.emulated --help``.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.errors import EdgepackError
from edgepack.runners.loopback import free_port, keygen

SUITE = "bookworm"  # Raspberry Pi OS Bookworm's Debian base
PACKAGES = ["python3", "python3-numpy", "python3-venv", "python3-pil", "openssh-server", "procps"]
# The newest runtimes whose aarch64 wheels run under Debian 12's qemu 7.2: onnxruntime 1.32 and
# ai-edge-litert 2.3 die with SIGSEGV there whatever QEMU_CPU says (on a real Pi they run).
RUNTIMES = ["tflite-runtime==2.14.0", "onnxruntime==1.20.1"]
WHEEL_PLATFORMS = ["manylinux_2_34_aarch64", "manylinux_2_28_aarch64", "manylinux_2_27_aarch64",
                   "manylinux2014_aarch64"]
IMAGE_VERSION = 1  # bump when anything above changes: the cached image is then built again
USER, VENV = "pi", "/home/pi/env"
PYTHON = f"{VENV}/bin/python3"
DEFAULT_MIRROR = "http://deb.debian.org/debian"


class BoardError(EdgepackError):
    """The emulated board cannot be built or started on this machine."""


def boards_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgepack" / "boards"


def image_path() -> Path:
    return boards_dir() / f"{SUITE}-arm64-v{IMAGE_VERSION}.tar"


# -- what the machine needs ----------------------------------------------------------------------------
def require_emulation() -> None:
    """Root, binfmt_misc mounted and qemu-aarch64 registered with the F flag (usable inside a chroot)."""
    if os.geteuid() != 0:
        raise BoardError("the emulated board needs root (chroot and namespaces)", "run it with sudo")
    binfmt = Path("/proc/sys/fs/binfmt_misc")
    if not (binfmt / "status").exists():
        subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(binfmt)], capture_output=True)
    entry = binfmt / "qemu-aarch64"
    if not entry.exists() and shutil.which("update-binfmts"):
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    if not entry.exists():
        raise BoardError("qemu-aarch64 is not registered with binfmt_misc",
                         "install qemu-user-static and binfmt-support (make board-deps)")
    text = entry.read_text()
    if not text.startswith("enabled") or not re.search(r"^flags: .*F", text, re.M):
        raise BoardError(f"qemu-aarch64 in binfmt_misc is not enabled with the F flag:\n{text}",
                         "reinstall qemu-user-static (its binfmt entry opens the interpreter when registered)")
    for tool in ("debootstrap", "unshare", "chroot"):
        if shutil.which(tool) is None:
            raise BoardError(f"{tool} is not installed", "make board-deps")


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources), else deb.debian.org."""
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for match in re.finditer(r"^URIs:\s*(\S+)", path.read_text(), re.M):
            if not match.group(1).rstrip("/").endswith("-security"):
                return match.group(1)
    sources = Path("/etc/apt/sources.list")
    if sources.exists():
        for match in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+\S+\s+main", sources.read_text(), re.M):
            if not match.group(1).rstrip("/").endswith("-security"):
                return match.group(1)
    return DEFAULT_MIRROR


# -- the image, built once -------------------------------------------------------------------------------
def build_image(say: Callable[[str], None] = print) -> Path:
    """The cached rootfs tarball, built when missing (about 7 minutes on 2 cores)."""
    image = image_path()
    if image.exists():
        return image
    require_emulation()
    image.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".building-", dir=image.parent))
    root = work / "rootfs"
    try:
        mirror = debian_mirror()
        say(f"emulated board: debootstrap {SUITE} arm64 from {mirror} (once; about 7 minutes)")
        # in a mount namespace of its own: the /proc and /sys it mounts in the target cannot outlive it
        _run(["unshare", "--mount", "--propagation", "private", "debootstrap", "--arch=arm64", "--variant=minbase",
              f"--include={','.join(PACKAGES)}", SUITE,
              str(root), mirror], "debootstrap")
        say("emulated board: the runtimes' aarch64 wheels: " + ", ".join(RUNTIMES))
        _run([sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "--no-deps",
              *(a for p in WHEEL_PLATFORMS for a in ("--platform", p)), "--python-version", "3.11",
              "--implementation", "cp", "--abi", "cp311", "-d", str(work / "wheels"), *RUNTIMES], "pip download")
        _in_board(root, f"useradd --create-home --shell /bin/bash {USER} && usermod -p '*' {USER} && "
                        f"python3 -m venv --system-site-packages --without-pip {VENV}")
        site = root / VENV.lstrip("/") / "lib" / "python3.11" / "site-packages"
        # installed from here (the wheels are aarch64 files; nothing of them runs during the install),
        # --no-deps: both import only numpy (Debian's 1.24, through --system-site-packages)
        _run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-compile", "--no-index",
              "--target", str(site), *(a for p in WHEEL_PLATFORMS for a in ("--platform", p)),
              "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311", "--only-binary=:all:",
              *map(str, sorted((work / "wheels").glob("*.whl")))], "pip install")
        _in_board(root, f"chown -R {USER}:{USER} {VENV} && rm -f /etc/ssh/ssh_host_*")
        _in_board(root, f"{PYTHON} -c 'import numpy, tflite_runtime.interpreter, onnxruntime'")
        part = image.with_name(image.name + ".part")
        _run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(part), "."], "tar")
        part.replace(image)
        say(f"emulated board: image cached in {image}")
        return image
    finally:
        _remove_tree(work)


def _run(argv: list[str], what: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip() or done.stdout.strip()).splitlines()[-3:]
        raise BoardError(f"emulated board: {what} failed ({done.returncode}): {' | '.join(tail)}",
                         "check the network to the Debian mirror and PyPI, then run it again")


def _namespace_script(root: Path, then: str) -> list[str]:
    """A shell in new PID and mount namespaces that mounts the board's /proc, /dev and /sys, then runs
    ``then`` in the chroot. The mounts exist only in that namespace."""
    r = shlex.quote(str(root))
    script = (f"mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev && "
              f"mount -t sysfs -o ro sysfs {r}/sys && mkdir -p {r}/run/sshd && {then}")
    return ["unshare", "--pid", "--fork", "--mount", "--propagation", "private", "sh", "-c", script]


def _in_board(root: Path, command: str) -> None:
    _run(_namespace_script(root, f"chroot {shlex.quote(str(root))} sh -c {shlex.quote(command)}"),
         f"in the board: {command}")


def _mounts_under(folder: Path) -> list[str]:
    prefix = str(folder.resolve())
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].encode().decode("unicode_escape")
        if point == prefix or point.startswith(prefix + "/"):
            found.append(point)
    return found


def _remove_tree(folder: Path) -> None:
    """Remove a board's folder, never through a mount (its /dev is the machine's)."""
    if not folder.exists():
        return
    if mounts := _mounts_under(folder):
        raise BoardError(f"not removing {folder}: still mounted there: {', '.join(mounts)}",
                         "stop the board's processes first")
    subprocess.run(["rm", "-rf", "--one-file-system", "--", str(folder)], check=True)


# -- a running board -------------------------------------------------------------------------------------
@dataclass
class EmulatedBoard:
    """One running board in ``folder`` (its rootfs, keys, known_hosts and state)."""

    folder: Path
    port: int = 0
    pid: int = 0  # the namespace's first process: ending it ends the board

    @property
    def root(self) -> Path:
        return self.folder / "rootfs"

    @property
    def client_key(self) -> Path:
        return self.folder / "client_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.folder / "known_hosts"

    @property
    def target(self) -> str:
        return f"{USER}@127.0.0.1:{self.port}"

    @property
    def python(self) -> str:
        return PYTHON

    def flags(self) -> list[str]:
        """What to pass to ``edgepack build/profile/deploy --device rpi4`` to use this board."""
        return ["--host", self.target, "--identity", str(self.client_key), "--known-hosts", str(self.known_hosts),
                "--remote-python", self.python]

    def runner(self, **overrides: Any) -> Any:  # an SshRunner logged in as pi
        from edgepack.runners.ssh import SshRunner
        from edgepack.runners.ssh_login import parse_target

        target = parse_target(self.target, USER, 22, ssh_config=self.folder / "no_ssh_config", identity=self.client_key)
        return SshRunner(target, **{"python": self.python, "known_hosts": self.known_hosts, **overrides})

    @classmethod
    def start(cls, folder: Path, say: Callable[[str], None] = print) -> EmulatedBoard:
        require_emulation()
        image = build_image(say)
        folder.mkdir(parents=True, exist_ok=True)
        board = cls(folder)
        if board.root.exists():
            _remove_tree(board.root)
        board.root.mkdir()
        _run(["tar", "--numeric-owner", "-xpf", str(image), "-C", str(board.root)], "unpacking the image")
        board._keys()
        board.port = free_port()
        board._sshd_config()
        log = (folder / "sshd.log").open("ab")
        r = shlex.quote(str(board.root))
        proc = subprocess.Popen(
            _namespace_script(board.root, f"exec chroot {r} /usr/sbin/sshd -D -e -f /etc/ssh/edgepack_sshd_config"),
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
        board.pid = proc.pid
        board._save()
        try:
            board._wait_for_port(proc)
        except BaseException:
            board.stop()
            raise
        return board

    def _keys(self) -> None:
        for name in ("host_ed25519", "client_ed25519"):
            for path in (self.folder / name, self.folder / f"{name}.pub"):
                path.unlink(missing_ok=True)
            keygen(self.folder / name)
        ssh = self.root / "etc" / "ssh"
        shutil.copyfile(self.folder / "host_ed25519", ssh / "edgepack_host_ed25519")
        (ssh / "edgepack_host_ed25519").chmod(0o600)
        home = self.root / "home" / USER
        uid, gid = home.stat().st_uid, home.stat().st_gid
        dot_ssh = home / ".ssh"
        dot_ssh.mkdir(mode=0o700, exist_ok=True)
        shutil.copyfile(self.folder / "client_ed25519.pub", dot_ssh / "authorized_keys")
        (dot_ssh / "authorized_keys").chmod(0o600)
        for path in (dot_ssh, dot_ssh / "authorized_keys"):
            os.chown(path, uid, gid)

    def _sshd_config(self) -> None:
        (self.root / "etc" / "ssh" / "edgepack_sshd_config").write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", "HostKey /etc/ssh/edgepack_host_ed25519",
            "PidFile /run/sshd-edgepack.pid", "AuthorizedKeysFile .ssh/authorized_keys", "PubkeyAuthentication yes",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "UsePAM no", "PermitRootLogin no",
            "AllowTcpForwarding no", "X11Forwarding no", "Subsystem sftp internal-sftp", "MaxStartups 50:30:100",
            ""]))
        key_type, key_b64 = (self.folder / "host_ed25519.pub").read_text().split()[:2]
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key_type} {key_b64}\n")

    def _wait_for_port(self, proc: subprocess.Popen[bytes]) -> None:
        deadline = time.monotonic() + 60  # sshd under emulation takes a second or two
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if proc.poll() is not None:
                    tail = (self.folder / "sshd.log").read_text(errors="replace").strip().splitlines()[-3:]
                    raise BoardError("the emulated board's sshd exited: " + " | ".join(tail)) from None
                time.sleep(0.2)
        raise BoardError("the emulated board's sshd did not answer within 60 s")

    def _save(self) -> None:
        (self.folder / "board.json").write_text(json.dumps({"pid": self.pid, "port": self.port}))

    @classmethod
    def attach(cls, folder: Path) -> EmulatedBoard | None:
        state = folder / "board.json"
        if not state.exists():
            return None
        data = json.loads(state.read_text())
        return cls(folder, data["port"], data["pid"])

    def processes(self) -> list[int]:
        """Every process of the board: the one we started and all its descendants."""
        children: dict[int, list[int]] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z":  # ended, waiting for its parent to read its status
                continue
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
        alive = {pid for pids in children.values() for pid in pids}
        found, todo = [], [self.pid] if self.pid in alive else []
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def kill_sshd(self) -> None:
        """Kill the board's sshd and every process it started, as a power cut would; ``stop`` still
        removes the board. (The namespace ends with its first process.)"""
        for pid in self.processes():
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.kill(pid, 9)
        self._reap()

    def stop(self) -> None:
        """End every process of the board (the namespace's first one takes the rest with it), then
        remove its folder's rootfs. Its mounts were only in that namespace: none remain."""
        self.kill_sshd()
        if _mounts_under(self.root):
            raise BoardError(f"the board's mounts outlived it: {_mounts_under(self.root)}")
        _remove_tree(self.root)
        (self.folder / "board.json").unlink(missing_ok=True)

    def _reap(self) -> None:
        deadline = time.monotonic() + 10
        while self.processes() and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)
            time.sleep(0.05)
        if left := self.processes():
            raise BoardError(f"the board's processes {left} did not end")


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m edgepack.runners.emulated",
                                     description="An emulated Raspberry Pi OS (Debian 12 arm64) board on loopback.")
    parser.add_argument("action", choices=["image", "start", "stop"],
                        help="image: build the cached image; start: start a board; stop: stop it")
    parser.add_argument("--folder", type=Path, default=boards_dir() / "running",
                        help="where the running board lives (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        if args.action == "image":
            print(build_image())
        elif args.action == "start":
            if (old := EmulatedBoard.attach(args.folder)) is not None and old.processes():
                raise BoardError(f"a board already runs from {args.folder} (port {old.port})", "make board-stop first")
            board = EmulatedBoard.start(args.folder)
            print(f"emulated Raspberry Pi OS board (Debian 12 arm64 under qemu) on 127.0.0.1:{board.port}")
            print("its latencies are an emulator's, not a Pi's: edgepack labels them 'emulated'")
            print("use it with:  edgepack build MODEL --device rpi4 " + " ".join(board.flags()))
        else:
            board = EmulatedBoard.attach(args.folder)
            if board is None:
                print(f"no board runs from {args.folder}")
                return 0
            board.stop()
            print(f"stopped the board on port {board.port}")
    except EdgepackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
