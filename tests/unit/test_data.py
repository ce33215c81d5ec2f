"""Calibration and evaluation data (edgepack/data.py): read from the user's files, checked against the
model's inputs, split for holding out, and made up only for inputs that are samples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgepack.data import DataError, Dataset, ImagePreprocessing, load_dataset, random_dataset
from edgepack.errors import UsageError
from edgepack.model import TensorSpec

IMAGE = TensorSpec("image", (1, 1, 8, 8), "float32", "NCHW")


def rows(count: int, width: int = 3) -> np.ndarray:
    """Samples whose values say which sample they are: row i is i*10 + 0..width-1."""
    return (np.arange(count)[:, None] * 10 + np.arange(width)).astype(np.float32)


# -- Dataset ------------------------------------------------------------------------------------------------

def test_a_batch_is_taken_from_every_input_in_the_order_asked():
    data = Dataset({"a": rows(6), "b": -rows(6)})
    assert len(data) == 6
    a, b = data.batch(["a", "b"], 2, size=3)
    assert a.shape == (3, 3) and np.array_equal(a, rows(6)[2:5]) and np.array_equal(b, -rows(6)[2:5])
    b_first = data.batch(["b", "a"], 4)
    assert [x.shape for x in b_first] == [(1, 3), (1, 3)] and b_first[0][0, 1] == -41


def test_an_input_fed_whole_is_given_without_its_sample_axis():
    state = np.stack([np.full((2, 1, 4), i, np.float32) for i in range(5)])  # one value per sample
    data = Dataset({"x": rows(5), "state": state}, whole=frozenset({"state"}))
    x, fed = data.batch(["x", "state"], 3)
    assert x.shape == (1, 3) and fed.shape == (2, 1, 4) and np.all(fed == 3)


def test_split_keeps_labels_with_their_samples():
    data = Dataset({"x": rows(10)}, labels=np.arange(10) % 3, whole=frozenset({"x"}))
    head, tail = data.split(7)
    assert (len(head), len(tail)) == (7, 3)
    assert np.array_equal(tail.inputs["x"], rows(10)[7:]) and tail.labels.tolist() == [1, 2, 0]
    assert head.labels.tolist() == [0, 1, 2, 0, 1, 2, 0] and head.whole == tail.whole == {"x"}
    unlabelled = Dataset({"x": rows(4)}).split(2)
    assert unlabelled[0].labels is None and unlabelled[1].labels is None


def test_holdout_keeps_the_last_fifth_for_checking():
    calibration, held_out = Dataset({"x": rows(100)}, labels=np.arange(100)).holdout(min_calibration=10)
    assert (len(calibration), len(held_out)) == (80, 20)
    assert held_out.labels.tolist() == list(range(80, 100))  # the last ones: never calibrated on
    assert not set(calibration.labels.tolist()) & set(held_out.labels.tolist())


def test_holdout_keeps_the_samples_calibration_needs_and_refuses_too_little_data():
    calibration, held_out = Dataset({"x": rows(100)}).holdout(min_calibration=95)
    assert (len(calibration), len(held_out)) == (95, 5)
    calibration, held_out = Dataset({"x": rows(10)}).holdout(min_calibration=6, min_held_out=2)
    assert (len(calibration), len(held_out)) == (8, 2)
    with pytest.raises(DataError, match=r"calibration data has 10 samples: too few .* \(needs 11\)") as caught:
        Dataset({"x": rows(10)}).holdout(min_calibration=10)
    assert "--eval" in str(caught.value)
    with pytest.raises(DataError, match=r"\(needs 9\)"):
        Dataset({"x": rows(8)}).holdout(min_calibration=7, min_held_out=2)


# -- numpy files --------------------------------------------------------------------------------------------

def test_a_npy_file_is_the_samples_of_a_single_input_cast_to_its_dtype(tmp_path: Path, rng):
    x = rng.random((12, 1, 8, 8))  # float64: the model's float32 is taken
    np.save(tmp_path / "calib.npy", x)
    data = load_dataset(tmp_path / "calib.npy", [IMAGE])
    assert list(data.inputs) == ["image"] and data.inputs["image"].dtype == np.float32 and data.labels is None
    assert np.allclose(data.inputs["image"], x) and len(data) == 12 and data.whole == frozenset()


def test_a_npz_with_x_and_y_carries_labels(tmp_path: Path, rng):
    np.savez(tmp_path / "eval.npz", x=rng.random((6, 1, 8, 8), np.float32), y=np.array([3, 1, 4, 1, 5, 9]))
    data = load_dataset(str(tmp_path / "eval.npz"), [IMAGE], purpose="evaluation")
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [3, 1, 4, 1, 5, 9]


def test_a_directory_of_files_is_concatenated_in_name_order(tmp_path: Path):
    spec = TensorSpec("x", ("batch", 3), "float32", "NC")
    np.save(tmp_path / "b.npy", rows(2) + 100)
    np.save(tmp_path / "a.npy", rows(3))
    (tmp_path / "notes.txt").write_text("not data")
    data = load_dataset(tmp_path, [spec])
    assert data.inputs["x"][:, 0].tolist() == [0, 10, 20, 100, 110]


def test_inputs_are_taken_by_name_from_a_npz(tmp_path: Path, rng):
    specs = [TensorSpec("ids", (1, 5), "int64", "NC"), TensorSpec("mask", (1, 5), "float32", "NC")]
    ids = rng.integers(0, 100, (4, 5)).astype(np.int32)  # any integer type fits an integer input
    np.savez(tmp_path / "d.npz", mask=np.ones((4, 5), np.float32), ids=ids)
    data = load_dataset(tmp_path / "d.npz", specs)
    assert list(data.inputs) == ["ids", "mask"] and data.inputs["ids"].dtype == np.int64
    assert np.array_equal(data.inputs["ids"], ids)
    np.savez(tmp_path / "e.npz", ids=ids)
    with pytest.raises(DataError, match=r"e\.npz: no array for input 'mask' \(found ids\)"):
        load_dataset(tmp_path / "e.npz", specs)


def test_dynamic_dimensions_take_any_size(tmp_path: Path):
    spec = TensorSpec("tokens", (None, "seq", 4), "float32", "NTC")
    np.save(tmp_path / "t.npy", np.zeros((3, 17, 4), np.float32))
    assert load_dataset(tmp_path / "t.npy", [spec]).inputs["tokens"].shape == (3, 17, 4)
    np.save(tmp_path / "t.npy", np.zeros((3, 17, 5), np.float32))
    with pytest.raises(DataError, match=r"input 'tokens' expects samples of shape Nx\?x4 \(NTC\), given 3x17x5"):
        load_dataset(tmp_path / "t.npy", [spec])


@pytest.mark.parametrize(("array", "message"), [
    (np.zeros((5, 1, 4, 4), np.float32), r"expects samples of shape Nx1x8x8 \(NCHW\), given 5x1x4x4"),
    (np.zeros((5, 8, 8), np.float32), r"expects samples of shape Nx1x8x8 \(NCHW\), given 5x8x8"),
    (np.zeros((5, 1, 8, 8), np.int64), r"input 'image' expects float32, given int64"),
    (np.zeros((0, 1, 8, 8), np.float32), r"no samples for input 'image'"),
])
def test_data_that_does_not_fit_the_input_is_refused(tmp_path: Path, array: np.ndarray, message: str):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(DataError, match=message) as caught:
        load_dataset(tmp_path / "bad.npy", [IMAGE])
    assert str(caught.value).startswith(f"calibration data {tmp_path / 'bad.npy'}: ")


def test_samples_with_nan_or_inf_are_named(tmp_path: Path):
    x = np.zeros((9, 1, 8, 8), np.float32)
    x[2, 0, 1, 1], x[5, 0, 0, 0], x[5, 0, 7, 7] = np.nan, -np.inf, np.nan
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match=r"has NaN or Inf in 2 sample\(s\) \(first: 2, 5\)"):
        load_dataset(tmp_path / "x.npy", [IMAGE])


@pytest.mark.parametrize(("labels", "message"), [
    (np.array([0.0, 1.0, 2.5, 3.0]), r"labels \(y\) must be class indices, given 2\.5"),
    (np.array([0.0, np.nan, 2.0, 3.0]), r"labels \(y\) must be class indices, given nan"),
    (np.array([0, 1, -2, 3]), r"labels \(y\) must be class indices from 0, given -2"),
    (np.eye(4), r"labels \(y\) of shape \[4, 4\]"),  # one-hot rows
    (np.array(["a", "b", "c", "d"]), r"labels \(y\) of shape \[4\] and type str"),
    (np.array([0, 1, 2]), r"3 labels for 4 samples"),
])
def test_labels_that_are_not_class_indices_are_refused(tmp_path: Path, labels: np.ndarray, message: str):
    np.savez(tmp_path / "eval.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=labels)
    with pytest.raises(DataError, match=message):
        load_dataset(tmp_path / "eval.npz", [IMAGE], purpose="evaluation")


def test_whole_number_labels_of_any_shape_per_sample_are_class_indices(tmp_path: Path):
    np.savez(tmp_path / "eval.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([[2.0], [0.0], [1.0], [7.0]]))
    assert load_dataset(tmp_path / "eval.npz", [IMAGE]).labels.tolist() == [2, 0, 1, 7]


def test_where_there_is_no_data_it_is_said(tmp_path: Path):
    with pytest.raises(DataError, match=r"^evaluation data .*nope\.npy: no such file or directory"):
        load_dataset(tmp_path / "nope.npy", [IMAGE], purpose="evaluation")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"no \.npy, \.npz or image files in the directory"):
        load_dataset(tmp_path / "empty", [IMAGE])
    (tmp_path / "data.csv").write_text("1,2,3\n")
    with pytest.raises(DataError, match=r"data\.csv: unsupported data file '\.csv'"):
        load_dataset(tmp_path / "data.csv", [IMAGE])
    (tmp_path / "torn.npy").write_bytes(b"\x93NUMPY\x01\x00")
    with pytest.raises(DataError, match=r"torn\.npy: not a readable numpy file"):
        load_dataset(tmp_path / "torn.npy", [IMAGE])


def test_too_few_samples_are_refused(tmp_path: Path):
    np.save(tmp_path / "x.npy", np.zeros((3, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match=r"3 samples, at least 5 needed"):
        load_dataset(tmp_path / "x.npy", [IMAGE], min_samples=5)
    assert len(load_dataset(tmp_path / "x.npy", [IMAGE], min_samples=3)) == 3


# -- inputs fed whole ---------------------------------------------------------------------------------------

def test_an_input_fed_whole_takes_its_given_value_once_per_sample(tmp_path: Path):
    state = np.arange(8, dtype=np.float32).reshape(2, 1, 4)
    specs = [TensorSpec("x", (1, 3), "float32", "NC"), TensorSpec("state", (2, 1, 4), "float32", "", value=state)]
    np.save(tmp_path / "x.npy", rows(5))
    data = load_dataset(tmp_path / "x.npy", specs)
    assert list(data.inputs) == ["x", "state"] and data.whole == {"state"}
    assert data.inputs["state"].shape == (5, 2, 1, 4)
    x, fed = data.batch(["x", "state"], 4)
    assert np.array_equal(fed, state) and np.array_equal(x, rows(5)[4:])


def test_an_input_fed_whole_without_a_value_is_never_made_up(tmp_path: Path):
    specs = [TensorSpec("x", (1, 3), "float32", "NC"), TensorSpec("sr", (), "int64", "")]
    np.savez(tmp_path / "x.npz", x=rows(5))
    with pytest.raises(UsageError, match=r"input 'sr' \(int64, a single value\) is not a sample input"):
        load_dataset(tmp_path / "x.npz", specs)
    np.savez(tmp_path / "d.npz", x=rows(5), sr=np.full(5, 16000))  # the data holds it: one per sample
    data = load_dataset(tmp_path / "d.npz", specs)
    assert data.whole == {"sr"} and data.batch(["sr"], 0)[0] == 16000


# -- a function of the user's -------------------------------------------------------------------------------

@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "user_samples_mod.py").write_text(
        "import numpy as np\n"
        "def arrays():\n    return (np.full((1, 1, 8, 8), i, np.float32) for i in range(4))\n"
        "def unbatched():\n    return [np.full((1, 8, 8), i, np.float32) for i in range(3)]\n"
        "def dicts():\n    return [{'a': np.zeros((1, 2), np.float32), 'b': np.ones((1, 2), np.float32)}] * 2\n"
        "def missing():\n    return [{'a': np.zeros((1, 2), np.float32)}]\n"
        "def empty():\n    return []\n"
        "def broken():\n    raise KeyError('bucket')\n")
    return "user_samples_mod"


def test_a_function_yields_the_samples(user_module: str):
    data = load_dataset(f"{user_module}:arrays", [IMAGE])
    assert data.inputs["image"].shape == (4, 1, 8, 8) and data.inputs["image"][:, 0, 0, 0].tolist() == [0, 1, 2, 3]
    unbatched = load_dataset(f"{user_module}:unbatched", [IMAGE])  # a sample without its batch axis is one
    assert unbatched.inputs["image"].shape == (3, 1, 8, 8)
    pair = [TensorSpec("a", (1, 2), "float32", "NC"), TensorSpec("b", (1, 2), "float32", "NC")]
    data = load_dataset(f"{user_module}:dicts", pair)
    assert list(data.inputs) == ["a", "b"] and len(data) == 2 and np.all(data.inputs["b"] == 1)


@pytest.mark.parametrize(("function", "message"), [
    ("missing", r"a sample has no input 'b'"),
    ("empty", r"calibration data user_samples_mod:empty: no samples"),
    ("broken", r"user_samples_mod:broken raised KeyError: 'bucket'"),
])
def test_a_function_whose_samples_do_not_fit_is_refused(user_module: str, function: str, message: str):
    pair = [TensorSpec("a", (1, 2), "float32", "NC"), TensorSpec("b", (1, 2), "float32", "NC")]
    with pytest.raises(DataError, match=message):
        load_dataset(f"{user_module}:{function}", pair)


def test_a_function_that_is_not_there_is_named_with_the_flag(user_module: str):
    with pytest.raises(UsageError, match=r"--eval: 'user_samples_mod' has no callable 'nothing'"):
        load_dataset(f"{user_module}:nothing", [IMAGE], purpose="evaluation")


# -- image folders ------------------------------------------------------------------------------------------

@pytest.fixture()
def images(tmp_path: Path) -> Path:
    """Two solid-colour photos, 6x4 pixels (a resize of a solid colour keeps the colour exactly)."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    Image.new("RGB", (6, 4), (255, 0, 51)).save(folder / "b.png")
    Image.new("RGB", (6, 4), (0, 102, 255)).save(folder / "a.jpg", quality=100)
    (folder / "labels.txt").write_text("ignored")
    return folder


def test_images_are_resized_to_the_input_and_scaled_to_one(images: Path):
    data = load_dataset(images, [TensorSpec("img", (1, 3, 2, 3), "float32", "NCHW")])
    x = data.inputs["img"]
    assert x.shape == (2, 3, 2, 3) and x.dtype == np.float32
    a, b = x[:, :, 0, 0]  # in name order: a.jpg, then b.png
    assert np.allclose(a, [0.0, 0.4, 1.0], atol=0.02) and np.allclose(b, [1.0, 0.0, 0.2])
    nhwc = load_dataset(images, [TensorSpec("img", (1, 5, 7, 3), "float32", "NHWC")]).inputs["img"]
    assert nhwc.shape == (2, 5, 7, 3) and np.allclose(nhwc[1, 4, 6], [1.0, 0.0, 0.2])


def test_images_follow_the_preprocessing(images: Path):
    spec = TensorSpec("img", (1, "h", "w", 3), "float32", "NHWC")
    prep = ImagePreprocessing(mean=(0.5, 0.5, 0.5), std=(0.5, 0.25, 0.5), channel_order="bgr", size=(3, 2))
    x = load_dataset(images, [spec], preprocessing=prep).inputs["img"]
    assert x.shape == (2, 3, 2, 3)
    assert np.allclose(x[1, 0, 0], [(0.2 - 0.5) / 0.5, (0.0 - 0.5) / 0.25, (1.0 - 0.5) / 0.5])  # b, g, r
    assert prep.to_dict() == {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.25, 0.5], "channel_order": "bgr",
                              "size": [3, 2], "scale": "1/255"}
    assert ImagePreprocessing().to_dict()["size"] is None


def test_a_one_channel_input_gets_grey_images(images: Path):
    x = load_dataset(images, [TensorSpec("img", (1, 1, 4, 4), "float32", "NCHW")]).inputs["img"]
    grey_red = (255 * 299 + 51 * 114) / 1000 / 255  # PIL's L = R*299/1000 + G*587/1000 + B*114/1000
    assert x.shape == (2, 1, 4, 4) and np.allclose(x[1], grey_red, atol=0.01)


def test_images_a_model_cannot_take_are_refused(images: Path):
    with pytest.raises(DataError, match=r"the model's image size is dynamic \(\[1, 3, 'h', 'w'\]\)") as caught:
        load_dataset(images, [TensorSpec("img", (1, 3, "h", "w"), "float32", "NCHW")])
    assert "--resize HxW" in str(caught.value)
    with pytest.raises(DataError, match=r"images need a model with one 4-D image input"):
        load_dataset(images, [TensorSpec("x", (1, 12), "float32", "NC")])
    with pytest.raises(DataError, match=r"images need a model with one 4-D image input"):
        load_dataset(images, [TensorSpec("img", (1, 3, 2, 3), "float32", "NCHW"),
                              TensorSpec("mask", (1, 2), "float32", "NC")])


def test_an_unreadable_image_is_named(images: Path):
    (images / "c.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(DataError, match=r"c\.png: not a readable image"):
        load_dataset(images, [TensorSpec("img", (1, 3, 2, 3), "float32", "NCHW")])


# -- random data --------------------------------------------------------------------------------------------

def test_random_data_has_the_inputs_shapes_and_dtypes_and_is_reproducible():
    specs = [TensorSpec("x", (1, 3, 4), "float32", "NCW"), TensorSpec("ids", (1, 6), "int64", "NC")]
    data = random_dataset(specs, 50, seed=3)
    x, ids = data.inputs["x"], data.inputs["ids"]
    assert x.shape == (50, 3, 4) and x.dtype == np.float32 and x.min() >= 0 and x.max() < 1 and x.std() > 0.2
    assert ids.shape == (50, 6) and ids.dtype == np.int64 and set(np.unique(ids)) <= set(range(10))
    assert data.labels is None and data.whole == frozenset()
    assert np.array_equal(random_dataset(specs, 50, seed=3).inputs["x"], x)
    assert not np.array_equal(random_dataset(specs, 50, seed=4).inputs["x"], x)


def test_random_data_never_makes_up_an_input_fed_whole():
    state = np.ones((2, 1, 4), np.float32)
    specs = [TensorSpec("x", (1, 3), "float32", "NC"), TensorSpec("state", (2, 1, 4), "float32", "", value=state)]
    data = random_dataset(specs, 4)
    assert data.whole == {"state"} and data.inputs["state"].shape == (4, 2, 1, 4) and np.all(data.inputs["state"] == 1)
    with pytest.raises(UsageError, match=r"input 'state' has a fixed first axis of 2"):
        random_dataset([specs[0], TensorSpec("state", (2, 1, 4), "float32", "")], 4)
