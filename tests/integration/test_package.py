"""The deployable package: files match the manifest, run.py runs the model, the archive holds the same."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edgepack.compress.plan import CompressionPlan
from edgepack.compress.quantize import quantize_model
from edgepack.data import Dataset
from edgepack.examples.digits import DigitsData
from edgepack.latency import LatencySource
from edgepack.model import load_model
from edgepack.package import PackageContents, write_package
from edgepack.profiles import ProfileRegistry
from edgepack.search.candidate import Latency, Status
from edgepack.search.result import BuildResult, CandidateRow, SourceModel
from edgepack.search.space import ConstraintCheck, Constraints, pareto_front

pytestmark = pytest.mark.slow


def test_pareto_front():
    assert pareto_front([(1.0, 5.0), (2.0, 2.0), (3.0, 3.0), (1.0, 5.0)]) == [True, True, False, True]


def test_package_with_int8_io_runs_on_the_device_side(digits_onnx: Path, digits: DigitsData, digits_model,
                                                      tmp_path: Path):
    coral = ProfileRegistry.discover().get("coral-edgetpu")
    result = quantize_model(load_model(digits_onnx), Dataset({"image": digits.x_train[:200]}), coral,
                            tmp_path / "q.tflite", eval_data=Dataset({"image": digits.x_test}, digits.y_test))
    candidates = (CandidateRow(CompressionPlan("tflite", "int8"), "tflite int8", Status.MEASURED,
                               result.artifact.size_bytes / 1e6, Latency(0.5, LatencySource.MEASURED), pareto=True,
                               chosen=True),
                  CandidateRow(CompressionPlan("tflite", "fp32"), "tflite fp32", Status.PREDICTED,
                               result.fp32_size_bytes / 1e6, Latency(0.7, LatencySource.PREDICTED),
                               blocked_by=("size 0.30 MB > 0.1 MB",)))
    build = BuildResult(coral, "pi@coral:22", candidates, Constraints(max_size_mb=1), "latency",
                        SourceModel("digits", digits_onnx.name, load_model(digits_onnx).sha256, ("image",)))
    contents = PackageContents("digits-coral-edgetpu", result.artifact, digits_onnx.name,
                               load_model(digits_onnx).sha256, "coral-edgetpu",
                               {"format": "tflite", "precision": "int8", "prune_ratio": 0.0, "threads": 1},
                               constraints=(ConstraintCheck("max_size_mb", 1, None),), build=build)
    root = write_package(contents, tmp_path / "dist")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["artifact_sha256"] == result.artifact.sha256
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((root / name).read_bytes()).hexdigest() == digest, name
    assert manifest["inputs"][0]["dtype"] == "int8" and manifest["inputs"][0]["scale"]
    assert manifest["inputs"][0]["source_shape"] == [1, 1, 8, 8] and manifest["inputs"][0]["layout"] == "NHWC"
    assert "onnxruntime" in manifest["tool_versions"]
    report = (root / "report.html").read_text()
    assert "<title>tflite int8: " in report and "CHOSEN: tflite int8" in report  # hover and legend
    assert "predicted, not measured (1)" in report and "model size (MB)" in report
    with tarfile.open(tmp_path / "dist" / "digits-coral-edgetpu.tar.gz") as tar:
        assert sorted(m.name for m in tar.getmembers() if m.isfile()) == sorted(
            f"digits-coral-edgetpu/{n}" for n in [*manifest["files"], "manifest.json"])
    import torch

    agree = 0
    for i in range(20):
        sample = tmp_path / "sample.npy"
        np.save(sample, digits.x_test[i])
        proc = subprocess.run([sys.executable, str(root / "run.py"), str(sample)], capture_output=True, text=True,
                              check=True, cwd=tmp_path)
        top = json.loads(proc.stdout)["top"][0]["class"]
        with torch.no_grad():
            agree += top == int(digits_model(torch.from_numpy(digits.x_test[i:i + 1])).argmax())
    assert agree >= 19
    assert not list((tmp_path / "dist").glob(".edgepack-*"))


HOSTILE = '</svg><script>alert("x")</script> `| *bold* [link](http://evil.example)\x1b[31m'


def renamed_output(model: Path, name: str, out: Path) -> Path:
    import onnx

    graph = onnx.load(str(model))
    old = graph.graph.output[0].name
    for node in graph.graph.node:
        node.output[:] = [name if o == old else o for o in node.output]
    graph.graph.output[0].name = name
    onnx.save(graph, str(out))
    return out


def test_names_from_the_model_are_escaped_in_the_readme_and_run_py_predicts_them(digits_onnx: Path,
                                                                                 digits: DigitsData, tmp_path: Path):
    from edgepack.artifact import Artifact, Binding
    from edgepack.deploy import prediction_problem

    model = renamed_output(digits_onnx, HOSTILE, tmp_path / "hostile.onnx")
    artifact = Artifact(model, "onnx", "as given", load_model(digits_onnx).sha256,
                        [Binding("image", "image", (1, 1, 8, 8), "float32", "NCHW", "NCHW", None)],
                        [Binding(HOSTILE, HOSTILE, (1, 10), "float32", "NC", "NC", None)])
    contents = PackageContents("digits-<b>host", artifact, f"{HOSTILE}.onnx", artifact.source_sha256,
                               "host", {"format": "onnx", "precision": "fp32", "prune_ratio": 0.0, "threads": 1,
                                        "route": HOSTILE}, sample=digits.x_test[0])
    root = write_package(contents, tmp_path / "dist")
    readme = (root / "README.md").read_text()
    for raw in ("<script>", "</svg>", "<", "\x1b", "[link](", "*bold*"):
        assert raw not in readme, raw
    name = "&lt;/svg&gt;&lt;script&gt;alert(\"x\")&lt;/script&gt; \\`\\| \\*bold\\* \\[link\\](http://evil.example)"
    assert f"| {name} | \\[1, 10\\] | float32 | NC |" in readme  # the Outputs table, the name shown as itself
    assert readme.startswith("# digits-&lt;b&gt;host\n")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["outputs"][0]["source_name"] == HOSTILE  # the package keeps the model's own name
    assert manifest["sizes"] == {p.name: p.stat().st_size for p in root.iterdir() if p.name != "manifest.json"}
    proc = subprocess.run([sys.executable, str(root / "run.py"), str(root / "sample.npy")], capture_output=True,
                          text=True, check=True, cwd=tmp_path)
    printed = json.loads(proc.stdout)
    assert printed["outputs"][HOSTILE]["shape"] == [1, 10] and printed["outputs"][HOSTILE]["dtype"] == "float32"
    assert prediction_problem(printed, manifest["outputs"]) is None  # what deploy's smoke test accepts
    printed["outputs"][HOSTILE]["shape"] = [10]
    assert prediction_problem(printed, manifest["outputs"]).endswith("has shape [10], the model's is [1, 10]")


def test_write_package_refuses_an_artifact_that_changed_after_verification(tmp_path: Path, digits_onnx: Path):
    from edgepack.artifact import Artifact
    from edgepack.errors import EdgepackError

    model = tmp_path / "m.onnx"
    model.write_bytes(digits_onnx.read_bytes())
    artifact = Artifact(model, "onnx", "as given", "s", [], [])
    model.write_bytes(digits_onnx.read_bytes()[:-8] + b"\0" * 8)
    contents = PackageContents("m-host", artifact, "m.onnx", "s", "host", {})
    with pytest.raises(EdgepackError, match="changed after it was verified"):
        write_package(contents, tmp_path / "dist")
    assert not (tmp_path / "dist" / "m-host").exists() and not list((tmp_path / "dist").iterdir())
