"""The user's model file is itself a candidate when the device runs its format: an int8 TFLite model
(int8 input) built for a microcontroller is checked in TFLite Micro and packaged untouched, even when
re-quantizing it fails; a conversion that fails is named as the cause, never hidden behind "no
candidate meets the constraints"."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgepack.compress.plan import CompressionPlan
from edgepack.render import no_feasible_message
from edgepack.search.candidate import Status
from edgepack.search.result import CandidateRow

pytestmark = pytest.mark.slow
SHAPE = (1, 12, 12, 1)


@pytest.fixture(scope="module")
def int8_tflite(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A tiny Keras conv model made full-integer by the TFLite converter (int8 input and output), with
    int8 calibration and labelled evaluation samples quantized by the model's own input scale."""
    import tensorflow as tf

    from edgepack.model_files import tflite_interpreter

    root = tmp_path_factory.mktemp("source_candidate")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(160, *SHAPE[1:])).astype(np.float32)
    y = (x[:, :6].mean(axis=(1, 2, 3)) > x[:, 6:].mean(axis=(1, 2, 3))).astype(np.int64)
    model = tf.keras.Sequential([tf.keras.layers.Input(SHAPE[1:], batch_size=1),
                                 tf.keras.layers.Conv2D(4, 3, activation="relu"), tf.keras.layers.MaxPooling2D(),
                                 tf.keras.layers.Flatten(), tf.keras.layers.Dense(2)])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[i:i + 1]] for i in range(64))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path = root / "wakeword.tflite"
    path.write_bytes(converter.convert())
    detail = tflite_interpreter(path, delegates=False).get_input_details()[0]
    assert np.dtype(detail["dtype"]) == np.int8
    scale, zero_point = detail["quantization"]
    q = np.clip(np.round(x / scale + zero_point), -128, 127).astype(np.int8)
    np.save(root / "calib.npy", q[:100])
    np.savez(root / "eval.npz", x=q[100:], y=y[100:])
    return SimpleNamespace(path=path, root=root, input=detail["name"], cache=root / "cache")


def _build(cli, source: SimpleNamespace, out: Path, *flags: object) -> tuple[int, str, str]:
    return cli("build", source.path, "--input-shape", f"{source.input}:{','.join(map(str, SHAPE))}",
               "--prune", "0", "--cache", source.cache, "-o", out, "--json", *flags)


def test_an_int8_tflite_source_is_packaged_untouched_for_a_microcontroller(cli, int8_tflite, tmp_path: Path):
    calib = ["--calib", int8_tflite.root / "calib.npy", "--eval", int8_tflite.root / "eval.npz"]
    code, out, err = _build(cli, int8_tflite, tmp_path / "dist", "--device", "stm32h7", *calib)
    assert code == 0, err
    result = json.loads(out)
    chosen = result["chosen"]
    assert chosen["plan"]["as_given"] and chosen["label"] == "tflite int8 as given x1"
    assert chosen["accuracy_drop"] == 0.0 and chosen["toolchain"]["arena_bytes"] > 0  # TFLite Micro ran it
    rebuilt = [r for r in result["candidates"] if not r["plan"]["as_given"]]
    assert rebuilt and all(r["label"] == "tflite int8 x1" for r in rebuilt)  # re-quantizing it is tried too
    package = Path(result["package"])
    assert (package / "model.tflite").read_bytes() == int8_tflite.path.read_bytes()
    manifest = json.loads((package / "manifest.json").read_text())
    assert manifest["plan"]["route"] == "as given" and manifest["plan"]["as_given"] is True
    checked = manifest["plan"]["checked_on_device"]  # TFLite Micro on the held-out samples: LiteRT's outputs
    assert checked["samples"] == 60 and all(o["channel_error_rel"] < 0.01 for o in checked["outputs"].values())
    assert "g_model" in (package / "model_data.cc").read_text()


def test_without_calibration_data_the_int8_source_as_given_is_still_built(cli, int8_tflite, tmp_path: Path):
    code, out, err = _build(cli, int8_tflite, tmp_path / "dist", "--device", "stm32h7")
    assert code == 0, err  # before: "stm32h7 runs int8 models only ...; give --calib"
    result = json.loads(out)
    assert [r["label"] for r in result["candidates"]] == ["tflite int8 as given x1"]


def test_an_int8_tflite_source_is_a_candidate_on_the_host_with_its_own_precision(cli, int8_tflite, tmp_path: Path):
    calib = ["--calib", int8_tflite.root / "calib.npy", "--eval", int8_tflite.root / "eval.npz"]
    code, out, err = _build(cli, int8_tflite, tmp_path / "dist", "--device", "host", "--formats", "tflite",
                            "--precisions", "int8", "--threads", "1", "--runs", "3", "--warmup", "1",
                            "--max-measurements", "1", *calib)
    assert code == 0, err
    chosen = json.loads(out)["chosen"]
    assert chosen["plan"]["as_given"] and chosen["plan"]["precision"] == "int8" and chosen["latency_ms"] > 0
    assert (Path(json.loads(out)["package"]) / "model.tflite").read_bytes() == int8_tflite.path.read_bytes()


def test_an_fp32_onnx_source_is_packaged_untouched_on_an_onnx_runtime_board(cli, digits, digits_onnx: Path,
                                                                           tmp_path: Path):
    np.save(tmp_path / "calib.npy", digits.x_train[:64])
    code, out, err = cli("build", digits_onnx, "--device", "host", "--formats", "onnx", "--precisions", "fp32",
                         "--threads", "1", "--prune", "0", "--runs", "3", "--warmup", "1", "--calib",
                         tmp_path / "calib.npy", "--cache", tmp_path / "cache", "-o", tmp_path / "dist", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [r["label"] for r in result["candidates"]] == ["onnx fp32 x1"]  # that file, once (no second copy)
    package = Path(result["package"])
    assert (package / "model.onnx").read_bytes() == digits_onnx.read_bytes()
    assert json.loads((package / "manifest.json").read_text())["plan"]["route"] == "as given"


def test_a_failed_conversion_is_named_when_the_source_is_blocked(cli, int8_tflite, tmp_path: Path):
    calib = ["--calib", int8_tflite.root / "calib.npy", "--eval", int8_tflite.root / "eval.npz"]
    code, out, err = _build(cli, int8_tflite, tmp_path / "dist", "--device", "stm32h7", "--max-size-mb", "0.0001",
                            *calib)
    line = err.strip().splitlines()[-1]
    assert code == 2 and line.startswith("edgepack: error: no candidate meets the constraints; nearest: ")
    assert "tflite int8 as given x1 (size" in line
    rebuilt = next(r for r in json.loads(out)["candidates"] if r["label"] == "tflite int8 x1")
    assert rebuilt["error"] in line if rebuilt["status"] == "failed" else rebuilt["label"] in line  # named, with why


def _row(label: str, status: str, *, size_mb: float | None = None, blocked_by: list[str] | None = None,
         error: str | None = None) -> CandidateRow:
    return CandidateRow(CompressionPlan("tflite", "int8"), label, Status(status), size_mb,
                        blocked_by=tuple(blocked_by or ()), error=error)


def test_when_every_candidate_failed_the_failure_is_the_message():
    error = "build failed: conversion tflite->onnx (tf2onnx) failed: IndexError: list index out of range"
    rows = [_row("tflite int8 x1", "failed", error=error),
            _row("tflite int8 pruned 30% x1", "skipped", blocked_by=[f"pruning 30% alone fails: {error}"])]
    text = no_feasible_message(rows)
    assert text.startswith("every candidate failed (1 failed): build failed: conversion tflite->onnx (tf2onnx)")
    assert "no candidate meets" not in text and "1 left unbuilt: pruning 30% alone fails" in text
    rows.append(_row("tflite int8 as given x1", "predicted", size_mb=0.004, blocked_by=["size 0.00 MB > 0.0001 MB"]))
    text = no_feasible_message(rows)
    assert text.startswith("no candidate meets the constraints; nearest: tflite int8 as given x1 (size")
    assert text.endswith(f"1 failed: {error}")
