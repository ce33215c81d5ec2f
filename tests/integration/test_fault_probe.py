"""Fixes from the fault and abuse probe that need no device: each test failed before its fix.

The numbers are the probe's items (issue 11); the device ones are in tests/device/test_device_faults.py.
"""

from __future__ import annotations

import hashlib
import json
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgepack.records import Records
from edgepack.runners.base import RunRequest
from edgepack.runners.local import LocalRunner


@pytest.fixture()
def calib(tmp_path: Path, digits) -> Path:
    path = tmp_path / "calib.npy"
    np.save(path, digits.x_train[:60])
    return path


def save_model(path: Path, inputs: list, outputs: list, nodes: list, initializers: list = (),
               opsets: tuple = (("", 13),)) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    onnx.save(model, path)
    return path


# -- 1. -o never deletes what edgepack did not write ---------------------------------------------------

def test_output_into_an_existing_directory_keeps_what_is_there(cli, tmp_path: Path, digits_onnx: Path,
                                                                calib: Path, monkeypatch):
    proj = tmp_path / "proj"
    (proj / "src").mkdir(parents=True)
    (proj / "notes.txt").write_text("mine")
    (proj / "src" / "train.py").write_text("print('mine')")
    quantize = ["quantize", digits_onnx, "--calib", calib, "--format", "onnx", "--json"]

    code, out, _ = cli(*quantize, "-o", f"{proj}/")
    assert code == 0
    assert Path(json.loads(out)["artifact"]["path"]) == proj / "digits_int8.onnx"
    assert (proj / "notes.txt").read_text() == "mine" and (proj / "src" / "train.py").exists()
    assert cli(*quantize, "-o", proj)[0] == 0  # its own file, written again: replaced

    monkeypatch.chdir(proj / "src")  # -o . wiped the working directory
    assert cli(*quantize, "-o", ".")[0] == 0
    assert sorted(p.name for p in (proj / "src").iterdir()) == [
        "digits_int8.onnx", "digits_int8.onnx.edgepack.json", "train.py"]

    code, out, _ = cli("convert", digits_onnx, "--to", "torch", "-o", proj, "--json")
    assert code == 0 and Path(json.loads(out)["artifact"]["path"]) == proj / "digits_torch"
    assert (proj / "digits_torch" / "model.pt").exists() and (proj / "notes.txt").read_text() == "mine"


def test_output_that_edgepack_did_not_write_is_refused(cli, one_line_error, tmp_path: Path, digits_onnx: Path,
                                                       calib: Path):
    theirs = tmp_path / "theirs.onnx"
    theirs.write_bytes(b"someone else's model")
    one_line_error(cli("quantize", digits_onnx, "--calib", calib, "--format", "onnx", "-o", theirs),
                   "theirs.onnx exists and is a file edgepack did not write")
    assert theirs.read_bytes() == b"someone else's model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npy", "theirs.onnx"]  # nothing half-written

    folder = tmp_path / "work" / "digits_torch"  # a directory of the same name as the artifact
    folder.mkdir(parents=True)
    (folder / "keep.txt").write_text("mine")
    one_line_error(cli("convert", digits_onnx, "--to", "torch", "-o", folder.parent),
                   "digits_torch exists and is a directory edgepack did not write")
    assert [p.name for p in folder.iterdir()] == ["keep.txt"]

    dist = tmp_path / "dist"
    (dist / "digits-host").mkdir(parents=True)
    (dist / "digits-host" / "keep.txt").write_text("mine")
    one_line_error(cli("build", digits_onnx, "--device", "host", "--cache", tmp_path / "c", "-o", dist),
                   "digits-host exists and is not a package edgepack wrote")
    assert (dist / "digits-host" / "keep.txt").read_text() == "mine" and not (tmp_path / "c").exists()


# -- 6. fixed batch other than 1, huge declared dimensions ---------------------------------------------

def test_fixed_batch_and_huge_inputs_are_refused_in_one_line(cli, one_line_error, tmp_path: Path):
    weight = helper.make_tensor("w", TensorProto.FLOAT, [16, 4], np.ones(64, np.float32))
    batch8 = save_model(tmp_path / "batch8.onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8, 16])],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8, 4])],
                        [helper.make_node("MatMul", ["x", "w"], ["y"])], [weight])
    np.save(tmp_path / "rows.npy", np.random.default_rng(0).random((64, 16), np.float32))
    # a first axis fixed at 8 is not a batch axis: the input is fed whole, so it needs a value or data
    # holding [N, 8, 16], never rows cut from the user's data or random numbers
    one_line_error(cli("convert", batch8, "--to", "tflite", "-o", tmp_path / "out.tflite"),
                   "input 'x' has a fixed first axis of 8", "--input-value", "batch 1")
    for argv in (["quantize", batch8, "--calib", tmp_path / "rows.npy", "--format", "onnx", "-o", tmp_path / "q.onnx"],
                 ["build", batch8, "--device", "host", "--calib", tmp_path / "rows.npy", "--cache", tmp_path / "c",
                  "-o", tmp_path / "dist"]):
        one_line_error(cli(*argv), "input 'x' expects samples of shape Nx8x16", "given 64x16")
    huge = save_model(tmp_path / "huge.onnx",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 100000, 100000])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 100000, 100000])],
                      [helper.make_node("Relu", ["x"], ["y"])])
    one_line_error(cli("convert", huge, "--to", "tflite", "-o", tmp_path / "huge.tflite"), "111.8 GiB")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batch8.onnx", "huge.onnx", "rows.npy"]


# -- 7. calibration data that cannot be used -----------------------------------------------------------

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


# -- 8. records.jsonl: see tests/unit/test_records.py; here a build on such a cache goes on --------------

def test_a_build_reads_past_damaged_records(cli, tmp_path: Path, digits_onnx: Path):
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "records.jsonl").write_bytes(b'{"key": 5}\n\xff\xfe\n{"key": {"artifact_sha256": "a"}, "result": {}}\n')
    code, out, err = cli("build", digits_onnx, "--device", "host", "--formats", "onnx", "--precisions", "fp32",
                         "--threads", "1", "--runs", "5", "--warmup", "1", "--cache", cache, "-o", tmp_path / "d",
                         "--json")
    assert code == 0, err
    assert any("3 line(s)" in note for note in json.loads(out)["notes"])
    assert Records(cache).skipped == 3 and len(Records(cache)) >= 1


# -- 9. a truncated package archive --------------------------------------------------------------------

def test_truncated_package_archive_is_one_line(cli, one_line_error, tmp_path: Path):
    package = tmp_path / "m-rpi4"
    package.mkdir()
    model = np.random.default_rng(0).bytes(100_000)
    (package / "model.onnx").write_bytes(model)
    (package / "manifest.json").write_text(json.dumps({  # a whole manifest: the archive's end is what is missing
        "files": {"model.onnx": hashlib.sha256(model).hexdigest()}, "sizes": {"model.onnx": len(model)}}))
    with tarfile.open(tmp_path / "m-rpi4.tar.gz", "w:gz") as tar:
        tar.add(package, arcname="m-rpi4")
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes((tmp_path / "m-rpi4.tar.gz").read_bytes()[:40000])
    one_line_error(cli("deploy", truncated, "--device", "rpi4", "--host", "pi@127.0.0.1:9"),
                   "not a complete package archive")


# -- 10, 11. profile: timed without the profiler, nothing left beside the model ---------------------------

def test_local_profile_times_without_the_profiler_and_leaves_nothing(cli, tmp_path: Path, digits_onnx: Path):
    model = tmp_path / "models" / "digits.onnx"
    model.parent.mkdir()
    model.write_bytes(digits_onnx.read_bytes())
    code, out, _ = cli("profile", model, "--runs", "3000", "--json")
    assert code == 0
    profiled = json.loads(out)
    assert profiled["op_profile"]["ops"] and {o["type"] for o in profiled["op_profile"]["ops"]} >= {"Conv", "Gemm"}
    assert sorted(p.name for p in model.parent.iterdir()) == ["digits.onnx"]  # no ort_profile_*.json
    # The profiler kept every event of the timed runs: 190 MB against 68 MB for this model at 3000 runs.
    # And the peak RSS is the harness's own (VmHWM), not ru_maxrss inherited from this large process
    # (torch and TensorFlow loaded: ~490 MB reported for a 0.3 MB model before).
    plain = LocalRunner().run([RunRequest(model, runs=3000)])[0]
    assert plain.result.peak_rss_mb is not None and profiled["peak_rss_mb"] < plain.result.peak_rss_mb * 1.25 + 20
    assert plain.result.peak_rss_mb < 150


# -- 12. one line, no library noise ---------------------------------------------------------------------

@pytest.fixture()
def not_ssh_port():
    """A loopback port that answers like a web server, not like sshd."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def answer() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def edgepack(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgepack.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=300)


def test_a_port_that_is_not_ssh_and_a_bad_pt2_are_one_line(tmp_path: Path, digits_onnx: Path, not_ssh_port: int):
    done = edgepack("profile", digits_onnx, "--device", "rpi4", "--host", f"pi@127.0.0.1:{not_ssh_port}",
                    "--known-hosts", tmp_path / "kh")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "cannot connect" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "bad.pt2").write_bytes(b"PK\x03\x04 not a zip at all" * 10)
    done = edgepack("inspect", tmp_path / "bad.pt2")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "is not a readable ExportedProgram" in done.stderr


# -- 13. the right words and the right exit code -------------------------------------------------------

def test_profile_refuses_a_corrupt_model_here(cli, one_line_error, tmp_path: Path, digits_onnx: Path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(digits_onnx.read_bytes()[: digits_onnx.stat().st_size // 2])
    one_line_error(cli("profile", corrupt), "corrupt.onnx")


def test_inspect_says_onnxruntime_cannot_load_a_custom_op(cli, tmp_path: Path):
    model = save_model(tmp_path / "custom.onnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])],
                       [helper.make_node("Relu", ["x"], ["h"]),
                        helper.make_node("FancyActivation", ["h"], ["y"], domain="com.example.ops")],
                       opsets=(("", 13), ("com.example.ops", 1)))
    code, out, _ = cli("inspect", model, "--device", "rpi4", "--json")
    assert code == 0
    compat = json.loads(out)["compatibility"]
    assert not compat["compatible"]
    assert [(i["op"], i["status"]) for i in compat["issues"]] == [("FancyActivation", "unsupported")]
    assert "com.example.ops" in compat["issues"][0]["reason"]
    code, out, _ = cli("inspect", model, "--device", "rpi4")
    assert "all ops supported" not in out and "FancyActivation" in out


# -- 3. a cached artifact is re-hashed before it is used -------------------------------------------------

def test_a_corrupted_cached_artifact_is_rebuilt_not_packaged(cli, tmp_path: Path, digits_onnx: Path, digits):
    np.savez(tmp_path / "calib.npz", x=digits.x_train[:100])
    np.savez(tmp_path / "eval.npz", x=digits.x_test[:100], y=digits.y_test[:100])
    argv = ["build", digits_onnx, "--device", "host", "--calib", tmp_path / "calib.npz", "--eval",
            tmp_path / "eval.npz", "--formats", "onnx", "--precisions", "fp32,int8", "--threads", "1", "--runs", "5",
            "--warmup", "1", "--cache", tmp_path / "cache", "-o", tmp_path / "dist", "--json"]
    code, _, err = cli(*argv)
    assert code == 0, err
    manifest_path = tmp_path / "dist" / "digits-host" / "manifest.json"
    shipped = json.loads(manifest_path.read_text())["artifact_sha256"]
    cached = next(p for p in (tmp_path / "cache" / "artifacts").glob("*/model.onnx")
                  if hashlib.sha256(p.read_bytes()).hexdigest() == shipped)
    data = bytearray(cached.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(b ^ 0x5A for b in data[len(data) // 2: len(data) // 2 + 64])
    cached.write_bytes(bytes(data))  # same size, other bytes

    code, _, err = cli(*argv)
    assert code == 0, err
    assert "changed since it was built (sha256 differs): rebuilt" in err
    manifest = json.loads(manifest_path.read_text())
    model = tmp_path / "dist" / "digits-host" / manifest["model_file"]
    actual = hashlib.sha256(model.read_bytes()).hexdigest()
    assert actual == manifest["artifact_sha256"] == manifest["files"][manifest["model_file"]]
    assert actual != hashlib.sha256(bytes(data)).hexdigest()


def test_write_package_refuses_an_artifact_that_changed_after_verification(tmp_path: Path, digits_onnx: Path):
    from edgepack.artifact import Artifact
    from edgepack.errors import EdgepackError
    from edgepack.package import PackageContents, write_package

    model = tmp_path / "m.onnx"
    model.write_bytes(digits_onnx.read_bytes())
    artifact = Artifact(model, "onnx", "as given", "s", [], [])
    model.write_bytes(digits_onnx.read_bytes()[:-8] + b"\0" * 8)
    contents = PackageContents("m-host", artifact, "m.onnx", "s", "host", {})
    with pytest.raises(EdgepackError, match="changed after it was verified"):
        write_package(contents, tmp_path / "dist")
    assert not (tmp_path / "dist" / "m-host").exists() and not list((tmp_path / "dist").iterdir())
