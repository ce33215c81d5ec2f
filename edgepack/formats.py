"""The formats edgepack ships, in one vocabulary: each knows its file suffix, the runtime that runs it
on a board (the harness's ``--runtime`` and the records' runtime) and that runtime's name in words."""

from __future__ import annotations

from enum import Enum
from pathlib import Path


class ArtifactFormat(str, Enum):
    ONNX = "onnx"
    TFLITE = "tflite"

    def __str__(self) -> str:
        return self.value

    def __hash__(self) -> int:  # equal to its value, so it hashes like it
        return hash(self.value)

    @property
    def suffix(self) -> str:
        return f".{self.value}"

    @property
    def runtime(self) -> str:
        """The harness's runtime for this format (``harness.py --runtime``)."""
        return "onnxruntime" if self is ArtifactFormat.ONNX else "tflite"

    @property
    def engine(self) -> str:
        """The runtime in words, for messages."""
        return "ONNX Runtime" if self is ArtifactFormat.ONNX else "the TFLite interpreter"

    @classmethod
    def of_path(cls, path: Path | str) -> ArtifactFormat | None:
        """By the file's suffix; None for anything else."""
        suffix = Path(path).suffix.lower().lstrip(".")
        return cls(suffix) if suffix in cls._value2member_map_ else None

    @classmethod
    def for_runtime(cls, runtime: str) -> ArtifactFormat:
        """A profile's runtime (onnxruntime, tflite, tflite-micro, ...) -> the format it runs."""
        return cls.ONNX if runtime == "onnxruntime" else cls.TFLITE


FORMATS = tuple(f.value for f in ArtifactFormat)
