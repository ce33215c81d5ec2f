"""A full disk (edgepack/disk.py), on a real 2 MB tmpfs: at -o or at --cache, one line naming the folder
and exit 2, nothing half-written left behind, no torn record."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture()
def small_disk(tmp_path: Path):
    """A real 2 MB tmpfs, filled up by ``fill(disk, leave_bytes)``; skipped where mount is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=True)


def fill(disk: Path, leave_bytes: int = 0) -> None:
    stat = os.statvfs(disk)
    with (disk / "filler").open("wb") as fh:
        fh.write(b"\0" * max(0, stat.f_bavail * stat.f_frsize - leave_bytes))


def left_behind(folder: Path) -> list[str]:
    """Anything half-written: staging folders, partial files."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.name.startswith(".edgepack-") or p.name.endswith((".partial", ".part")))


def small_build(digits_onnx: Path, calib: Path, cache: Path, dist: Path) -> list[object]:
    return ["build", "-q", digits_onnx, "--device", "host", "--calib", calib, "--formats", "onnx",
            "--precisions", "fp32", "--prune", "0", "--threads", "1", "--max-measurements", "1", "--runs", "3",
            "--warmup", "1", "--jobs", "1", "--cache", cache, "-o", dist]


def test_a_full_disk_at_o_is_one_line_naming_the_folder(cli, one_line_error, small_disk: Path,
                                                        digits_onnx: Path, digits, tmp_path: Path):
    np.save(tmp_path / "calib.npy", digits.x_train[:60])
    fill(small_disk, leave_bytes=8 * 1024)  # the model file (~290 KB) does not fit
    dist = small_disk / "dist"
    one_line_error(cli(*small_build(digits_onnx, tmp_path / "calib.npy", tmp_path / "cache", dist)),
                   f"no space left on device at {dist}")
    assert left_behind(small_disk) == [] and not any(dist.glob("digits-host*"))


def test_a_full_disk_at_cache_is_one_line_and_leaves_no_torn_record(cli, one_line_error, small_disk: Path,
                                                                    digits_onnx: Path, digits, tmp_path: Path):
    np.save(tmp_path / "calib.npy", digits.x_train[:60])
    cache = small_disk / "cache"
    fill(small_disk)
    one_line_error(cli(*small_build(digits_onnx, tmp_path / "calib.npy", cache, tmp_path / "dist")),
                   f"no space left on device at {cache}")
    assert left_behind(small_disk) == [] and not (tmp_path / "dist").exists()
    records = cache / "records.jsonl"
    assert not records.exists() or all(json.loads(line) for line in records.read_text().splitlines())


def test_a_record_that_does_not_fit_is_truncated_away(small_disk: Path):
    from edgepack.disk import DiskFullError
    from edgepack.records import RecordKey, Records

    records = Records(str(small_disk))  # a str is a folder too
    key = RecordKey("a" * 64, "host@local", "onnxruntime", 1, "1")
    records.add(key, {"p50": 1.0})
    size = (small_disk / "records.jsonl").stat().st_size
    fill(small_disk, leave_bytes=100)
    with pytest.raises(DiskFullError, match=f"no space left on device at {small_disk}"):
        records.add(RecordKey("b" * 64, "host@local", "onnxruntime", 1, "1"), {"p50": [0.5] * 2000})
    assert (small_disk / "records.jsonl").stat().st_size == size
    assert Records(small_disk).get(key) == {"p50": 1.0} and Records(small_disk).skipped == 0
