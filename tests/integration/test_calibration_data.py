"""Calibration data edgepack cannot use (edgepack/data.py, given to ``quantize --calib``): empty or 0-d
numpy files, an image that would not fit in memory, NaN or Inf samples, a function that raises or is
not there. Each is one line and exit 2, and nothing is written."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest


def png_header_only(path: Path, width: int, height: int) -> None:
    """A valid PNG of 1x1 pixels whose header claims width x height: PIL's bomb check reads the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00\x00"))
                     + chunk(b"IEND", b""))


def bad_calibration(kind: str, folder: Path, digits) -> tuple[str, str]:
    x = digits.x_train[:40].copy()
    if kind == "empty npy":
        (folder / "c.npy").write_bytes(b"")
        return str(folder / "c.npy"), "not a readable numpy file"
    if kind == "empty npz":
        (folder / "c.npz").write_bytes(b"")
        return str(folder / "c.npz"), "not a readable numpy file"
    if kind == "0-d npy":
        np.save(folder / "c.npy", np.float32(3.0))
        return str(folder / "c.npy"), "a single value (0-d)"
    if kind == "decompression bomb":
        (folder / "images").mkdir()
        png_header_only(folder / "images" / "huge.png", 20000, 20000)
        return str(folder / "images"), "too large to decode safely"
    if kind in ("NaN", "Inf"):
        x[3, 0, 2, 2] = np.nan if kind == "NaN" else np.inf
        x[7] = np.nan
        np.save(folder / "c.npy", x)
        return str(folder / "c.npy"), "NaN or Inf in 2 sample(s) (first: 3, 7)"
    if kind == "function raises":
        (folder / "probe_calib.py").write_text("def samples():\n    raise ValueError('the bucket is gone')\n")
        return "probe_calib:samples", "raised ValueError: the bucket is gone"
    (folder / "probe_calib.py").write_text("def samples():\n    return []\n")
    return "probe_calib:missing", "--calib: 'probe_calib' has no callable 'missing'"


@pytest.mark.parametrize("kind", ["empty npy", "empty npz", "0-d npy", "decompression bomb", "NaN", "Inf",
                                  "function raises", "function missing"])
def test_unusable_calibration_data_is_one_line(cli, one_line_error, tmp_path: Path, digits_onnx: Path, digits,
                                               monkeypatch, kind: str):
    monkeypatch.syspath_prepend(str(tmp_path))
    data, message = bad_calibration(kind, tmp_path, digits)
    one_line_error(cli("quantize", digits_onnx, "--calib", data, "--format", "onnx", "-o", tmp_path / "q.onnx"),
                   message)
    assert not (tmp_path / "q.onnx").exists() and not list(tmp_path.glob(".edgepack-*"))
