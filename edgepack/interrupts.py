"""SIGINT and SIGTERM end edgepack in order: every worker ended, every temporary folder removed, one line.

- :func:`install` (the ``edgepack`` entry point, edgepack/__main__.py, before any heavy import): SIGINT
  and SIGTERM raise :class:`Interrupted`, a ``KeyboardInterrupt``, in the main thread, so every
  ``finally`` and ``with`` on the way out runs. The first signal is raised; later ones are remembered,
  not raised, so they cannot break the clean-up that the first one started. A signal ignored at start
  (``nohup``) stays ignored.
- :class:`Session` (one CLI command): a private ``edgepack-*`` temporary folder that this process and
  every child (``TMPDIR``) make their temporary files in, removed on the way out; processes started
  during the command, and their children, ended (SIGTERM, then SIGKILL after ``GRACE_S``); a watchdog
  that finishes the job itself when the main thread is stuck in native code for ``DEADLINE_S``.
- :func:`run`: ``subprocess.run`` in a process group of its own; the whole group (the child's own
  children too) is ended on a timeout, an interruption or any error, and anything left after it exits.
- :func:`start_worker` / :func:`task`: a worker process (``--jobs``) ignores SIGINT (the main process
  decides) and on SIGTERM unwinds its task, then exits at once.

Processes are found by pid, parent pid and process group from ``/proc`` (Linux), never by name.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Seconds a process is given between SIGTERM and SIGKILL.
GRACE_S = 3.0
#: Seconds after a signal after which the watchdog ends the children, removes the folder and exits itself.
DEADLINE_S = 20.0
TEMP_PREFIX = "edgepack-"

#: A process as seen once: (pid, start time in clock ticks since boot), so a reused pid is never signalled.
Process = tuple[int, int]


class Interrupted(KeyboardInterrupt):
    """A SIGINT or SIGTERM, raised in the main thread; exit code 128 + the signal's number (130, 143)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def describe(signum: int) -> str:
    """The line edgepack ends with: ``interrupted (SIGINT)``, ``terminated (SIGTERM)``."""
    verb = "interrupted" if signum == signal.SIGINT else "terminated"
    return f"{verb} ({signal.Signals(signum).name})"


def exit_code(exc: KeyboardInterrupt) -> int:
    """130 for a plain KeyboardInterrupt (raised before :func:`install`), else the signal's code."""
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT


def line(exc: KeyboardInterrupt) -> str:
    """What edgepack says as it ends on ``exc``: ``interrupted (SIGINT)`` or ``terminated (SIGTERM)``."""
    return describe(exit_code(exc) - 128)


# --- the main process's handlers -------------------------------------------------------------------

_received: int | None = None  # the first signal of this run
_raised = False  # Interrupted raised once already (or held back while cleaning up)
_deferred = False  # cleaning up: remember a signal, raise nothing


def received() -> int | None:
    """The first SIGINT/SIGTERM received since :func:`install` (or the session began), else None."""
    return _received


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _received, _raised
    if _received is None:
        _received = signum
    if _raised or _deferred:
        return
    _raised = True
    raise Interrupted(signum)


def install() -> dict[int, Any]:
    """Make SIGINT and SIGTERM raise :class:`Interrupted` (main thread only); returns the previous handlers."""
    global _received, _raised
    _received, _raised = None, False
    previous: dict[int, Any] = {}
    for signum in SIGNALS:
        current = signal.getsignal(signum)
        if current is signal.SIG_IGN:
            continue
        previous[signum] = current
        signal.signal(signum, _on_signal)
    return previous


@contextmanager
def held() -> Iterator[None]:
    """SIGINT and SIGTERM held back (blocked, not lost) for a moment. Processes started meanwhile inherit
    the block, so a worker cannot be interrupted while it imports, before :func:`start_worker` runs."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# --- processes -------------------------------------------------------------------------------------

def _process_table() -> dict[int, tuple[int, int, int, str]]:
    """pid -> (parent pid, process group, start time, state) of every process, from /proc."""
    table: dict[int, tuple[int, int, int, str]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return table
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read().decode("ascii", "replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # the command name, in (), may hold spaces
        if len(fields) > 19:
            table[int(entry)] = (int(fields[1]), int(fields[2]), int(fields[19]), fields[0])
    return table


def descendants(pid: int | None = None, skip: frozenset[int] = frozenset()) -> list[Process]:
    """Every living process below ``pid`` (default: this process), parents before their children;
    the processes in ``skip`` and everything below them left out."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _, _, state) in table.items():
        if state not in "ZX" and child not in skip:
            children.setdefault(parent, []).append(child)
    found: list[Process] = []
    queue = [os.getpid() if pid is None else pid]
    while queue:
        for child in children.get(queue.pop(0), []):
            found.append((child, table[child][2]))
            queue.append(child)
    return found


def group_members(pgid: int) -> list[Process]:
    """The living processes of process group ``pgid``."""
    return [(pid, start) for pid, (_, group, start, state) in _process_table().items()
            if group == pgid and state not in "ZX"]


def _alive(processes: Sequence[Process]) -> list[Process]:
    table = _process_table()
    return [(pid, start) for pid, start in processes
            if pid in table and table[pid][2] == start and table[pid][3] not in "ZX"]


def _signal(processes: Sequence[Process], signum: int) -> None:
    for pid, _ in _alive(processes):  # checked just before: never a pid the system gave to someone else
        with suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


def end_processes(processes: Sequence[Process], grace_s: float = GRACE_S) -> None:
    """SIGTERM to each, then SIGKILL to those still alive after ``grace_s``. Zombies count as ended."""
    if not processes:
        return
    _signal(processes, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while _alive(processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _alive(processes):
        _signal(processes, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while _alive(processes) and time.monotonic() < deadline:
            time.sleep(0.05)


def _kill_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _end_group(proc: subprocess.Popen[Any], grace_s: float) -> None:
    """SIGTERM to the child's whole process group, SIGKILL after ``grace_s``; the child reaped."""
    _kill_group(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)
    _kill_group(proc.pid, signal.SIGKILL)
    proc.wait()


def run(argv: Sequence[str], *, timeout_s: float | None = None, grace_s: float = GRACE_S,
        **popen: Any) -> subprocess.CompletedProcess[str]:
    """``subprocess.run(argv, capture_output=True, text=True)`` with the child in a process group of its
    own (``start_new_session``). On a timeout (``subprocess.TimeoutExpired`` is raised), an interruption
    or any error the whole group is ended, SIGTERM then SIGKILL after ``grace_s``; after a normal exit
    whatever the child left running in its group is killed."""
    with subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True, **popen) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except BaseException:
            _end_group(proc, grace_s)
            raise
        finally:
            _kill_group(proc.pid, signal.SIGKILL)  # what it left behind (the group outlives its leader)
    return subprocess.CompletedProcess(list(argv), proc.returncode, stdout, stderr)


# --- one command's run -----------------------------------------------------------------------------

class Session:
    """``with Session():`` around one command. Inside: handlers installed, ``TMPDIR`` and ``tempfile``
    pointing at a fresh ``edgepack-*`` folder. On the way out, however it is left: the processes started
    inside and their children ended, the folder removed, the previous handlers and ``TMPDIR`` restored.
    A signal received while cleaning up, or that the command ended with another error, is raised
    afterwards, so the command still ends 130/143."""

    def __init__(self) -> None:
        self.root: Path | None = None
        self._before: set[int] = set()
        self._previous: dict[int, Any] = {}
        self._saved: tuple[str | None, str | None] = (None, None)
        self._watchdog: _Watchdog | None = None

    def __enter__(self) -> Path:
        global _deferred
        _deferred = False
        self._before = {pid for pid, _ in descendants()}  # not ours to end (a test's sshd)
        main = threading.current_thread() is threading.main_thread()
        self._previous = install() if main else {}
        self.root = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
        self._saved = (os.environ.get("TMPDIR"), tempfile.tempdir)
        os.environ["TMPDIR"] = tempfile.tempdir = str(self.root)
        if main:
            self._watchdog = _Watchdog.start(self)
        return self.root

    def started_inside(self) -> list[Process]:
        """The processes started inside and their children, but not multiprocessing's resource tracker
        (it ignores SIGTERM, and ends by itself, its semaphores unlinked, when this process ends)."""
        tracker = sys.modules.get("multiprocessing.resource_tracker")
        tracker_pid = getattr(getattr(tracker, "_resource_tracker", None), "_pid", None)
        return descendants(skip=frozenset(self._before | ({tracker_pid} if tracker_pid else set())))

    def clean_up(self, grace_s: float = GRACE_S) -> None:
        end_processes(self.started_inside(), grace_s)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        global _deferred, _raised, _received
        _deferred = True
        try:
            self.clean_up()
        finally:
            tmpdir, tempfile.tempdir = self._saved
            if tmpdir is None:
                os.environ.pop("TMPDIR", None)
            else:
                os.environ["TMPDIR"] = tmpdir
            if self._watchdog is not None:
                self._watchdog.stop()
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)
            _deferred = False
        signum, _received = _received, None  # later signals stay ignored (_raised) until the next install()
        if signum is not None and not isinstance(exc, KeyboardInterrupt):
            _raised = True
            raise Interrupted(signum) from None  # it came as the command ended, or the command failed of it


class _Watchdog:
    """Sees a signal as soon as it arrives (``signal.set_wakeup_fd``), even while the main thread is inside
    a converter's native code where Python cannot run its handler. When the main thread has not finished
    ``DEADLINE_S`` later, it ends the processes, removes the folder, says the line and exits."""

    def __init__(self, session: Session, read_fd: int, write_fd: int, previous_fd: int) -> None:
        self.session, self.read_fd, self.write_fd, self.previous_fd = session, read_fd, write_fd, previous_fd
        self.finished = threading.Event()

    @classmethod
    def start(cls, session: Session) -> _Watchdog | None:
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        try:
            previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
        except ValueError:
            os.close(read_fd)
            os.close(write_fd)
            return None
        watchdog = cls(session, read_fd, write_fd, previous)
        threading.Thread(target=watchdog._watch, name="edgepack-signal-watchdog", daemon=True).start()
        return watchdog

    def _watch(self) -> None:
        try:
            signums: list[int] = []
            while not signums:
                data = os.read(self.read_fd, 64)
                if not data or self.finished.is_set():
                    return
                signums = [n for n in data if n in SIGNALS]
        except OSError:
            return
        finally:
            os.close(self.read_fd)  # closed here, by its only reader: never a number someone reuses meanwhile
        if self.finished.wait(DEADLINE_S):
            return
        self.session.clean_up(grace_s=1.0)
        os.write(2, f"{chr(10) if os.isatty(2) else ''}edgepack: {describe(signums[0])}\n".encode())
        os._exit(128 + signums[0])

    def stop(self) -> None:
        self.finished.set()
        signal.set_wakeup_fd(self.previous_fd)
        os.close(self.write_fd)  # the watcher's read returns empty and it ends


# --- worker processes (--jobs) ---------------------------------------------------------------------

_in_task = False


def _on_signal_in_worker(signum: int, frame: FrameType | None) -> None:
    global _in_task
    if not _in_task:
        os._exit(128 + signum)  # between tasks: nothing of ours to clean up
    _in_task = False  # once: a second signal must not break the unwinding
    raise Interrupted(signum)


def start_worker() -> None:
    """In a worker process, first thing: SIGINT ignored (a Ctrl-C reaches the whole process group; the
    main process ends the workers), SIGTERM unwinds the running task (see :func:`task`)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_signal_in_worker)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


@contextmanager
def task() -> Iterator[None]:
    """A worker's task: on SIGTERM its ``finally`` and ``with`` blocks run (child process groups ended,
    temporary folders removed), then the worker exits at once, sending nothing back."""
    global _in_task
    _in_task = True
    try:
        yield
    except Interrupted as exc:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exc.exit_code)
    finally:
        _in_task = False
