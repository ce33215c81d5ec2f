"""JSON as edgepack writes it: strict, so that any parser reads it. A value that is not a finite number
(NaN, an infinity: a failed figure) is written as null, "missing", never as a bare ``NaN``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def finite(data: Any) -> Any:
    """``data`` with every NaN and infinity replaced by None, numpy scalars and arrays as Python values."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {str(k) if not isinstance(k, str | int | float | bool) and k is not None else k: finite(v)
                for k, v in data.items()}
    if isinstance(data, list | tuple | set | frozenset):
        return [finite(v) for v in data]
    if hasattr(data, "tolist") and type(data).__module__ == "numpy":  # numpy scalars and arrays
        return finite(data.tolist())
    if isinstance(data, str | int | bool) or data is None:
        return data
    if isinstance(data, Path):
        return str(data)
    return str(data)


def dumps(data: Any, **options: Any) -> str:
    return json.dumps(finite(data), allow_nan=False, **options)


def dump(data: Any, fh: Any, **options: Any) -> None:
    fh.write(dumps(data, **options))
