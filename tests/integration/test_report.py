"""report.html in a real browser (headless Chromium): the summary's values and every measured candidate's
name are in the page, and the rendered page is not blank; `edgepack report` finds it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def package(digits, digits_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from edgepack.cli import main

    root = tmp_path_factory.mktemp("report")
    np.savez(root / "calib.npz", x=digits.x_train[:200])
    np.savez(root / "eval.npz", x=digits.x_test, y=digits.y_test)
    assert main(["build", str(digits_onnx), "--device", "host", "--calib", str(root / "calib.npz"), "--eval",
                 str(root / "eval.npz"), "--prune", "0", "--precisions", "fp32,int8", "--runs", "20", "--cache",
                 str(root / "cache"), "-o", str(root / "dist"), "-q"]) == 0
    return root / "dist" / "digits-host"


def chromium(*argv: str) -> subprocess.CompletedProcess:
    assert CHROMIUM, "make test installs chromium (Debian's package)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]  # root, in a container
    return subprocess.run([CHROMIUM, *flags, *argv], capture_output=True, text=True, timeout=180)


def test_the_report_shows_the_summary_and_names_every_measured_candidate(package: Path, tmp_path: Path):
    manifest = json.loads((package / "manifest.json").read_text())
    dom = chromium("--dump-dom", (package / "report.html").as_uri()).stdout
    summary = dom[dom.index("id=\"summary\""):dom.index("id=\"pareto\"")]
    p50 = manifest["measured"]["latency_ms"]["p50"]
    label = f"{manifest['plan']['format']} {manifest['plan']['precision']} x{manifest['plan']['threads']}"
    assert f"{label}: p50 {p50:.3f} ms" in summary
    assert "constraint max_accuracy_drop" in summary and "held" in summary
    accuracy = manifest["plan"]["checked_against_original"]["accuracy"]
    assert f"{accuracy:.2%}" in summary and "on the device" in summary
    measured = re.findall(r"<title>([^<:]+): [\d.]+ MB, p50", dom)  # hover text of every plotted candidate
    assert label in measured and len(measured) >= 2
    for name in measured:  # and the legend names each
        assert re.search(r"<text[^>]*>[^<]*" + re.escape(name) + r"\s*</text>", dom), name
    assert "model size (MB)" in dom and "p50 latency (ms)" in dom

    shot = tmp_path / "report.png"
    chromium("--window-size=1200,2000", f"--screenshot={shot}", (package / "report.html").as_uri())
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1200) and pixels.std() > 20 and (pixels < 128).mean() > 0.01  # drawn, not blank


def test_edgepack_report_prints_the_path_and_refuses_what_is_not_a_package(cli, package: Path, tmp_path: Path,
                                                                           one_line_error):
    code, out, _ = cli("report", package)
    assert code == 0 and out.strip() == str((package / "report.html").resolve())
    one_line_error(cli("report", tmp_path), "is not a package edgepack wrote")
