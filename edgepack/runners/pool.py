"""A pool of boards of one profile: requests spread over them, one benchmark at a time per board."""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable

from edgepack.errors import EdgepackError

#: a socket failure of the network or the board, not of the user's settings
_UNREACHABLE_ERRNOS = {errno.ECONNREFUSED, errno.ECONNRESET, errno.ECONNABORTED, errno.ETIMEDOUT,
                       errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EPIPE}


class BoardUnreachable(EdgepackError):
    """A board that cannot be reached: the connection is refused, times out or is lost before login.

    A board's fault, not the user's: a pool drops that board (said once) and goes on with the others;
    alone, it is still one line. Host keys, identity files and logins stay the user's errors."""


def unreachable(exc: BaseException) -> bool:
    """Whether a failure to connect is the board's or the network's (refused, timed out, lost before the
    SSH handshake ended), rather than a setting the user must fix (host key, identity file, login)."""
    if isinstance(exc, (EOFError, ConnectionError, TimeoutError)):
        return True
    errors = getattr(exc, "errors", None)  # paramiko's NoValidConnectionsError: one error per address
    if isinstance(errors, dict) and errors:
        return all(unreachable(e) for e in errors.values())
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE_ERRNOS:
        return True
    # paramiko's words for a server that hung up or went quiet during the handshake
    return type(exc).__name__ == "SSHException" and str(exc).startswith(_LOST_IN_HANDSHAKE)


_LOST_IN_HANDSHAKE = ("Error reading SSH protocol banner", "Negotiation failed", "SSH session not active")


def in_parallel(tasks: list[Callable[[], None]]) -> None:
    """Run each task in its own thread; the first exception (a user error, e.g. a host key) is re-raised."""
    errors: list[BaseException] = []

    def guarded(task: Callable[[], None]) -> None:
        try:
            task()
        except BaseException as exc:  # re-raised in the caller's thread below
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(t,), daemon=True) for t in tasks]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
