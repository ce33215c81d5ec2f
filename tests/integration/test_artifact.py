"""``-o``: where an artifact is written and what it may replace (edgepack/artifact.py ``resolve_output``;
a build's package folder, ``package.check_package_target``). An existing folder receives the artifact;
only what edgepack wrote is ever replaced, checked before any work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture()
def calib(tmp_path: Path, digits) -> Path:
    path = tmp_path / "calib.npy"
    np.save(path, digits.x_train[:60])
    return path


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
