"""What a build's ``--cache`` holds is checked before it is believed: damaged lines of records.jsonl
(edgepack/records.py) are skipped and counted, and a cached artifact whose bytes changed is rebuilt,
never packaged."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from edgepack.records import Records


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
