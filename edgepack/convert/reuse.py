"""Conversions kept for reuse: one onnx2tf run serves every candidate of a build that starts from the
same ONNX graph (the fp32 TFLite file, and the SavedModel that fp16, int8 and dynamic quantize from).

The builder keeps them in ``<cache>/artifacts/conversions/`` for the block it builds in
(``conversions_kept_in``); outside such a block (``edgepack convert``, ``edgepack quantize``) nothing is
kept. A kept conversion is keyed by every byte that decides it (the graph onnx2tf is given, its sample
data, its options and version, edgepack's version), made under a file lock (two worker processes asking
for it wait for one run), and a failure is kept too: onnx2tf can take minutes to fail on a detector.
What is reused is still checked against the source by whoever uses it (convert/convert.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path

_KEPT_IN: ContextVar[Path | None] = ContextVar("edgepack_kept_conversions", default=None)


@contextlib.contextmanager
def conversions_kept_in(folder: Path | None) -> Iterator[None]:
    """Within the block, conversions are kept in (and reused from) ``folder``; None: not kept."""
    token = _KEPT_IN.set(folder)
    try:
        yield
    finally:
        _KEPT_IN.reset(token)


def kept_folder() -> Path | None:
    """Where conversions are kept in this block, or None."""
    return _KEPT_IN.get()


def digest(*parts: bytes | str) -> str:
    """A short key over ``parts`` (each length-prefixed, so that no two lists of parts collide)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:24]


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """Hold ``<folder>.lock`` (flock): one maker of ``folder`` at a time, across processes."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def version_of(package: str) -> str:
    """The installed version of ``package`` ("-" when it is not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "-"


def converter_versions() -> str:
    """The installed versions of the converters a conversion may run (part of what decides it)."""
    return ",".join(f"{name}={version_of(name)}" for name in
                    ("onnx2tf", "tensorflow", "onnx", "onnxruntime", "tf2onnx", "torch", "litert-torch"))
