"""The harness names a numpy too old for the runtime instead of the runtime's cryptic SystemError."""

from __future__ import annotations

from edgepack.runners.harness import numpy_shortfall, version_tuple


def test_a_numpy_older_than_the_runtime_asks_for_is_named_with_the_fix():
    requires = {"tflite-runtime": ["numpy>=1.23.2"], "onnxruntime": ["coloredlogs", "numpy>=1.21.6"]}
    why, fix = numpy_shortfall("tflite", "1.19.5", requires)
    assert why == "tflite-runtime needs numpy>=1.23.2; the device has numpy 1.19.5"
    assert fix.startswith("pip install 'numpy>=1.23.2'")
    assert numpy_shortfall("tflite", "1.24.2", requires) is None
    assert numpy_shortfall("onnxruntime", "1.19.5", requires)[0].startswith("onnxruntime needs numpy>=1.21.6")
    assert numpy_shortfall("onnxruntime", "2.1.0rc1", {"onnxruntime": ["numpy>=1.21.6; python_version>'3'"]}) is None
    assert numpy_shortfall("tflite", "1.19.5", {}) is None  # nothing installed that says


def test_versions_compare_as_numbers():
    assert version_tuple("1.24.2") > version_tuple("1.23.10") > version_tuple("1.9")
    assert version_tuple("2.0.0rc1") == (2, 0, 0)
