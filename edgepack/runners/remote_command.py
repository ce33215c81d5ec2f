"""Commands on a board: how each is quoted and wrapped, and how its output is read without trusting it.

Every path and name that reaches the remote shell goes through ``shlex.quote``. A command runs in a
process group of its own (``setsid -w``; the wrapper prints the group's id first), so that stopping it
kills everything it started. Its output is read in bounded chunks: past its timeout, or once the board
has sent more than ``STDOUT_LIMIT_BYTES`` on either stream, the caller is told why it must be stopped.
Only the last ``STDERR_KEPT_BYTES`` of stderr are kept.

The harness is started through ``LAUNCHER``, which runs the cached harness only when its bytes hash to
what we sent, and runs exactly those bytes.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from typing import Any

from edgepack.errors import BoardFault

PID_FILE = ".edgepack-harness.pid"
STDOUT_LIMIT_BYTES = 16 * 2**20  # more than this on stdout (or on stderr) from one command: stopped, killed
STDERR_KEPT_BYTES = 64 * 2**10  # the tail of stderr that is kept (what a message quotes is its last line)
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


def command_line(argv: list[str]) -> str:
    """``argv`` as one shell command line, every word quoted."""
    return " ".join(shlex.quote(a) for a in argv)


def in_own_group(command: str) -> str:
    """``command`` run by a shell that leads a new process group and prints that group's id first."""
    return f"setsid -w sh -c {shlex.quote('echo $$; ' + command)}"


def harness_in_workdir(command: str, workdir: str, keep_workdir: bool) -> str:
    """The harness's ``command`` run in its own process group inside ``workdir``, which is then removed
    (unless ``keep_workdir``: outputs are still to be fetched from it, and only the pid file goes).

    One remote command per measurement (each SSH channel costs a session on the device). The first line
    printed is the group's id, which a timeout kills as a whole; the harness's pid also goes into the
    directory: if the connection dies mid-run, the harness finishes on its own and a later connection
    removes the directory once that pid is gone.
    """
    quoted = shlex.quote(workdir)
    cleanup = f"; rm -f -- {quoted}/{PID_FILE}" if keep_workdir else f"; rm -rf -- {quoted}"
    inner = shlex.quote(f"echo $$; echo $$ > {PID_FILE}; exec {command}")
    return f"cd {quoted} && setsid -w sh -c {inner}; rc=$?{cleanup}; exit $rc"


def kill_group_command(first_line: bytes) -> str | None:
    """The command that ends the process group whose id a wrapper printed as its first line (TERM, then
    KILL); None when that line is no group's id."""
    pgid = first_line.decode(errors="replace").strip()
    if pgid.isdigit() and int(pgid) > 1:
        return f"kill -TERM -- -{pgid} 2>/dev/null; sleep 0.5; kill -KILL -- -{pgid} 2>/dev/null; true"
    return None


def read_bounded(channel: Any, timeout_s: float) -> tuple[bytearray, bytearray, str | None]:
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
