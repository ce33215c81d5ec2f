"""Files to and from a board over SFTP.

An upload lands whole or not at all: it is written under a ``.part-<ns>`` name and renamed into place
(a partial one left by a lost connection is removed by the next holder of the device's lock). A file
fetched from the board is refused when it is larger than what it may hold (the outputs' own size).
"""

from __future__ import annotations

import contextlib
import math
import time
from pathlib import Path
from typing import Any

from edgepack.runners.base import RunRequest

OUTPUTS_LIMIT_BYTES = 256 * 2**20  # outputs.npz, when the request does not say the outputs' shapes


class TooLarge(Exception):
    """A file on the board is larger than what it may hold."""


def put_whole(sftp: Any, local: Path, remote: str) -> None:
    """Upload ``local`` to ``remote`` through a partial name renamed into place."""
    partial = f"{remote}.part-{time.time_ns()}"
    try:
        sftp.put(str(local), partial)
        sftp.posix_rename(partial, remote)
    except BaseException:
        with contextlib.suppress(Exception):  # a dead connection: the next lock holder removes it
            sftp.remove(partial)
        raise


def fetch_npz(sftp: Any, remote: str, limit_bytes: int) -> dict[str, Any]:
    """The arrays of an .npz on the board; TooLarge when it is over ``limit_bytes``."""
    import io

    import numpy as np

    size = sftp.stat(remote).st_size or 0
    if size > limit_bytes:
        raise TooLarge(f"the board's outputs.npz is {size / 2**20:.1f} MB, more than the "
                       f"{limit_bytes / 2**20:.1f} MB the outputs can take")
    with sftp.open(remote, "rb") as fh:
        data = fh.read(limit_bytes + 1)
    with np.load(io.BytesIO(data)) as archive:
        return {k: archive[k] for k in archive.files}


def outputs_limit(request: RunRequest) -> int:
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
