"""How close an artifact's outputs are to its source's (edgepack/fidelity.py): each output's kind, read
from the source's outputs, decides the figure it is judged by."""

from __future__ import annotations

import numpy as np
import pytest

from edgepack.errors import UsageError
from edgepack.fidelity import core_shape, drift, infer_kind, is_distribution, parse_output_kinds


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_core_shape_drops_size_one_axes():
    assert core_shape((1, 10)) == (10,)
    assert core_shape((1, 3, 1, 5)) == (3, 5)
    assert core_shape((1, 1)) == (1,) and core_shape(()) == (1,)


def test_a_distribution_is_non_negative_and_sums_to_one_on_the_last_axis(rng):
    probs = softmax(rng.standard_normal((6, 10)))
    assert is_distribution(probs)
    assert not is_distribution(probs * 0.9)  # sums to 0.9
    assert not is_distribution(rng.standard_normal((6, 10)))  # logits
    assert not is_distribution(np.ones((6, 1)))  # one value sums to one, but ranks nothing
    assert not is_distribution(np.zeros((0, 10)))


# -- kinds --------------------------------------------------------------------------------------------------

def test_probabilities_are_scores(rng):
    assert infer_kind("output_0", softmax(rng.standard_normal((8, 1, 10)))) == "scores"


@pytest.mark.parametrize("name", ["logits", "class_scores", "Softmax_out", "pred", "probs:0"])
def test_a_vector_named_as_scores_is_scores(rng, name: str):
    assert infer_kind(name, rng.standard_normal((8, 1, 4))) == "scores"


def test_a_decisive_unnamed_vector_is_scores_and_a_regression_is_values(rng):
    logits = rng.standard_normal((8, 1, 12))
    logits[np.arange(8), 0, rng.integers(0, 12, 8)] += 20  # a trained classifier: the top logit clearly wins
    assert infer_kind("output_0", logits) == "scores"
    assert infer_kind("output_0", rng.standard_normal((8, 1, 12))) == "values"
    assert infer_kind("output_0", logits[..., :4]) == "values"  # under 10 values: never guessed as classes


def test_boxes_and_landmarks_are_values(rng):
    assert infer_kind("boxes", rng.standard_normal((8, 1, 20, 4))) == "values"
    assert infer_kind("landmarks", rng.standard_normal((8, 1, 42))) == "values"
    assert infer_kind("output_0", rng.standard_normal((8, 1, 1))) == "values"  # one number per sample


def test_a_dense_spatial_output_is_a_map_or_a_per_pixel_softmax_a_sequence(rng):
    assert infer_kind("mask", rng.random((4, 1, 1, 32, 32))) == "map"
    assert infer_kind("seg", softmax(rng.standard_normal((4, 1, 16, 16, 3)))) == "sequence"
    assert infer_kind("seg", rng.random((4, 1, 16, 16, 3))) == "map"  # not a distribution per pixel


def test_a_distribution_per_position_is_a_sequence(rng):
    assert infer_kind("output_0", softmax(rng.standard_normal((4, 1, 25, 37)))) == "sequence"  # CTC [T, C]
    assert infer_kind("char_probs", rng.standard_normal((4, 25, 37))) == "sequence"
    assert infer_kind("output_0", rng.standard_normal((4, 25, 37))) == "values"


# -- figures ------------------------------------------------------------------------------------------------

def test_identical_outputs_lose_nothing(rng):
    ref = softmax(rng.standard_normal((5, 1, 10)))
    result = drift("probs", ref, ref.copy())
    assert (result.kind, result.max_abs_error, result.max_abs_error_rel, result.agreement) == ("scores", 0, 0, 1.0)
    assert result.cosine == pytest.approx(1.0) and result.loss_pts == 0.0 and result.channel_error_rel == 0.0


def test_scores_are_judged_by_top1_agreement_in_points():
    ref = np.eye(10)[[1, 2, 3, 4]][:, None, :]  # four samples, one-hot
    got = ref.copy()
    got[2, 0] = np.eye(10)[7]  # one sample's top class changed
    result = drift("probs", ref, got)
    assert result.kind == "scores" and result.agreement == 0.75 == result.top1_agreement
    assert result.loss_pts == pytest.approx(25.0)
    assert result.describe() == "top-1 agreement 75.00%"
    assert result.max_abs_error == 1.0 and result.scale == 1.0 and result.max_abs_error_rel == 1.0


def test_a_kind_given_overrides_the_one_read_from_the_output():
    ref = np.eye(10)[[1, 2, 3, 4]][:, None, :]
    got = ref.copy()
    got[2, 0] = np.eye(10)[7]
    result = drift("probs", ref, got, kind="values")
    assert result.kind == "values" and result.agreement is None and result.loss_pts is None
    assert result.top1_agreement is None and result.describe().startswith("error ")


def test_a_sequence_is_judged_position_by_position(rng):
    ref = softmax(rng.standard_normal((2, 1, 10, 5)) * 5)
    got = ref.copy()
    got[0, 0, 3] = np.roll(got[0, 0, 3], 1)  # one of 20 positions argmaxes elsewhere
    got[1, 0, 7] = np.roll(got[1, 0, 7], 2)  # and another
    result = drift("output_0", ref, got)
    assert result.kind == "sequence" and result.agreement == pytest.approx(18 / 20)
    assert result.top1_agreement is None and result.loss_pts == pytest.approx(10.0)
    assert result.describe() == "per-position argmax agreement 90.00%"


def test_a_map_is_judged_by_the_iou_of_its_thresholded_masks():
    ref = np.zeros((1, 1, 1, 10, 10))
    ref[..., 0:4, 0:5] = 0.9  # 20 pixels in the foreground
    got = np.zeros_like(ref)
    got[..., 2:6, 0:5] = 0.8  # 20 pixels, 10 of them shared: IoU 10 / 30
    result = drift("mask", ref, got, kind="map")
    assert result.agreement == pytest.approx(1 / 3) and result.loss_pts == pytest.approx(100 * 2 / 3)
    assert result.describe() == "thresholded-map IoU 33.33%"
    assert drift("mask", np.zeros_like(ref), np.zeros_like(ref), kind="map").agreement == 1.0  # nothing to miss


def test_a_map_outside_zero_one_is_thresholded_at_its_midpoint():
    ref = np.full((1, 1, 1, 10, 10), -4.0)
    ref[..., :5, :] = 6.0  # midpoint 1.0: half the map is foreground
    got = ref.copy()
    got[..., :5, :] = 0.5  # under the midpoint (but over 0.5): lost
    assert drift("heat", ref, got, kind="map").agreement == 0.0
    assert drift("heat", ref, ref + 0.9, kind="map").agreement == 1.0


def test_values_are_judged_per_channel_so_a_small_channel_cannot_hide_behind_a_large_one():
    """A YOLO-like head [4 box rows of pixels + 2 class rows in 0..1, 50 anchors]: an error of 0.5 in a
    class score is nothing next to 640 pixels, and everything next to 1."""
    ref = np.zeros((1, 6, 50))
    ref[0, :4] = np.linspace(0, 640, 50)
    ref[0, 4, 10] = 1.0  # a detection
    got = ref.copy()
    got[0, 4, 10] = 0.5
    result = drift("output0", ref, got)
    assert result.kind == "values" and result.agreement is None and result.loss_pts is None
    assert result.max_abs_error_rel == pytest.approx(0.5 / 640)
    assert result.channel_error_rel == pytest.approx(0.5)
    assert result.describe() == "error 0.5 of peak"


def test_quiet_background_does_not_dilute_an_erased_peak_and_a_false_peak_counts():
    ref = np.full((1, 1000), 0.001)
    ref[0, 0] = 1.0
    erased = ref.copy()
    erased[0, 0] = 0.9
    erased[0, 1:] = 0.0  # int8 rounds the background to zero: not an error that matters
    assert drift("output_0", ref, erased).channel_error_rel == pytest.approx(0.1)
    false_peak = ref.copy()
    false_peak[0, 500] = 0.8  # a detection the source never made
    assert drift("output_0", ref, false_peak).channel_error_rel == pytest.approx(np.sqrt(0.799 ** 2 / 2))


def test_a_silent_channel_is_judged_against_a_floor_of_the_outputs_scale():
    ref = np.zeros((1, 2, 50))
    ref[0, 0] = 100.0  # a loud channel; the other is all zeros in the source
    got = ref.copy()
    got[0, 1, :] = 0.05  # noise where the source had nothing: its peak is taken as 1e-3 x 100
    assert drift("output_0", ref, got).channel_error_rel == pytest.approx(0.5)


def test_an_all_zero_source_is_judged_by_the_absolute_error():
    ref = np.zeros((2, 1, 8))
    got = ref.copy()
    got[1, 0, 3] = 0.25
    result = drift("output_0", ref, got)
    assert result.scale == 0.0 and result.max_abs_error_rel == 0.25 and result.channel_error_rel == 0.25
    assert result.cosine == 0.0  # zero against non-zero: not alike
    assert drift("output_0", ref, ref.copy()).cosine == 1.0


# -- --output-kind ----------------------------------------------------------------------------------------

def test_output_kinds_are_parsed_by_name():
    assert parse_output_kinds("boxes=values,scores=scores") == {"boxes": "values", "scores": "scores"}
    assert parse_output_kinds(" mask =map,") == {"mask": "map"}
    assert parse_output_kinds("a=b=sequence") == {"a=b": "sequence"}  # the last '=' separates the kind
    assert parse_output_kinds(None) == {} and parse_output_kinds("") == {}


@pytest.mark.parametrize("text", ["boxes", "boxes=", "=scores", "boxes=logits"])
def test_an_output_kind_that_is_not_name_equals_kind_is_refused(text: str):
    with pytest.raises(UsageError, match=rf"--output-kind '{text}' is not NAME=KIND") as caught:
        parse_output_kinds(f"mask=map,{text}")
    assert "scores, sequence, map, values" in str(caught.value)
