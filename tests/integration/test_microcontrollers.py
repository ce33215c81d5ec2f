"""Builds for microcontrollers and NPUs whose figures come from the real toolchains: TFLite Micro's
interpreter (arena, outputs), Arm Vela (placement, SRAM, flash, cycles), arm-none-eabi-g++ and -size."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgepack.runners.base import HARNESS
from edgepack.toolchains.mcu_sources import resolver_method

pytestmark = pytest.mark.slow


def _build(cli, model: Path, device: str, calib: list[str], root: Path) -> dict:
    code, out, err = cli("build", model, "--device", device, *calib, "--prune", "0", "--cache", root / "cache",
                         "-o", root / "dist", "--json")
    assert code == 0, err
    return json.loads(out)


@pytest.fixture(scope="module")
def digits_packages(digits, digits_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The digits CNN built for a Cortex-M7 and for an Ethos-U55 microcontroller (one int8 artifact,
    shared through the cache)."""
    from edgepack.cli import main

    root = tmp_path_factory.mktemp("mcu")
    np.savez(root / "calib.npz", x=digits.x_train[:300])
    np.savez(root / "eval.npz", x=digits.x_test, y=digits.y_test)
    calib = ["--calib", str(root / "calib.npz"), "--eval", str(root / "eval.npz")]
    for device in ("stm32h7", "alif-e7"):
        argv = ["build", str(digits_onnx), "--device", device, *calib, "--prune", "0", "--cache",
                str(root / "cache"), "-o", str(root / "dist")]
        assert main(argv) == 0
    return {**{d: root / "dist" / f"digits-{d}" for d in ("stm32h7", "alif-e7")}, "root": root}


def _manifest(package: Path) -> dict:
    return json.loads((package / "manifest.json").read_text())


def _tflm(model: Path) -> dict:
    done = subprocess.run([sys.executable, str(HARNESS), "--model", str(model), "--runtime", "tflite-micro",
                           "--runs", "1", "--warmup", "0"], capture_output=True, text=True, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_cortex_m7_package_has_tflm_figures_and_its_accuracy_equals_litert(digits_packages):
    package = digits_packages["stm32h7"]
    manifest = _manifest(package)
    mcu, measured = manifest["microcontroller"], manifest["measured"]
    assert mcu["arena_bytes"] == _tflm(package / "model.tflite")["arena_bytes"] > 0  # TFLM's own report
    assert measured["latency_source"].startswith("estimate") and measured["runtime"] == "tflite_micro"
    checked = manifest["plan"]["checked_on_device"]  # TFLite Micro, on the held-out digits
    assert checked["accuracy"] == manifest["plan"]["checked_against_original"]["accuracy"] > 0.95  # = LiteRT
    assert mcu["sources"]["ops"] == ["CONV_2D", "MAX_POOL_2D", "TRANSPOSE", "RESHAPE", "FULLY_CONNECTED"]
    ops_header = (package / "model_ops.h").read_text()
    assert "MicroMutableOpResolver<kEdgepackOpCount>" in ops_header and "kEdgepackOpCount = 5" in ops_header
    assert all(f"resolver.{resolver_method(op)}()" in ops_header for op in mcu["sources"]["ops"])


def test_the_c_array_holds_the_model_bytes_and_its_flash_is_what_arm_size_reports(digits_packages, tmp_path):
    package = digits_packages["stm32h7"]
    (tmp_path / "dump.cc").write_text(
        '#include <cstdio>\n#include "model_data.h"\n'
        "int main() { fwrite(g_model, 1, g_model_len, stdout); return (long)g_model % 16 != 0; }\n")
    subprocess.run(["g++", "-std=c++17", "-I", str(package), str(tmp_path / "dump.cc"),
                    str(package / "model_data.cc"), "-o", str(tmp_path / "dump")], check=True)
    dumped = subprocess.run([str(tmp_path / "dump")], capture_output=True, check=True).stdout
    assert dumped == (package / "model.tflite").read_bytes()  # and 16-byte aligned (exit 0)

    compiled = _manifest(package)["microcontroller"]["cross_compiled"]
    assert compiled["compiled"] and compiled["compiler"].startswith("arm-none-eabi-g++")
    subprocess.run(["arm-none-eabi-g++", *compiled["flags"], "-std=c++17", "-c", str(package / "model_data.cc"),
                    "-o", str(tmp_path / "m.o")], check=True)
    size = subprocess.run(["arm-none-eabi-size", "-A", str(tmp_path / "m.o")], capture_output=True, text=True,
                          check=True).stdout
    rodata = next(int(line.split()[1]) for line in size.splitlines() if line.startswith(".rodata"))
    assert compiled["flash_bytes"] == compiled["sections"][".rodata"] == rodata >= len(dumped)


def _npu_ops_in(per_layer_csv: Path) -> tuple[int, int]:
    """(ops on the NPU, ops) from Vela's own per-layer CSV: an op's fused parts share its name."""
    with per_layer_csv.open(newline="") as fh:
        targets = {row["Name"].strip(): row["Target"].strip() for row in csv.DictReader(fh)}
    return sum(t == "NPU" for t in targets.values()), len(targets)


def test_an_ethos_u55_package_has_velas_figures_and_files(digits_packages):
    package = digits_packages["alif-e7"]
    manifest = _manifest(package)
    vela, measured = manifest["vela"], manifest["measured"]
    assert measured["latency_source"].startswith("compiler estimate (Vela")
    assert (vela["npu_ops"], vela["ops"]) == _npu_ops_in(package / "vela_per-layer.csv") == (7, 7)
    with (package / "vela_summary.csv").open(newline="") as fh:
        summary = next(csv.DictReader(fh))
    assert vela["inference_ms"] == pytest.approx(float(summary["inference_time"]) * 1000)
    assert measured["latency_ms"]["p50"] == pytest.approx(vela["inference_ms"])  # no op left on the CPU
    assert vela["sram_kb"] == pytest.approx(float(summary["sram_memory_used"]))
    ini = (package / "vela.ini").read_text()  # written from the profile's [vela]
    assert "[System_Config.edgepack_alif-e7]" in ini and "core_clock=4e+08" in ini
    assert manifest["microcontroller"]["sources"]["ops"] == ["ethos-u"]  # the firmware runs Vela's model
    assert "resolver.AddEthosU()" in (package / "model_ops.h").read_text()
    assert (package / "model_vela.tflite").read_bytes() != (package / "model.tflite").read_bytes()
    assert manifest["microcontroller"]["sources"]["arena_used_bytes"] >= vela["sram_kb"] * 1024


def test_the_mobilenet_like_net_builds_for_an_npu_and_a_cortex_m7(cli, mobilenet_onnx: Path, tmp_path: Path):
    from edgepack.examples.real_models import real_inputs

    photos = real_inputs(SimpleNamespace(data="photos"), tmp_path / "photos", 40)
    calib = ["--calib", str(photos)]
    ethos = _build(cli, mobilenet_onnx, "alif-e7", calib, tmp_path)
    figures = ethos["chosen"]["toolchain"]
    assert figures["vela"]["npu_ops"] == figures["vela"]["ops"] > 20 and not figures["vela"]["cpu_ops"]
    cortex = _build(cli, mobilenet_onnx, "stm32h7", calib, tmp_path)
    assert cortex["measurements"]["new"] >= 1 and cortex["chosen"]["toolchain"]["arena_bytes"] > 20_000
    assert cortex["chosen"]["latency_source"].startswith("estimate")
    assert cortex["checked_on_device"]["outputs"]  # TFLite Micro's outputs against the original's


def test_a_microcontroller_is_not_reached_over_ssh_and_needs_calibration_data(cli, digits_onnx: Path, digits,
                                                                                 tmp_path: Path, one_line_error):
    np.save(tmp_path / "calib.npy", digits.x_train[:50])
    one_line_error(cli("build", digits_onnx, "--device", "stm32h7", "--calib", tmp_path / "calib.npy", "--host",
                       "pi@board", "-o", tmp_path / "d"), "stm32h7 is a microcontroller: it is not reached over SSH")
    one_line_error(cli("build", digits_onnx, "--device", "esp32-s3", "-o", tmp_path / "d"),
                   "esp32-s3 runs int8 models only", "give --calib")
    assert not (tmp_path / "d").exists()


def test_inspect_shows_velas_placement_and_says_who_checked_the_gpu(cli, digits_packages):
    code, out, err = cli("inspect", digits_packages["alif-e7"] / "model.tflite", "--device", "alif-e7")
    assert code == 0, err
    assert "Vela placement  7 of 7 ops on the ethos-u55-256 NPU" in out and "compiler estimate" in out
    code, out, err = cli("inspect", digits_packages["alif-e7"] / "model.tflite", "--device", "android-gpu", "--json")
    data = json.loads(out)
    assert code == 0 and data["compatibility"]["checked_by"]
    analyzer = data["toolchain"]["gpu_analyzer"]  # the analyzer spoke, or it says why the op list did
    assert analyzer.get("not_used") or data["compatibility"]["checked_by"].startswith("TFLite's GPU analyzer")
    code, out, _ = cli("inspect", digits_packages["alif-e7"] / "model.tflite", "--device", "coral-edgetpu")
    assert code == 0 and "no Edge TPU compiler ran" in out


@pytest.mark.device
def test_an_imx93_build_measures_over_ssh_says_the_delegate_is_missing_and_packages_velas_model(
        digits_packages, digits_onnx: Path, tmp_path: Path):
    from edgepack.cli import main
    from edgepack.runners.loopback import SshDevice

    root = digits_packages["root"]
    device = SshDevice(tmp_path / "board").start()
    try:
        argv = ["build", str(digits_onnx), "--device", "imx93", "--calib", str(root / "calib.npz"), "--eval",
                str(root / "eval.npz"), "--prune", "0", "--threads", "1", "--runs", "5", "--cache",
                str(root / "cache"), "-o", str(tmp_path / "dist"), "--host", device.target, "--known-hosts",
                str(device.known_hosts), "--identity", str(device.client_key), "--remote-python", device.python]
        assert main(argv) == 0
    finally:
        device.kill()
    package = tmp_path / "dist" / "digits-imx93"
    manifest = _manifest(package)
    assert manifest["measured"]["latency_source"] == "measured"  # over SSH, by the board's TFLite
    assert manifest["measured"]["delegate"] == {"path": "/usr/lib/libethosu_delegate.so", "loaded": False,
                                                "why": "not on the device: every op ran on the CPU"}
    assert manifest["vela"]["accelerator"] == "ethos-u65-256" and (package / "model_vela.tflite").exists()
    assert "microcontroller" not in manifest and not (package / "model_data.cc").exists()
