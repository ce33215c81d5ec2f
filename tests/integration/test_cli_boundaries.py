"""No traceback at the CLI's boundaries: flags out of range are refused while parsing, -o and --cache
that are files are refused before any work, a sample too large for memory and a full disk are one
line and exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import build_parser, main


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """``edgepack ARGV`` in this process; argparse's refusals end in SystemExit, as in the real command."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv", [
    ["profile", "m.onnx", "--runs", "-5"],
    ["profile", "m.onnx", "--runs", "0"],  # was taken as "the profile's default" (50)
    ["profile", "m.onnx", "--timeout", "-1"],
    ["profile", "m.onnx", "--warmup", "-1"],
    ["profile", "m.onnx", "--threads", "0"],
    ["profile", "m.onnx", "--runs", "2.5"],
    ["build", "m.onnx", "--device", "host", "--jobs", "0"],
    ["build", "m.onnx", "--device", "host", "--distill-epochs", "-1"],
    ["build", "m.onnx", "--device", "host", "--max-measurements", "0"],
    ["build", "m.onnx", "--device", "host", "--prune", "0,1"],
    ["build", "m.onnx", "--device", "host", "--prune", "0,-0.3"],
    ["build", "m.onnx", "--device", "host", "--threads", "1,0"],
    ["build", "m.onnx", "--device", "host", "--threads", "1.5"],
    ["build", "m.onnx", "--device", "host", "--max-size-mb", "0"],
    ["build", "m.onnx", "--device", "host", "--max-ram-mb", "-1"],
    ["build", "m.onnx", "--device", "host", "--max-sram-kb", "0"],
    ["build", "m.onnx", "--device", "host", "--max-latency-ms", "nan"],
    ["build", "m.onnx", "--device", "host", "--max-accuracy-drop", "-1"],
    ["build", "m.onnx", "--device", "host", "--tolerance", "0"],
    ["build", "m.onnx", "--device", "host", "--timeout", "0"],
    ["build", "m.onnx", "--device", "host", "--runs", "0"],
    ["build", "m.onnx", "--device", "host", "--warmup", "-2"],
    ["prune", "m.onnx", "--calib", "c.npy", "--ratio", "1"],
    ["prune", "m.onnx", "--calib", "c.npy", "--ratio", "-0.1"],
    ["prune", "m.onnx", "--calib", "c.npy", "--max-size-mb", "-3"],
    ["prune", "m.onnx", "--calib", "c.npy", "--round-to", "0"],
    ["prune", "m.onnx", "--calib", "c.npy", "--time-budget", "0"],
    ["prune", "m.onnx", "--calib", "c.npy", "--distill-epochs", "-1"],
    ["quantize", "m.onnx", "--calib", "c.npy", "--max-accuracy-drop", "inf"],
    ["quantize", "m.onnx", "--calib", "c.npy", "--tolerance", "-0.1"],
    ["convert", "m.onnx", "--to", "onnx", "--tolerance", "0"],
    ["convert", "m.onnx", "--to", "onnx", "--resize", "0x224"],
    ["deploy", "pkg", "--device", "rpi4", "--timeout", "0"],
])
def test_numeric_flags_out_of_range_are_refused_while_parsing(capsys, one_line_error, argv):
    """Refused before anything is read (the model path does not even exist): one line naming the flag."""
    flag = next(a for a in argv if a.startswith("--") and a not in ("--device", "--calib", "--to"))
    line = one_line_error(run(capsys, *argv), f"argument {flag}: must be", f"'{argv[argv.index(flag) + 1]}'")
    assert "--help" in line


def test_edge_values_are_accepted_as_given_not_rewritten():
    args = build_parser().parse_args(["build", "m.onnx", "--device", "host", "--prune", "0,0.3", "--warmup", "0",
                                      "--distill-epochs", "0", "--runs", "1", "--threads", "1,2", "--jobs", "1"])
    assert (args.prune, args.warmup, args.distill_epochs, args.runs, args.threads, args.jobs) == \
        ("0,0.3", 0, 0, 1, "1,2", 1)
    args = build_parser().parse_args(["profile", "m.onnx", "--runs", "3", "--timeout", "0.5", "--threads", "2"])
    assert (args.runs, args.timeout, args.threads) == (3, 0.5, 2)
    args = build_parser().parse_args(["prune", "m.onnx", "--calib", "c.npy", "--ratio", "0"])
    assert args.ratio == 0.0


def test_a_bad_flag_is_one_line_from_the_installed_command(tmp_path: Path):
    """The console script: no usage block, one line, exit 2."""
    done = subprocess.run([str(Path(sys.executable).parent / "edgepack"), "profile", "m.onnx", "--runs", "0"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["edgepack: error: argument --runs: must be a whole number of at least 1, "
                                        "not '0'; see 'edgepack profile --help'"]


def test_build_output_that_is_a_file_is_refused_before_any_work(capsys, one_line_error, digits_onnx: Path,
                                                                tmp_path: Path):
    existing = tmp_path / "existing.onnx"
    shutil.copyfile(digits_onnx, existing)
    before = existing.read_bytes()
    np.save(tmp_path / "calib.npy", np.zeros((40, 1, 8, 8), np.float32))
    start = time.perf_counter()
    one_line_error(run(capsys, "build", digits_onnx, "--device", "host", "--calib", tmp_path / "calib.npy",
                       "--cache", tmp_path / "cache", "-o", existing), f"-o {existing} is a file, not a folder")
    assert time.perf_counter() - start < 5
    one_line_error(run(capsys, "build", digits_onnx, "--device", "host", "--cache", tmp_path / "cache",
                       "-o", existing / "dist"), f"would be made inside {existing}, which is a file")
    one_line_error(run(capsys, "build", digits_onnx, "--device", "host", "--cache", existing,
                       "-o", tmp_path / "dist"), f"--cache {existing} is a file")
    assert existing.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npy", "existing.onnx"]


@pytest.fixture()
def dynamic_onnx(tmp_path: Path) -> Path:
    """A Relu over an input of dynamic height and width: its size is --input-shape's."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "dyn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "dyn.onnx"
    onnx.save(model, str(path))
    return path


def test_an_input_shape_larger_than_memory_is_refused(capsys, one_line_error, dynamic_onnx: Path):
    for command in ("profile", "inspect"):
        one_line_error(run(capsys, command, dynamic_onnx, "--input-shape", "x:1,3,300000,300000"),
                       "--input-shape 1,3,300000,300000 for 'x' is 1,080.0 GB per sample",
                       "more than this machine's memory")
    code, out, err = run(capsys, "profile", dynamic_onnx, "--input-shape", "x:1,3,8,8", "--runs", "3",
                         "--warmup", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["latency_ms"]["p50"] > 0


# --- a full disk -------------------------------------------------------------------------------------

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


def test_a_full_disk_at_o_is_one_line_naming_the_folder(capsys, one_line_error, small_disk: Path,
                                                        digits_onnx: Path, digits, tmp_path: Path):
    np.save(tmp_path / "calib.npy", digits.x_train[:60])
    fill(small_disk, leave_bytes=8 * 1024)  # the model file (~290 KB) does not fit
    dist = small_disk / "dist"
    one_line_error(run(capsys, *small_build(digits_onnx, tmp_path / "calib.npy", tmp_path / "cache", dist)),
                   f"no space left on device at {dist}")
    assert left_behind(small_disk) == [] and not any(dist.glob("digits-host*"))


def test_a_full_disk_at_cache_is_one_line_and_leaves_no_torn_record(capsys, one_line_error, small_disk: Path,
                                                                    digits_onnx: Path, digits, tmp_path: Path):
    np.save(tmp_path / "calib.npy", digits.x_train[:60])
    cache = small_disk / "cache"
    fill(small_disk)
    one_line_error(run(capsys, *small_build(digits_onnx, tmp_path / "calib.npy", cache, tmp_path / "dist")),
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
