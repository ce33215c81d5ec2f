"""The errors edgepack raises for the user's own mistakes.

Every :class:`EdgepackError` is something the user can fix: the CLI prints ``str(error)`` on one line of
stderr and exits with code 2. Bugs in edgepack are any other exception and keep their traceback.
Failures *on the device* are not exceptions at all: runners return them as Measurements.
"""

from __future__ import annotations

from pathlib import Path

USER_ERROR_EXIT_CODE = 2


class EdgepackError(Exception):
    """A problem with what the user gave us, with a hint on what to do about it."""

    def __init__(self, problem: str, hint: str = "") -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.problem}; {self.hint}" if self.hint else self.problem


class ModelFileError(EdgepackError):
    """The model file is missing, of an unknown kind, truncated or corrupt."""

    def __init__(self, path: Path | str, problem: str, hint: str = "") -> None:
        super().__init__(f"{path}: {problem}", hint)
        self.path = Path(path)


class UnknownDeviceError(EdgepackError):
    """No device profile has this name."""

    def __init__(self, name: str, known: list[str], suggestion: str | None) -> None:
        hint = f"did you mean '{suggestion}'?" if suggestion else "run 'edgepack devices' to list them"
        super().__init__(f"unknown device '{name}'", hint)
        self.name = name
        self.known = known
        self.suggestion = suggestion


class ProfileError(EdgepackError):
    """A device profile file is invalid: names the file and the key."""

    def __init__(self, path: Path | str, key: str, problem: str) -> None:
        where = f"{path}: {key}" if key else str(path)
        super().__init__(f"invalid device profile {where}: {problem}", "fix the file and retry")
        self.path = Path(path)
        self.key = key


class InputShapeError(EdgepackError):
    """An input shape is missing, dynamic where it must be fixed, or malformed."""


class UsageError(EdgepackError):
    """Flags that do not fit together."""


class BoardFault(EdgepackError):
    """The board failed (hung, flooded its output, answered with no answer): said in one line like a user
    error, but the fault is the board's, so the CLI exits 1 (``exit_code``)."""

    exit_code = 1


class MissingDependencyError(EdgepackError):
    """An optional dependency this operation needs is not installed."""

    def __init__(self, package: str, needed_for: str, extra: str) -> None:
        super().__init__(
            f"{needed_for} needs the Python package '{package}', which is not installed",
            f"pip install 'edgepack[{extra}]'",
        )
        self.package = package


def first_line(exc: BaseException, limit: int = 200, *, with_type: bool = False) -> str:
    """The first line of an exception's message (libraries raise pages), or its type when it has none."""
    text = str(exc).strip()
    line = text.splitlines()[0][:limit] if text else ""
    if with_type:
        return f"{type(exc).__name__}: {line}" if line else type(exc).__name__
    return line or type(exc).__name__
