"""Calibration and evaluation data, always in the source model's layout.

Accepted: a ``.npy`` file (first axis = samples) for a single-input model; a ``.npz`` file with one
array per input name (or ``x``, and ``y`` for integer labels); a directory of such files, concatenated
in name order; a directory of images (jpg/png), resized to the model's input and normalised as
:class:`ImagePreprocessing` says; or ``pkg.mod:function`` returning an iterable of samples (arrays,
or dicts by input name). Shape or dtype that does not fit the model, an empty set, or too few
samples is a :class:`DataError` naming what was expected and what was given.
"""

from __future__ import annotations

import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepack.errors import EdgepackError, first_line
from edgepack.model import TensorSpec

HOLDOUT_SHARE = 0.2  # of the calibration data, held out to check on when there is no --eval


class DataError(EdgepackError):
    """Calibration or evaluation data that does not fit the model."""


@dataclass
class Dataset:
    """Samples per input name, stacked on the first axis; ``labels`` when the data carries them."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None = None
    #: inputs that are not sample inputs (edgepack.input_values): stored with a sample axis added,
    #: fed without it
    whole: frozenset[str] = frozenset()

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def batch(self, names: list[str], start: int, size: int = 1) -> list[np.ndarray]:
        """Samples ``start:start+size`` of every input, in the order of ``names`` (an input fed whole:
        the value of sample ``start``)."""
        return [self.inputs[n][start, ...] if n in self.whole else self.inputs[n][start:start + size] for n in names]

    def holdout(self, min_calibration: int, min_held_out: int = 1) -> tuple[Dataset, Dataset]:
        """(calibration, held-out): the last fifth held out for checking, never calibrated or trained
        on, and at least ``min_calibration`` samples kept to calibrate on. DataError when the data is
        too small for both: the one split every command uses when there is no ``--eval``."""
        cut = max(min_calibration, int(len(self) * (1 - HOLDOUT_SHARE)))
        if len(self) - cut < min_held_out:
            raise DataError(f"calibration data has {len(self)} samples: too few to hold some out for checking "
                            f"(needs {min_calibration + min_held_out})", "give more samples, or --eval with "
                            "held-out data")
        return self.split(cut)

    def split(self, count: int) -> tuple[Dataset, Dataset]:
        """The first ``count`` samples and the rest (calibration vs held-out evaluation)."""
        head = {k: v[:count] for k, v in self.inputs.items()}
        tail = {k: v[count:] for k, v in self.inputs.items()}
        labels = self.labels
        return (Dataset(head, None if labels is None else labels[:count], self.whole),
                Dataset(tail, None if labels is None else labels[count:], self.whole))


def _whole(inputs: list[TensorSpec]) -> frozenset[str]:
    return frozenset(t.name for t in inputs if not t.is_sample)


def _with_fixed(dataset: Dataset, inputs: list[TensorSpec]) -> Dataset:
    """The inputs the data does not hold that are fed whole: their --input-value, once per sample."""
    from edgepack.input_values import fixed_value

    arrays = dict(dataset.inputs)
    for spec in inputs:
        if spec.name not in arrays:
            value = fixed_value(spec)
            arrays[spec.name] = np.repeat(value[None], len(dataset), axis=0)
    ordered = {t.name: arrays[t.name] for t in inputs}
    return Dataset(ordered, dataset.labels, _whole(inputs))


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    if path.suffix not in (".npy", ".npz"):
        raise DataError(f"{path}: unsupported data file '{path.suffix}'",
                        "give .npy/.npz files or a directory of them")
    try:
        if path.suffix == ".npy":
            arrays = {"": np.load(path, allow_pickle=False)}
        else:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {k: archive[k] for k in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"{path}: not a readable numpy file ({first_line(exc, with_type=True)})",
                        "save it with numpy.save / numpy.savez") from None
    for name, array in arrays.items():
        if array.ndim == 0:
            raise DataError(f"{path}: {f'array {name!r}' if name else 'the array'} is a single value "
                            "(0-d), not samples", "stack the samples on a first axis")
    return arrays


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass(frozen=True)
class ImagePreprocessing:
    """How image files become model input: RGB or BGR, scaled to [0, 1], then ``(x - mean) / std``."""

    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channel_order: str = "rgb"
    size: tuple[int, int] | None = None  # (height, width); default: the model's input

    def to_dict(self) -> dict[str, object]:
        return {"mean": list(self.mean), "std": list(self.std), "channel_order": self.channel_order,
                "size": list(self.size) if self.size else None, "scale": "1/255"}


def load_dataset(path: str | Path, inputs: list[TensorSpec], *, purpose: str = "calibration",
                 min_samples: int = 1, preprocessing: ImagePreprocessing | None = None) -> Dataset:
    """Read data for a model with these inputs and check it against their shapes and dtypes."""
    if isinstance(path, str) and ":" in path and not Path(path).exists():
        return _from_callable(path, inputs, purpose, min_samples)
    path = Path(path)
    if not path.exists():
        raise DataError(f"{purpose} data {path}: no such file or directory", "check the path")
    if path.is_dir() and any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir()):
        return _check_count(_images(path, inputs, preprocessing or ImagePreprocessing(), purpose), purpose, path,
                            min_samples)
    files = sorted(p for p in path.iterdir() if p.suffix in (".npy", ".npz")) if path.is_dir() else [path]
    if not files:
        raise DataError(f"{purpose} data {path}: no .npy, .npz or image files in the directory",
                        "put the samples there as .npy/.npz or jpg/png")
    from edgepack.input_values import fixed_value

    parts = [_read_arrays(f) for f in files]
    # the data holds every sample input, and the inputs fed whole that have no --input-value
    names = [t.name for t in inputs if t.is_sample or t.value is None]
    specs = {t.name: t for t in inputs}
    merged: dict[str, list[np.ndarray]] = {n: [] for n in names}
    labels: list[np.ndarray] = []
    for arrays, file in zip(parts, files, strict=True):
        if "y" in arrays:
            labels.append(arrays.pop("y"))
        if len(arrays) == 1 and len(names) == 1:
            merged[names[0]].append(next(iter(arrays.values())))
            continue
        for name in names:
            if name not in arrays and not specs[name].is_sample:
                fixed_value(specs[name])  # refused: no value given, and the data holds none
            if name not in arrays:
                raise DataError(f"{purpose} data {file}: no array for input '{name}' "
                                f"(found {', '.join(sorted(arrays)) or 'none'})",
                                "name the arrays in the .npz after the model's inputs")
            merged[name].append(arrays[name])
    dataset = _with_fixed(Dataset({n: _check(np.concatenate(v), specs[n], purpose, path) for n, v in merged.items()},
                                  _labels(labels, purpose, path) if labels else None), inputs)
    if labels and dataset.labels is not None and len(dataset.labels) != len(dataset):
        raise DataError(f"{purpose} data {path}: {len(dataset.labels)} labels for {len(dataset)} samples",
                        "give one integer label per sample")
    return _check_count(dataset, purpose, path, min_samples)


def _labels(parts: list[np.ndarray], purpose: str, path: object) -> np.ndarray:
    """Labels as int64 class indices: whole numbers from 0, one per sample (a float array of whole
    numbers is taken; a fraction or a negative is refused, never truncated)."""
    labels = np.concatenate([p.reshape(len(p)) if p.ndim and p.size == len(p) else p for p in map(np.asarray, parts)])
    if labels.ndim != 1 or labels.dtype.kind not in "iubf":
        raise DataError(f"{purpose} data {path}: labels (y) of shape {list(labels.shape)} and type "
                        f"{labels.dtype.name}", "give y as one integer class index per sample")
    if labels.dtype.kind == "f" and not np.all(np.isfinite(labels) & (np.mod(labels, 1) == 0)):
        bad = labels[~(np.isfinite(labels) & (np.mod(labels, 1) == 0))][0]
        raise DataError(f"{purpose} data {path}: labels (y) must be class indices, given {float(bad):g}",
                        "give y as one integer class index per sample (scores or one-hot rows are not labels)")
    if labels.size and labels.min() < 0:
        raise DataError(f"{purpose} data {path}: labels (y) must be class indices from 0, given {labels.min():g}",
                        "give y as one integer class index per sample")
    return labels.astype(np.int64)


def _check_count(dataset: Dataset, purpose: str, path: object, min_samples: int) -> Dataset:
    if len(dataset) == 0:
        raise DataError(f"{purpose} data {path}: no samples", "give some samples")
    if len(dataset) < min_samples:
        raise DataError(f"{purpose} data {path}: {len(dataset)} samples, at least {min_samples} needed",
                        "give more samples")
    return dataset


def _images(path: Path, inputs: list[TensorSpec], prep: ImagePreprocessing, purpose: str) -> Dataset:
    from PIL import Image

    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise DataError(f"{purpose} data {path}: images need a model with one 4-D image input",
                        "give .npy/.npz data instead")
    spec = inputs[0]
    channels_first = spec.layout == "NCHW"
    dims = spec.shape[1:]
    channels, height, width = (dims[0], dims[1], dims[2]) if channels_first else (dims[2], dims[0], dims[1])
    if prep.size:
        height, width = prep.size
    if not all(isinstance(d, int) for d in (channels, height, width)):
        raise DataError(f"{purpose} data {path}: the model's image size is dynamic ({list(spec.shape)})",
                        "pass --input-shape or --resize HxW")
    images = []
    for file in sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES):
        try:
            with warnings.catch_warnings():  # past PIL's pixel limit: refused, never decoded
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(file) as image:
                    mode = "L" if channels == 1 else "RGB"
                    pixels = np.asarray(image.convert(mode).resize((int(width), int(height)), Image.BILINEAR),
                                        dtype=np.float32) / 255.0
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise DataError(f"{purpose} data {file}: too large to decode safely ({first_line(exc)})",
                            "resize it first, or remove it") from None
        except OSError as exc:
            raise DataError(f"{purpose} data {file}: not a readable image ({exc})", "remove or replace it") from None
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
        if prep.channel_order == "bgr":
            pixels = pixels[..., ::-1]
        pixels = (pixels - np.asarray(prep.mean[: pixels.shape[-1]], np.float32)) / np.asarray(
            prep.std[: pixels.shape[-1]], np.float32)
        images.append(np.transpose(pixels, (2, 0, 1)) if channels_first else pixels)
    return _with_fixed(Dataset({spec.name: _check(np.stack(images), spec, purpose, path)}), inputs)


def _from_callable(spec_text: str, inputs: list[TensorSpec], purpose: str, min_samples: int) -> Dataset:
    from edgepack.model import resolve_factory

    function = resolve_factory(spec_text, flag=f"--{'calib' if purpose == 'calibration' else 'eval'}")
    try:
        samples = list(function())
    except Exception as exc:  # the user's own code: its failure is theirs to see, in one line
        raise DataError(f"{purpose} data {spec_text} raised {first_line(exc, with_type=True)}",
                        "fix the function, or give the samples as .npy/.npz") from None
    specs = {t.name: t for t in inputs}
    names = [t.name for t in inputs if t.is_sample or t.value is None]
    merged: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for sample in samples:
        values = sample if isinstance(sample, dict) else dict(zip(names, [sample], strict=False))
        for name in names:
            if name not in values:
                raise DataError(f"{purpose} data {spec_text}: a sample has no input '{name}'",
                                "yield dicts keyed by the model's input names")
            array, spec = np.asarray(values[name]), specs[name]
            merged[name].append(array if spec.is_sample and array.ndim == len(spec.shape) else array[None])
    if not samples:
        raise DataError(f"{purpose} data {spec_text}: no samples", "return some samples")
    dataset = _with_fixed(Dataset({n: _check(np.concatenate(v), specs[n], purpose, spec_text)
                                   for n, v in merged.items()}), inputs)
    return _check_count(dataset, purpose, spec_text, min_samples)


def _check(array: np.ndarray, spec: TensorSpec, purpose: str, path: object) -> np.ndarray:
    sample = spec.shape[1:] if spec.is_sample else spec.shape  # an input fed whole: one value per sample
    expected = [d if isinstance(d, int) and d > 0 else None for d in sample]
    given = list(array.shape[1:])
    shape_text = "x".join(str(d) if d else "?" for d in ["N", *expected])  # type: ignore[list-item]
    if array.ndim == 0 or len(given) != len(expected) or any(
            e is not None and e != g for e, g in zip(expected, given, strict=True)):
        raise DataError(f"{purpose} data {path}: input '{spec.name}' expects samples of shape "
                        f"{shape_text} ({spec.layout}), given {'x'.join(map(str, array.shape))}",
                        "give data in the source model's layout, samples on the first axis")
    if len(array) == 0:
        raise DataError(f"{purpose} data {path}: no samples for input '{spec.name}'", "give some samples")
    want = np.dtype(spec.dtype)
    if array.dtype.kind != want.kind and not (array.dtype.kind in "iu" and want.kind in "iu"):
        raise DataError(f"{purpose} data {path}: input '{spec.name}' expects {want.name}, given "
                        f"{array.dtype.name}", f"convert the data to {want.name}")
    if array.dtype.kind in "fc":
        bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
        if bad.any():
            first = ", ".join(str(i) for i in np.flatnonzero(bad)[:5])
            raise DataError(f"{purpose} data {path}: input '{spec.name}' has NaN or Inf in {int(bad.sum())} "
                            f"sample(s) (first: {first})", "remove or repair those samples")
    return array.astype(want, copy=False)


def random_dataset(inputs: list[TensorSpec], count: int, seed: int = 0) -> Dataset:
    """Uniform [0, 1) floats (or small integers) of the inputs' static shapes, batch 1 per sample."""
    from edgepack.input_values import fixed_value

    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in inputs:
        if not spec.is_sample:  # never made up: the user's --input-value, or refused
            arrays[spec.name] = np.repeat(fixed_value(spec)[None], count, axis=0)
            continue
        shape = (count, *[int(d) for d in spec.shape[1:]])  # type: ignore[arg-type]
        dtype = np.dtype(spec.dtype)
        try:
            arrays[spec.name] = (rng.random(shape).astype(dtype) if dtype.kind == "f"
                                 else rng.integers(0, 10, shape).astype(dtype))
        except MemoryError:
            raise DataError(f"input '{spec.name}' of shape {list(spec.shape)}: {count} random samples do not fit in "
                            "this machine's memory", "check --input-shape") from None
    return Dataset(arrays, whole=_whole(inputs))
