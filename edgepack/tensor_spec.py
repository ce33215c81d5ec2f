"""TensorSpec: one input or output of a model (name, shape with its dynamic dimensions, dtype, layout).

What every reader of a model file returns, and what data readers, validation and ``--input-value``
read of a model's inputs; it knows nothing of model files or frameworks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Dim = int | str | None  # int: fixed; str: a named dynamic dimension; None: unnamed dynamic


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: name, shape (dynamic dims as str/None), numpy dtype name, layout."""

    name: str
    shape: tuple[Dim, ...]
    dtype: str
    layout: str
    #: --input-value: fed whole, the same for every sample (see edgepack.input_values)
    value: Any = field(default=None, compare=False, repr=False)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) and d > 0 for d in self.shape)

    @property
    def is_sample(self) -> bool:
        """Samples go on the first axis, the batch axis (1 or dynamic). A rank-0 input (a sample rate)
        or one whose first axis is fixed at another size (a recurrent state [2, 1, 128]) is fed whole."""
        return bool(self.shape) and (not isinstance(self.shape[0], int) or self.shape[0] <= 1)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype, "layout": self.layout}


def default_layout(rank: int, channels_last: bool) -> str:
    """The framework's convention for a tensor of this rank (images are rank 4)."""
    if rank == 4:
        return "NHWC" if channels_last else "NCHW"
    if rank == 3:
        return "NWC" if channels_last else "NCW"
    if rank == 2:
        return "NC"
    return "?"
