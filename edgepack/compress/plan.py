"""A compression plan: the replayable recipe of one candidate (format, precision, pruning, threads).

It lives here, with the code that carries it out, and the search (``edgepack.search``) proposes plans
without the compressors ever importing the search. Its fields are typed: the format is an
:class:`~edgepack.formats.ArtifactFormat`, the precision a :class:`Precision`; strings given to the
constructor are read into them, so a plan made from the command line and one made in code are equal.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

from edgepack.formats import ArtifactFormat

AS_GIVEN = "as given"  # the artifact of a plan that is the user's model file itself


class Precision(str, Enum):
    """The arithmetic of an artifact's weights and activations."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # weights and activations, calibrated on the user's data
    DYNAMIC = "dynamic"  # int8 weights, activations quantized at run time

    def __str__(self) -> str:
        return self.value

    def __hash__(self) -> int:  # equal to its value, so it hashes like it
        return hash(self.value)

    @property
    def calibrated(self) -> bool:
        """Needs calibration data (its activation ranges come from the user's samples)."""
        return self is Precision.INT8


@dataclass(frozen=True)
class CompressionPlan:
    """A replayable recipe: the same plan on the same source always gives the same artifact."""

    format: ArtifactFormat
    precision: Precision
    prune_ratio: float = 0.0
    threads: int = 1
    #: the user's model file itself, untouched (already in a format the device runs); ``precision`` is
    #: then read from its graph, never made: no conversion, pruning or quantization
    as_given: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "format", ArtifactFormat(self.format))
        object.__setattr__(self, "precision", Precision(self.precision))

    @property
    def key(self) -> str:
        fields = asdict(self)
        if not self.as_given:  # the keys plans had before there were plans as given
            del fields["as_given"]
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]

    @property
    def is_baseline(self) -> bool:
        """The model as the user has it: the source as given, or else the unpruned fp32 one."""
        return self.as_given or (self.precision is Precision.FP32 and self.prune_ratio == 0.0)

    @property
    def artifact(self) -> tuple[str, str, float]:
        """What decides the file: plans differing only in threads share one artifact (the source as given
        is one file whatever its precision)."""
        return (self.format.value, AS_GIVEN if self.as_given else self.precision.value, self.prune_ratio)

    @property
    def label(self) -> str:
        pruned = f" pruned {self.prune_ratio:.0%}" if self.prune_ratio else ""
        given = f" {AS_GIVEN}" if self.as_given else ""
        return f"{self.format} {self.precision}{pruned}{given} x{self.threads}"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "format": self.format.value, "precision": self.precision.value, "key": self.key}
