"""A board's lock: what keeps two edgepacks from measuring on (or deploying to) one board at once.

The lock is held by one remote shell (``LOCK_SCRIPT``: ``flock`` on ``<cache>/device.lock``) for as long
as our channel to it is open, so a killed edgepack or a lost connection releases it. A waiter is told
who holds it; one that waits too long gets :class:`DeviceBusyError`. ``SshRunner.device_lock`` opens the
channel; this module says what runs there and reads its answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from edgepack.errors import EdgepackError
from edgepack.runners.remote_command import PID_FILE, STDERR_KEPT_BYTES, command_line
from edgepack.runners.ssh_login import SshSetupError
from edgepack.text import printable

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


class DeviceBusyError(EdgepackError):
    """Another edgepack held the device's lock for longer than we were willing to wait."""


def holder_description(purpose: str) -> str:
    """Who takes a device's lock, as the next one to wait for it reads it."""
    import getpass
    import os
    import socket

    return f"{purpose} by {getpass.getuser()}@{socket.gethostname()} (pid {os.getpid()})"


def lock_command(cache: str, timeout_s: float, purpose: str, temp_base: str) -> str:
    """The remote command that takes the lock in the device's cache ``cache``, waiting up to ``timeout_s``,
    and clears what interrupted runs left in ``cache``/models and in ``temp_base``."""
    return command_line(["sh", "-c", LOCK_SCRIPT, "sh", f"{cache}/device.lock", str(max(1, math.ceil(timeout_s))),
                         holder_description(purpose), f"{cache}/models", temp_base, PID_FILE])


def await_lock(channel: Any, timeout_s: float, label: str, cache: str, say: Callable[[str], None]) -> None:
    """Read the lock script's answer on ``channel`` until it holds the lock, saying who holds it while
    waiting. Raises DeviceBusyError (still held after ``timeout_s``), SshSetupError (no flock on the
    board, an unwritable cache), EOFError (the connection closed)."""
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
                say(f"{label}: the device is in use ({holder}); waiting")
            elif text == "timeout":
                raise DeviceBusyError(f"{label}: the device stayed in use for {timeout_s:g} s ({holder})",
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
        raise SshSetupError(f"{label}: the device has no flock command (util-linux) for its lock",
                            "install util-linux on the device")
    raise SshSetupError(f"{label}: cannot take the device lock in {printable(cache, 200)} ({tail})",
                        "check that the home directory on the device is writable")
