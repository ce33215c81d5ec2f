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
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import secrets
import shlex
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepack.errors import BoardFault, EdgepackError
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
from edgepack.runners.pool import BoardUnreachable, unreachable
from edgepack.text import printable

# paramiko logs a failed handshake (a port that does not speak SSH) as a page of traceback through the
# root logger's last resort; the error reaches the user as one line from us instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())

PID_FILE = ".edgepack-harness.pid"
DESCRIBE_TIMEOUT_S = 30.0  # harness.py --describe answers in about a second; a board slower than this is hung
STDOUT_LIMIT_BYTES = 16 * 2**20  # more than this on stdout (or on stderr) from one command: stopped, killed
STDERR_KEPT_BYTES = 64 * 2**10  # the tail of stderr that is kept (what a message quotes is its last line)
OUTPUTS_LIMIT_BYTES = 256 * 2**20  # outputs.npz, when the request does not say the outputs' shapes
CHUNK_BYTES = 65536

# Runs the cached harness only when its bytes hash to what we sent, and runs exactly those bytes.
LAUNCHER = (
    "import hashlib, json, sys\n"
    "path, digest = sys.argv[1], sys.argv[2]\n"
    "code = open(path, 'rb').read()\n"
    "if hashlib.sha256(code).hexdigest() != digest:\n"
    "    print(json.dumps({'error': 'the cached harness on the device is not the one sent (sha256 differs)',"
    " 'error_kind': 'harness_changed'}))\n"
    "    sys.exit(3)\n"
    "sys.argv = [path] + sys.argv[3:]\n"
    "exec(compile(code, path, 'exec'), {'__name__': '__main__', '__file__': path})\n")

# Held by one remote shell for as long as our channel is open (flock on fd 9; `cat` reads the channel
# until it closes): a lost connection ends the shell and so releases the lock. No Python involved, so
# a broken interpreter on the board cannot hold the lock. Prints "busy <holder>" once while waiting,
# then "locked" or "timeout". Holding it, it removes what an interrupted holder left: partial uploads in
# the model cache, and the work directories of runs whose edgepack was killed or cut off. Every
# edgepack.<12 hex> directory in TMPDIR is made under the lock, so any found now is an orphan, even one
# killed before it wrote its pid file: a harness still running there has its process group ended (it
# must not compete with our measurement for the CPU), and the directory is removed.
LOCK_SCRIPT = """lock=$1 timeout=$2 holder=$3 models=$4 tmp=$5 pidfile=$6
command -v flock >/dev/null 2>&1 || { echo 'no flock'; exit 5; }
mkdir -p -- "$models" && exec 9>>"$lock" || exit 6
if ! flock -n 9; then
  printf 'busy %s\\n' "$(head -c 1000 -- "$lock" | tr '\\n' ' ')"
  flock -w "$timeout" 9 || { echo timeout; exit 4; }
fi
printf '%s, since %s\\n' "$holder" "$(date -u '+%Y-%m-%d %H:%M:%S UTC')" > "$lock"
rm -f -- "$models"/*.part-* "$models"/ort_profile_*
hex='[0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f][0-9a-f]'
for d in "$tmp"/edgepack.*; do
  case ${d##*/} in edgepack.$hex$hex) ;; *) continue;; esac
  [ -d "$d" ] && [ ! -L "$d" ] || continue
  pid=$(cat -- "$d/$pidfile" 2>/dev/null)
  case $pid in ''|*[!0-9]*) ;; *) kill -KILL -- "-$pid" 2>/dev/null;; esac
  rm -rf -- "$d"
done
echo locked
cat >/dev/null
"""


class HostKeyError(EdgepackError):
    """The device's host key is unknown or has changed."""


class SshSetupError(EdgepackError):
    """The user's SSH settings cannot work (bad target, identity file, authentication, no such Python)."""


class DeviceBusyError(EdgepackError):
    """Another edgepack held the device's lock for longer than we were willing to wait."""


class CommandStopped(BoardFault):
    """A command on the board ran past its timeout or sent more than the caps: edgepack closed its
    channel and killed its process group. ``why`` says which ("did not finish within 30 s")."""

    def __init__(self, problem: str, why: str, hint: str = "") -> None:
        super().__init__(problem, hint)
        self.why = why


@dataclass(frozen=True)
class RemoteOutput:
    """What one remote command left: its exit code (-1: none, the channel closed first), its stdout
    (at most STDOUT_LIMIT_BYTES), the last STDERR_KEPT_BYTES of its stderr, and why edgepack stopped
    it (None: it ended by itself)."""

    code: int
    out: str
    err: str
    stopped: str | None = None


def holder_description(purpose: str) -> str:
    """Who takes a device's lock, as the next one to wait for it reads it."""
    import getpass
    import os
    import socket

    return f"{purpose} by {getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()})"


@dataclass(frozen=True)
class SshTarget:
    """Where and how to log in, after ~/.ssh/config has had its say."""

    host: str  # what the user typed (an alias, a name or an address)
    hostname: str
    user: str
    port: int
    identity_files: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    @property
    def known_hosts_name(self) -> str:
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"


def parse_target(text: str, default_user: str, default_port: int, ssh_config: Path | None = None,
                 identity: Path | None = None) -> SshTarget:
    """``[user@]host[:port]``, with Host aliases, User, Port and IdentityFile from ~/.ssh/config."""
    import paramiko

    user, _, rest = text.rpartition("@")
    host, port_text = rest, ""
    if rest.count(":") == 1:
        host, _, port_text = rest.partition(":")
    if not host or (port_text and not port_text.isdigit()):
        raise SshSetupError(f"--host '{text}' is not of the form [user@]host[:port]", "e.g. --host pi@raspberrypi:22")
    config_path = ssh_config or Path.home() / ".ssh" / "config"
    config = paramiko.SSHConfig.from_path(str(config_path)) if config_path.exists() else paramiko.SSHConfig()
    entry = config.lookup(host)
    hostname = entry.get("hostname", host)
    port = int(port_text) if port_text else int(entry.get("port", default_port))
    user = user or entry.get("user", default_user)
    identities = (str(identity),) if identity else tuple(entry.get("identityfile", []))
    if identity and not identity.exists():
        raise SshSetupError(f"--identity {identity}: no such file", "give the path of your private key")
    return SshTarget(host, hostname, user, port, identities)


class _SaveNewKey:
    """paramiko policy for --trust-new-host: accept a host with no key on record and save its key.

    A *changed* key never reaches a policy: paramiko raises BadHostKeyException for it first.
    """

    def __init__(self, known_hosts: Path) -> None:
        self.known_hosts = known_hosts

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        self.known_hosts.parent.mkdir(parents=True, exist_ok=True)
        with self.known_hosts.open("a") as fh:
            fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


class _Refuse:
    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        raise HostKeyError(
            f"{hostname} is not in known_hosts (its {key.get_name()} key is "
            f"SHA256:{_fingerprint(key)})",
            "check the fingerprint on the device, then add it with ssh-keyscan or pass --trust-new-host")


def _fingerprint(key: Any) -> str:
    import base64

    return base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


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
        import paramiko

        if self._client is not None and self._client.get_transport() is not None \
                and self._client.get_transport().is_active():
            return self._client
        self.close()
        client = paramiko.SSHClient()
        if self.known_hosts.exists():
            client.load_host_keys(str(self.known_hosts))
        client.set_missing_host_key_policy(_SaveNewKey(self.known_hosts) if self.trust_new_host else _Refuse())
        try:
            client.connect(self.target.hostname, port=self.target.port, username=self.target.user,
                           key_filename=list(self.target.identity_files) or None, timeout=self.connect_timeout_s,
                           banner_timeout=self.connect_timeout_s, auth_timeout=self.connect_timeout_s)
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise HostKeyError(
                f"the host key of {self.target.known_hosts_name} has CHANGED (now SHA256:{_fingerprint(exc.key)}); "
                "refused, even with --trust-new-host",
                f"if the device was reinstalled, remove its old line from {self.known_hosts}") from None
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SshSetupError(f"{self.label}: authentication failed ({exc})",
                                "check --identity, your ssh-agent, or the device's authorized_keys") from None
        except HostKeyError:
            client.close()
            raise
        self._client = client
        self.host_key_fingerprint = "SHA256:" + _fingerprint(client.get_transport().get_remote_server_key())
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
            found = self._command(" ".join(shlex.quote(a) for a in argv), DESCRIBE_TIMEOUT_S)
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
        argv = ["sh", "-c", LOCK_SCRIPT, "sh", f"{cache}/device.lock", str(max(1, math.ceil(timeout_s))),
                holder_description(purpose), f"{cache}/models", self._temp_base(), PID_FILE]
        channel = self._connect().get_transport().open_session()
        channel.settimeout(timeout_s + self.connect_timeout_s)
        try:
            channel.exec_command(" ".join(shlex.quote(a) for a in argv))
            self._await_lock(channel, timeout_s)
            yield
        finally:
            with contextlib.suppress(Exception):  # the connection may be gone: then so is the lock
                channel.shutdown_write()
                channel.close()

    def _await_lock(self, channel: Any, timeout_s: float) -> None:
        buffer, holder = b"", "another edgepack"
        while True:
            chunk = channel.recv(4096)
            if not chunk:
                break
            buffer = (buffer + chunk)[-STDERR_KEPT_BYTES:]  # lines are short; a board's flood is not kept
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                text = line.decode(errors="replace").strip()
                if text == "locked":
                    return
                if text.startswith("busy"):
                    holder = printable(text[5:], 200) or holder
                    self.say(f"{self.label}: the device is in use ({holder}); waiting")
                elif text == "timeout":
                    raise DeviceBusyError(f"{self.label}: the device stayed in use for {timeout_s:g} s ({holder})",
                                          "wait until that run ends, then retry")
        code = channel.recv_exit_status()
        err = b""
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
        tail = printable((err.decode(errors="replace").strip().splitlines()
                          or [buffer.decode(errors="replace").strip() or "no output"])[-1], 200)
        if code == -1:
            raise EOFError("the connection closed while taking the device lock")
        if code == 5:
            raise SshSetupError(f"{self.label}: the device has no flock command (util-linux) for its lock",
                                "install util-linux on the device")
        raise SshSetupError(f"{self.label}: cannot take the device lock in {printable(self._cache(), 200)} ({tail})",
                            "check that the home directory on the device is writable")

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
            channel.exec_command(f"setsid -w sh -c {shlex.quote('echo $$; ' + command)}" if group else command)
            out, err, stopped = self._read_bounded(channel, timeout_s)
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

    @staticmethod
    def _read_bounded(channel: Any, timeout_s: float) -> tuple[bytearray, bytearray, str | None]:
        """A command's stdout and stderr until it ends, read in chunks: at most STDOUT_LIMIT_BYTES of
        stdout and the last STDERR_KEPT_BYTES of stderr are kept. Returns why it must be stopped (too
        long, too much output) or None; stopping it is the caller's."""
        out, err, err_total = bytearray(), bytearray(), 0
        deadline = time.monotonic() + timeout_s
        limit_mb = STDOUT_LIMIT_BYTES // 2**20
        while True:
            idle = True
            if channel.recv_ready():
                out += channel.recv(CHUNK_BYTES)
                idle = False
                if len(out) > STDOUT_LIMIT_BYTES:
                    del out[STDOUT_LIMIT_BYTES:]  # in place: no copy of what was kept
                    return out, err, f"sent more than {limit_mb} MB on stdout"
            if channel.recv_stderr_ready():
                chunk = channel.recv_stderr(CHUNK_BYTES)
                err_total += len(chunk)
                err += chunk
                del err[:-STDERR_KEPT_BYTES]
                idle = False
                if err_total > STDOUT_LIMIT_BYTES:
                    return out, err, f"sent more than {limit_mb} MB on stderr"
            if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
                return out, err, None
            if time.monotonic() > deadline:
                return out, err, f"did not finish within {timeout_s:g} s"
            if channel.closed and not channel.recv_ready() and not channel.recv_stderr_ready():
                return out, err, None
            if idle:
                time.sleep(0.005)

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
            partial = f"{remote}.part-{time.time_ns()}"
            try:
                sftp.put(str(local), partial)
                sftp.posix_rename(partial, remote)
            except BaseException:
                with contextlib.suppress(Exception):  # a dead connection: the next lock holder removes it
                    sftp.remove(partial)
                raise
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
                    measurement.outputs = self._fetch_npz(sftp, outputs, _outputs_limit(request))
                except _TooLarge as exc:
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
        command = " ".join(shlex.quote(a) for a in argv)
        # One remote command per measurement (each SSH channel costs a session on the device): run the
        # harness under setsid -w, so that it leads its own process group (the first line we read is
        # that group's id, which a timeout kills as a whole), then remove the work directory, unless
        # outputs are still to be fetched.
        quoted = shlex.quote(workdir)
        # (with outputs to fetch, only the pid file goes: the directory is no orphan, we still read it)
        cleanup = f"; rm -f -- {quoted}/{PID_FILE}" if request.want_outputs else f"; rm -rf -- {quoted}"
        # The harness's pid also goes into the directory: if this connection dies mid-run, the harness
        # finishes on its own and a later connection removes the directory once that pid is gone.
        inner = shlex.quote(f"echo $$; echo $$ > {PID_FILE}; exec {command}")
        wrapped = f"cd {quoted} && setsid -w sh -c {inner}; rc=$?{cleanup}; exit $rc"
        channel = self._connect().get_transport().open_session()
        try:
            channel.exec_command(wrapped)
            stdout, stderr, stopped = self._read_bounded(channel, request.timeout_s)
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
        pgid = first_line.decode(errors="replace").strip()
        if pgid.isdigit() and int(pgid) > 1:
            self._exec(f"kill -TERM -- -{pgid} 2>/dev/null; sleep 0.5; kill -KILL -- -{pgid} 2>/dev/null; true", 30)

    def _fetch_npz(self, sftp: Any, remote: str, limit_bytes: int) -> dict[str, Any]:
        import io

        import numpy as np

        size = sftp.stat(remote).st_size or 0
        if size > limit_bytes:
            raise _TooLarge(f"the board's outputs.npz is {size / 2**20:.1f} MB, more than the "
                            f"{limit_bytes / 2**20:.1f} MB the outputs can take")
        with sftp.open(remote, "rb") as fh:
            data = fh.read(limit_bytes + 1)
        with np.load(io.BytesIO(data)) as archive:
            return {k: archive[k] for k in archive.files}


class _TooLarge(Exception):
    """A file on the board is larger than what it may hold."""


def _outputs_limit(request: RunRequest) -> int:
    """The most bytes outputs.npz may have: the outputs' own size (when the request says their shapes)
    plus room for the archive's headers, else OUTPUTS_LIMIT_BYTES."""
    import numpy as np

    expected = request.expected_outputs
    if not expected or not all(isinstance(d, int) and d > 0 for shape, _ in expected for d in shape):
        return OUTPUTS_LIMIT_BYTES
    try:
        data = sum(math.prod(shape) * np.dtype(dtype).itemsize for shape, dtype in expected)
    except TypeError:
        return OUTPUTS_LIMIT_BYTES
    return data * 2 + 2**20
