"""The numbers a user gives (flags and Python API arguments), each declared once with its range.

The CLI checks a flag while parsing (``flag("runs")`` is its argparse ``type``: a bad value is one
line and exit 2 before any work); the Python API checks the same argument with ``checked("runs",
value)``, which raises :class:`~edgepack.errors.UsageError` naming the argument. A value is never
rewritten: ``runs=0`` is refused, not taken as "the profile's default".
"""

from __future__ import annotations

import argparse
import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgepack.errors import UsageError


@dataclass(frozen=True)
class Bound:
    """What a numeric argument may be: whole or not, and its range (``least`` inclusive, ``above`` and
    ``below`` exclusive)."""

    whole: bool
    least: float | None = None
    above: float | None = None
    below: float | None = None

    def describe(self) -> str:
        kind = "a whole number" if self.whole else "a number"
        if self.least is not None and self.below is not None:
            return f"{kind} in [{self.least:g}, {self.below:g})"
        if self.least is not None:
            return f"{kind} of at least {self.least:g}"
        return f"{kind} above {self.above:g}" if self.above is not None else kind

    def holds(self, value: float) -> bool:
        return (math.isfinite(value) and (self.least is None or value >= self.least)
                and (self.above is None or value > self.above) and (self.below is None or value < self.below))

    def parse(self, text: str) -> int | float | None:
        """The number ``text`` writes, or None when it is not one of this kind or out of range."""
        try:
            value: int | float = int(text) if self.whole else float(text)
        except ValueError:
            return None
        return value if self.holds(value) else None

    def accepts(self, value: Any) -> bool:
        """A Python value of the right type (no str, no bool) and in range."""
        kind = numbers.Integral if self.whole else numbers.Real
        return isinstance(value, kind) and not isinstance(value, bool) and self.holds(float(value))


COUNT = Bound(whole=True, least=1)  # runs, threads, jobs...
WHOLE = Bound(whole=True, least=0)  # warmup runs, epochs
POSITIVE = Bound(whole=False, above=0)  # seconds, megabytes, milliseconds, points, tolerances
RATIO = Bound(whole=False, least=0, below=1)  # a fraction of channels removed
POINTS = Bound(whole=False, least=0)  # an accuracy drop: 0 asks for none at all

#: Every numeric argument of the CLI and the API, by its API name (the flag: dashes, ``--timeout``
#: for ``timeout_s``, ``--time-budget`` for ``time_budget_s``, ``--prune`` for ``prune_ratios``).
BOUNDS: dict[str, Bound] = {
    "runs": COUNT, "warmup": WHOLE, "threads": COUNT, "jobs": COUNT, "max_measurements": COUNT,
    "round_to": COUNT, "distill_epochs": WHOLE, "timeout_s": POSITIVE, "time_budget_s": POSITIVE,
    "max_size_mb": POSITIVE, "max_ram_mb": POSITIVE, "max_sram_kb": POSITIVE, "max_latency_ms": POSITIVE,
    "max_accuracy_drop": POINTS, "tolerance": POSITIVE, "budget_minutes": POSITIVE, "ratio": RATIO,
    "prune_ratios": RATIO,
}


def checked(name: str, value: Any) -> Any:
    """``value`` when it fits ``BOUNDS[name]`` (None passes: "not given"); UsageError naming ``name``."""
    bound = BOUNDS[name]
    if value is None or bound.accepts(value):
        return value
    raise UsageError(f"{name} must be {bound.describe()}, not {value!r}",
                     f"e.g. {name}={_example(bound)}" + (" (None: the default)" if bound is not RATIO else ""))


def checked_list(name: str, values: Any) -> tuple[Any, ...] | None:
    """A sequence whose every item fits ``BOUNDS[name]`` (a single number is a list of one), as a tuple."""
    if values is None:
        return None
    items = (values,) if isinstance(values, numbers.Number) else values
    bound = BOUNDS[name]
    if isinstance(items, str | bytes) or not isinstance(items, Sequence) or not items \
            or not all(bound.accepts(v) for v in items):
        raise UsageError(f"{name} must be a list of {_plural(bound)}, not {values!r}",
                         f"e.g. {name}=[{_example(bound)}]")
    return tuple(items)


def _example(bound: Bound) -> str:
    return "0.5" if bound is RATIO else "1" if bound.whole else "2.5"


def _plural(bound: Bound) -> str:
    return bound.describe().replace("a whole number", "whole numbers").replace("a number", "numbers")


def flag(name: str) -> Callable[[str], int | float]:
    """The argparse ``type`` of the flag for ``BOUNDS[name]``: the parsed number, or argparse's refusal."""
    bound = BOUNDS[name]

    def parse(text: str) -> int | float:
        value = bound.parse(text)
        if value is None:
            raise argparse.ArgumentTypeError(f"must be {bound.describe()}, not '{text}'")
        return value

    parse.__name__ = bound.describe()
    return parse


def flag_list(name: str) -> Callable[[str], str]:
    """The argparse ``type`` of a comma-separated list (``--prune 0,0.3``): checked, returned as written."""
    bound = BOUNDS[name]

    def parse(text: str) -> str:
        items = [v.strip() for v in text.split(",") if v.strip()]
        if not items or any(bound.parse(v) is None for v in items):
            raise argparse.ArgumentTypeError(f"must be {_plural(bound)} separated by commas, not '{text}'")
        return text

    return parse


def image_size(text: str) -> str:
    """The argparse ``type`` of ``--resize HxW``: two whole numbers of at least 1, returned as written."""
    parts = text.lower().split("x")
    if len(parts) != 2 or any(COUNT.parse(p) is None for p in parts):
        raise argparse.ArgumentTypeError(f"must be HEIGHTxWIDTH in pixels, e.g. 224x224, not '{text}'")
    return text


def path_of(value: object, name: str) -> Path:
    if isinstance(value, str | os.PathLike) and str(value).strip():
        return Path(value)
    raise UsageError(f"{name} must be a path (a str or a pathlib.Path), not {type(value).__name__} {value!r}",
                     f"e.g. {name}='dist'")


def folder_for_writing(value: object, name: str) -> Path:
    """``value`` as the folder ``name`` (``-o``, ``--cache``) writes into, refused before any work when it, or
    a folder it would be made in, is a file."""
    path = path_of(value, name)
    for place in (path, *path.absolute().parents):
        if place.exists():
            if not place.is_dir():
                what = "is" if place == path else f"would be made inside {place}, which is"
                raise UsageError(f"{name} {path} {what} a file, not a folder",
                                 f"{name} names the folder edgepack writes into: give a folder (e.g. dist)")
            break
    return path


def hosts_of(hosts: str | Sequence[str]) -> tuple[str, ...]:
    """One host (a str) or a sequence of them, as a tuple."""
    items = (hosts,) if isinstance(hosts, str) else hosts
    if isinstance(items, Sequence) and all(isinstance(h, str) and h.strip() for h in items):
        return tuple(items)
    raise UsageError(f"hosts must be a host ('user@board[:port]') or a list of them, not {hosts!r}",
                     "e.g. hosts='pi@raspberrypi.local' or hosts=['pi@board1', 'pi@board2:2222']")
