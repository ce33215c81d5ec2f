"""SshRunner: measure on a board over SSH (paramiko), in fixed steps with the clean-up in ``finally``.

1. connect (reused for a batch; host key checked against known_hosts, unknown and changed keys refused)
2. upload the harness and the model into a content-addressed cache on the device (never twice)
3. make a fresh temporary directory, upload the inputs there
4. run the harness in its own process group, with a timeout that kills the whole group
5. fetch the JSON (and outputs), 6. remove the temporary directory, whatever happened

Every remote command (the harness, ``--describe``, a deployment's steps) runs in its own process group
and is read in bounded chunks: past its timeout, or once the board has sent more than
``STDOUT_LIMIT_BYTES`` on either stream, the channel is closed and the whole group killed, and the
caller is told why (an error Measurement, or ``CommandStopped``). Only the last ``STDERR_KEPT_BYTES``
of stderr are kept. Text from the board reaches a message only through ``edgepack.text.printable``.

Every path and name that reaches the remote shell goes through ``shlex.quote``. Nothing cached on the
device is trusted by its name or size: the harness runs only when its bytes hash to ours (a launcher
checks them, then executes exactly those bytes) and refuses a model whose sha256 differs; either is
then uploaded again. Each batch holds the device's lock (``device_lock``), which ``deploy`` takes too.

The pieces: ``ssh_login`` (the target and its host key), ``remote_command`` (quoting, process groups,
bounded reading), ``device_lock`` (the lock's remote script), ``board_files`` (SFTP uploads and fetches);
this module is the runner that does the steps above with them.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepack.errors import BoardFault
from edgepack.model import file_sha256
from edgepack.runners.base import (
    HARNESS,
    HarnessResult,
    Measurement,
    Runner,
    RunRequest,
    parse_description,
    parse_harness_output,
    raise_for_setup,
)
from edgepack.runners.board_files import TooLarge, fetch_npz, outputs_limit, put_whole
from edgepack.runners.device_lock import DeviceBusyError, await_lock, lock_command
from edgepack.runners.pool import BoardUnreachable, unreachable
from edgepack.runners.remote_command import (
    LAUNCHER,
    CommandStopped,
    RemoteOutput,
    command_line,
    harness_in_workdir,
    in_own_group,
    kill_group_command,
    read_bounded,
)
from edgepack.runners.ssh_login import HostKeyError, SshSetupError, SshTarget, fingerprint, log_in
from edgepack.text import printable

# paramiko logs a failed handshake (a port that does not speak SSH) as a page of traceback through the
# root logger's last resort; the error reaches the user as one line from us instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

DESCRIBE_TIMEOUT_S = 30.0  # harness.py --describe answers in about a second; a board slower than this is hung


@dataclass
class SshRunner(Runner):
    target: SshTarget
    python: str = "python3"
    known_hosts: Path = field(default_factory=lambda: Path.home() / ".ssh" / "known_hosts")
    trust_new_host: bool = False
    remote_cache: str | None = None  # default: $XDG_CACHE_HOME/edgepack (~/.cache/edgepack) on the device
    connect_timeout_s: float = 15.0
    lock_timeout_s: float = 600.0  # how long a batch waits for another edgepack using the device
    say: Callable[[str], None] = field(default=lambda _: None, repr=False)  # progress lines (waiting for a lock)

    def __post_init__(self) -> None:
        self.label = self.target.label
        self._client: Any = None
        self._cache_dir: str | None = None
        self._uploaded: set[str] = set()
        self._stale_dirs: list[str] = []  # temp dirs a lost connection kept us from removing
        self._tmp_base: str | None = None
        self.host_key_fingerprint: str | None = None

    # -- 1. connect ---------------------------------------------------------------------------------
    def _connect(self) -> Any:
        if self._client is not None and self._client.get_transport() is not None \
                and self._client.get_transport().is_active():
            return self._client
        self.close()
        client = log_in(self.target, self.known_hosts, self.trust_new_host, self.connect_timeout_s)
        self._client = client
        self.host_key_fingerprint = "SHA256:" + fingerprint(client.get_transport().get_remote_server_key())
        self._cleanup_stale()
        return client

    def identity(self) -> str:
        """The host key fingerprint: a reinstalled or different board is a different device."""
        import paramiko

        try:
            self._connect()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            kind = BoardUnreachable if unreachable(exc) else SshSetupError  # a pool drops an unreachable board
            raise kind(f"{self.label}: cannot connect ({type(exc).__name__}: {printable(exc, 200)})",
                       "check the host name and port, and that sshd runs on the board") from None
        assert self.host_key_fingerprint is not None
        return self.host_key_fingerprint

    def describe(self) -> HarnessResult:
        """The board's environment from the harness (``--describe``), holding the lock for the upload.

        Raises BoardFault when the board's Python does not answer within DESCRIBE_TIMEOUT_S or floods
        its output (what it started is killed first), SshSetupError when that Python is missing.
        """
        with self.device_lock("describing"):
            harness, digest, _ = self._put_cached(HARNESS, ".py")
            argv = [self.python, "-c", LAUNCHER, harness, digest, "--describe"]
            found = self._command(command_line(argv), DESCRIBE_TIMEOUT_S)
        if found.stopped:
            raise BoardFault(f"{self.label}: the board's Python ({printable(self.python, 100)}) {found.stopped} "
                             "when asked to describe the board (harness.py --describe); edgepack killed what it "
                             "started there", "check that Python on the board runs (log in and try it), or pass "
                                              "--remote-python with one that does")
        self._refuse_missing_command(found.code, found.out, found.err)
        return parse_description(found.out)

    def execute(self, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
        """Run one shell command on the device (the caller quotes every path in it); returns code, out, err.

        The command runs in its own process group; past ``timeout`` seconds, or when it sends more
        than the caps, it is killed as a group and CommandStopped is raised (exit 1: the board's fault).
        """
        found = self._command(command, timeout)
        if found.stopped:
            raise CommandStopped(f"{self.label}: a command on the board {found.stopped}; edgepack killed it",
                                 found.stopped)
        return found.code, found.out, found.err

    def open_sftp(self) -> Any:
        return self._connect().open_sftp()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    @contextlib.contextmanager
    def device_lock(self, purpose: str, timeout_s: float | None = None) -> Iterator[None]:
        """Hold the device's lock (``<cache>/device.lock`` on the device) for the ``with`` block.

        Waits for another holder, saying who it is; raises DeviceBusyError after ``timeout_s``. The lock
        is held by a remote process that ends when our channel closes, so a lost connection releases it.
        """
        timeout_s = self.lock_timeout_s if timeout_s is None else timeout_s
        cache = self._cache()
        command = lock_command(cache, timeout_s, purpose, self._temp_base())
        channel = self._connect().get_transport().open_session()
        channel.settimeout(timeout_s + self.connect_timeout_s)
        try:
            channel.exec_command(command)
            await_lock(channel, timeout_s, self.label, cache, self.say)
            yield
        finally:
            with contextlib.suppress(Exception):  # the connection may be gone: then so is the lock
                channel.shutdown_write()
                channel.close()

    def _exec(self, command: str, timeout: float = 60.0) -> tuple[int, str, str]:
        """A short command of edgepack's own (printf, mkdir, rm, kill): bounded like any other, not grouped."""
        found = self._command(command, timeout, group=False)
        if found.stopped:
            raise CommandStopped(f"{self.label}: a command on the board {found.stopped}; edgepack stopped it",
                                 found.stopped)
        return found.code, found.out, found.err

    def _command(self, command: str, timeout_s: float, *, group: bool = True) -> RemoteOutput:
        """Run ``command`` (a shell command line, quoted by the caller), in its own process group unless
        ``group`` is False; read it bounded; past ``timeout_s`` or the caps, close it and kill its group."""
        channel = self._connect().get_transport().open_session()
        try:
            # setsid: the shell leads a new process group, whose id it prints first; a stop kills that group
            channel.exec_command(in_own_group(command) if group else command)
            out, err, stopped = read_bounded(channel, timeout_s)
            code = -1 if stopped or not channel.exit_status_ready() else channel.recv_exit_status()
        finally:
            channel.close()
        pgid, text = b"", out.decode(errors="replace")
        if group:
            end = out.find(b"\n")
            pgid, text = (bytes(out[:end]), text.partition("\n")[2]) if end >= 0 else (bytes(out), "")
        if stopped and pgid:
            self._kill_group(pgid)
        return RemoteOutput(code, text, err.decode(errors="replace"), stopped)

    def _cleanup_stale(self) -> None:
        while self._stale_dirs:
            self._exec(f"rm -rf -- {shlex.quote(self._stale_dirs.pop())}")

    # -- 2. content-addressed cache -----------------------------------------------------------------
    def _cache(self) -> str:
        if self._cache_dir is None:
            _, out, _ = self._exec('printf %s "${XDG_CACHE_HOME:-$HOME/.cache}"')
            base = out.strip()
            if not base.startswith("/"):  # no HOME either: the login directory
                sftp = self._connect().open_sftp()
                try:
                    base = sftp.normalize(".") + "/.cache"
                finally:
                    sftp.close()
            self._cache_dir = self.remote_cache or f"{base}/edgepack"
            self._exec(f"mkdir -p -- {shlex.quote(self._cache_dir + '/models')}")
        return self._cache_dir

    def _put_cached(self, local: Path, suffix: str, *, again: bool = False) -> tuple[str, str, int]:
        """Upload unless the device has this content already (the harness checks the sha256 before use;
        ``again`` replaces what is there). Returns the remote path, the sha256 and the bytes sent."""
        digest = file_sha256(local)[0]
        remote = f"{self._cache()}/models/{digest}{suffix}"
        if remote in self._uploaded and not again:
            return remote, digest, 0
        sftp = self._connect().open_sftp()
        try:
            try:
                if not again and sftp.stat(remote).st_size == local.stat().st_size:
                    self._uploaded.add(remote)
                    return remote, digest, 0
            except FileNotFoundError:
                pass
            put_whole(sftp, local, remote)
        finally:
            sftp.close()
        self._uploaded.add(remote)
        return remote, digest, local.stat().st_size

    # -- the batch ----------------------------------------------------------------------------------
    def run(self, requests: list[RunRequest]) -> list[Measurement]:
        """The batch, holding the device's lock; a device busy past the lock's timeout fails the batch."""
        import paramiko

        try:
            with self.device_lock("measuring"):
                return [self._held(r) for r in requests]
        except DeviceBusyError as exc:
            return [Measurement(r, self.label, HarnessResult(), str(exc)) for r in requests]
        except (paramiko.SSHException, OSError, EOFError) as exc:  # while taking the lock
            self.close()
            return [self._lost(r, f"{type(exc).__name__}: {exc}", 0.0) for r in requests]

    def _held(self, request: RunRequest) -> Measurement:
        began = time.time()
        measurement = self._one(request)
        measurement.measured_at = (began, time.time())
        return measurement

    def _lost(self, request: RunRequest, why: str, wall_s: float) -> Measurement:
        return Measurement(request, self.label, HarnessResult(), f"connection lost: {printable(why)}", wall_s=wall_s,
                           board_lost=True)

    def _one(self, request: RunRequest) -> Measurement:
        import paramiko

        start = time.perf_counter()
        try:
            measurement = self._measure(request, start)
            if measurement.error_kind in ("model_changed", "harness_changed"):  # a cache changed on the device
                measurement = self._measure(request, start, again=True)
            return raise_for_setup(measurement)
        except (HostKeyError, SshSetupError):
            raise
        except (paramiko.SSHException, OSError, EOFError) as exc:
            self.close()
            return self._lost(request, f"{type(exc).__name__}: {exc}", time.perf_counter() - start)

    def _temp_base(self) -> str:
        if self._tmp_base is None:
            _, out, _ = self._exec('printf %s "${TMPDIR:-/tmp}"')
            self._tmp_base = out.strip() or "/tmp"
        return self._tmp_base

    def _measure(self, request: RunRequest, start: float, *, again: bool = False) -> Measurement:
        harness, harness_sha, sent = self._put_cached(HARNESS, ".py", again=again)
        model, model_sha, model_sent = self._put_cached(request.model, request.model.suffix, again=again)
        workdir = f"{self._temp_base()}/edgepack.{secrets.token_hex(6)}"
        removed = False
        sftp = self._connect().open_sftp()
        try:
            sftp.mkdir(workdir, 0o700)
            inputs = None
            if request.inputs is not None:
                inputs = f"{workdir}/inputs.npz"
                sftp.put(str(request.inputs), inputs)
                sent += request.inputs.stat().st_size
            outputs = f"{workdir}/outputs.npz" if request.want_outputs else None
            argv = [self.python, "-c", LAUNCHER, harness, harness_sha,
                    *request.harness_args(model, inputs, outputs, model_sha)]
            measurement = self._run_harness(request, workdir, argv, start)
            measurement.uploaded_bytes = sent + model_sent
            if measurement.ok and outputs:
                try:
                    measurement.outputs = fetch_npz(sftp, outputs, outputs_limit(request))
                except TooLarge as exc:
                    measurement = Measurement(request, self.label, HarnessResult(), str(exc),
                                              wall_s=measurement.wall_s)
            # a run that ended normally removed its directory itself; any other needs removing here
            removed = measurement.ok and not request.want_outputs
            return measurement
        finally:
            sftp.close()
            if not removed:
                self._remove(workdir)

    def _remove(self, workdir: str) -> None:
        try:
            self._exec(f"rm -rf -- {shlex.quote(workdir)}")
        except Exception:  # connection gone: remove it when we reconnect
            self._stale_dirs.append(workdir)
            self.close()

    # -- 4. run with a timeout that kills the remote process group ----------------------------------
    def _run_harness(self, request: RunRequest, workdir: str, argv: list[str], start: float) -> Measurement:
        wrapped = harness_in_workdir(command_line(argv), workdir, keep_workdir=request.want_outputs)
        channel = self._connect().get_transport().open_session()
        try:
            channel.exec_command(wrapped)
            stdout, stderr, stopped = read_bounded(channel, request.timeout_s)
            code = -1 if stopped else channel.recv_exit_status()
        finally:
            channel.close()
        if stopped:
            self._kill_group(bytes(stdout[:max(0, stdout.find(b"\n"))]))
            why = f"timeout: killed after {request.timeout_s:g} s" if stopped.startswith("did not finish") else \
                f"the board {stopped}: stopped, and its processes killed"
            return Measurement(request, self.label, HarnessResult(), why, wall_s=time.perf_counter() - start)
        if code == -1 and not stdout.strip().endswith(b"}"):  # no exit status: the connection went down
            self.close()
            return self._lost(request, "the device closed the connection during the run", time.perf_counter() - start)
        text = stdout.decode(errors="replace")
        self._refuse_missing_command(code, text, stderr.decode(errors="replace"))
        first, _, rest = text.partition("\n")
        return parse_harness_output(request, self.label, rest if first.strip().isdigit() else text,
                                    stderr.decode(errors="replace"), code, time.perf_counter() - start)

    def _refuse_missing_command(self, code: int, out: str, err: str) -> None:
        """Exit 127 and no JSON: the shell found no such command, so nothing on this board will run."""
        if code == 127 and "{" not in out:
            missing = printable(self.python, 100) if self.python in err else "a command edgepack needs"
            said = printable(err.strip()[-200:], 200)
            raise SshSetupError(f"{self.label}: '{missing}' was not found on the device ({said})",
                                "install python3 there, or pass --remote-python with its path")

    def _kill_group(self, first_line: bytes) -> None:
        """End the process group whose id a wrapper printed as its first line (TERM, then KILL)."""
        command = kill_group_command(first_line)
        if command is not None:
            self._exec(command, 30)
