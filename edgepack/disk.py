"""A full disk where edgepack writes (``-o``, ``--cache``, the temporary folder) is the user's to fix.

Writers leave nothing half-written (staging folders beside the target are removed, a record line is
truncated away) and let ``OSError`` ENOSPC/EDQUOT rise; each entry point of the API names the folder
with :func:`naming_full_disk`, so the CLI prints one line and exits 2 instead of a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from edgepack.errors import EdgepackError

FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(EdgepackError):
    """No space left (or over quota) on the device that holds ``folder``."""

    def __init__(self, folder: Path, quota: bool = False) -> None:
        problem = "over the disk quota" if quota else "no space left on device"
        super().__init__(f"{problem} at {folder}", "free some space there, or write elsewhere (-o, --cache, TMPDIR)")
        self.folder = folder


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in FULL


def _existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (what statvfs can be asked about)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _free_bytes(path: Path) -> int:
    try:
        stat = os.statvfs(_existing(path))
    except OSError:
        return 1 << 62
    return stat.f_bavail * stat.f_frsize


def full_folder(exc: OSError, folders: list[Path]) -> Path:
    """Which of ``folders`` (and the temporary folder) the failed write was in: the one the error's file
    is under (a copy's destination, ``filename2``, before its source), else the one with the least space left."""
    candidates = [Path(f).absolute() for f in folders] + [Path(tempfile.gettempdir())]
    for name in (exc.filename2, exc.filename):
        if isinstance(name, str | os.PathLike):
            path = Path(os.fsdecode(name)).absolute()
            under = [f for f in candidates if path == f or f in path.parents]
            if under:
                return max(under, key=lambda f: len(f.parts))
            return path.parent
    return min(candidates, key=_free_bytes)


@contextlib.contextmanager
def naming_full_disk(*folders: Path) -> Iterator[None]:
    """Turn an ENOSPC/EDQUOT ``OSError`` raised inside into a :class:`DiskFullError` naming the folder."""
    try:
        yield
    except OSError as exc:
        if not is_disk_full(exc):
            raise
        raise DiskFullError(full_folder(exc, list(folders)), quota=exc.errno == errno.EDQUOT) from None
