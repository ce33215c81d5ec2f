"""Inputs that are not samples, and the values a user fixes for them (``--input-value``).

A sample input carries samples on its first axis (the batch axis: 1 or dynamic). Others are fed
whole, the same for every sample: a rank-0 value (a sample rate), or a tensor whose first axis is
fixed at another size (a recurrent state ``[2, 1, 128]``). edgepack never makes such a value up:
it comes from the data (an .npz array by the input's name, one per sample) or from

    --input-value sr=16000;state=zeros      a number, ``zeros``, or a .npy file, per input
    --input-value values.npz                an array per input name
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from edgepack.errors import UsageError, first_line


class Spec(Protocol):
    """What this module reads of an input (edgepack.model.TensorSpec, a dataclass)."""

    name: str
    shape: tuple[Any, ...]
    dtype: str
    value: np.ndarray | None

    @property
    def is_sample(self) -> bool: ...


TensorSpec = TypeVar("TensorSpec", bound=Spec)

FLAG = "--input-value"


def parse_input_values(text: str | None, inputs: list[TensorSpec]) -> dict[str, np.ndarray]:
    """The values ``--input-value`` gives, checked against the inputs' names, shapes and dtypes."""
    if not text or not text.strip():
        return {}
    specs = {t.name: t for t in inputs}
    raw: dict[str, str | np.ndarray] = {}
    if text.strip().endswith(".npz") and "=" not in text:
        raw.update(_read(Path(text.strip())))
    else:
        for part in text.split(";"):
            if not part.strip():
                continue
            name, sep, value = part.partition("=")
            if not sep or not name.strip() or not value.strip():
                raise UsageError(f"{FLAG} '{part}' is not NAME=VALUE", f"e.g. {FLAG} 'sr=16000;state=zeros'")
            raw[name.strip()] = value.strip()
    values = {}
    for name, value in raw.items():
        if name not in specs:
            raise UsageError(f"{FLAG} names no input '{name}'", f"the model's inputs are: {', '.join(specs)}")
        values[name] = _value(specs[name], value)
    return values


def with_values(inputs: list[TensorSpec], values: dict[str, np.ndarray]) -> list[TensorSpec]:
    return [replace(t, value=values[t.name]) if t.name in values else t for t in inputs]


def fixed_value(spec: TensorSpec) -> np.ndarray:
    """The value fed to an input that is not a sample input; refused when none was given."""
    if spec.value is not None:
        return spec.value
    if not spec.shape:
        raise UsageError(f"input '{spec.name}' ({spec.dtype}, a single value) is not a sample input and no value "
                         "was given", f"give it: {FLAG} '{spec.name}=VALUE' (a number, or a .npy file), or an "
                         "array of that name in the data")
    raise UsageError(f"input '{spec.name}' has a fixed first axis of {spec.shape[0]} {list(spec.shape)}: it is not "
                     "a sample input (edgepack feeds one sample at a time) and no value was given",
                     f"give it: {FLAG} '{spec.name}=VALUE' (a number, zeros, or a .npy file) or an array of that "
                     "name in the data; for a batch axis, export the model with batch 1 or a dynamic one")


def _value(spec: TensorSpec, value: str | np.ndarray) -> np.ndarray:
    shape = tuple(int(d) if isinstance(d, int) and d > 0 else 1 for d in spec.shape)
    if isinstance(value, str):
        if value == "zeros":
            return np.zeros(shape, np.dtype(spec.dtype))
        if value.endswith(".npy"):
            value = _read(Path(value))[""]
        else:
            try:
                value = np.full(shape, float(value))
            except ValueError:
                raise UsageError(f"{FLAG} {spec.name}={value}: not a number, zeros or a .npy file",
                                 f"e.g. {FLAG} {spec.name}=16000") from None
    array = np.asarray(value)
    if array.shape != shape and array.size == int(np.prod(shape)) == 1:
        array = array.reshape(shape)
    if array.shape != shape:
        raise UsageError(f"{FLAG} for '{spec.name}' has shape {list(array.shape)}, the input is {list(spec.shape)}",
                         "give one value of the input's own shape")
    want = np.dtype(spec.dtype)
    if want.kind in "iub" and array.dtype.kind == "f" and not np.all(np.equal(np.mod(array, 1), 0)):
        raise UsageError(f"{FLAG} for '{spec.name}' is fractional, the input is {want.name}", "give whole numbers")
    return array.astype(want)


def _read(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise UsageError(f"{FLAG} {path}: no such file", "check the path")
    try:
        if path.suffix == ".npy":
            return {"": np.load(path, allow_pickle=False)}
        with np.load(path, allow_pickle=False) as archive:
            return {k: archive[k] for k in archive.files}
    except (ValueError, OSError, EOFError) as exc:
        raise UsageError(f"{FLAG} {path}: not a readable numpy file ({first_line(exc)})",
                         "save it with numpy.save / numpy.savez") from None
