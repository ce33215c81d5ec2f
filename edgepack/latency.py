"""Where a latency came from, in one vocabulary: the table, the report, the manifest and the search
all read a :class:`LatencySource`, never a string. Its label is what a person reads (and what
``--json`` and the manifest say); the toolchain's own words (``Vela 5.2.0``) may follow in brackets."""

from __future__ import annotations

from enum import Enum


class LatencySource(str, Enum):
    MEASURED = "measured"  # timed on a board (or this machine, with --device host)
    EMULATED = "emulated: not a latency"  # timed under qemu: right for outputs, never for speed
    COMPILER_ESTIMATE = "compiler estimate"  # an NPU compiler's cycles (Vela for Ethos-U)
    CYCLE_ESTIMATE = "estimate (MACs x cycles per MAC at the clock)"  # a microcontroller's figure
    PREDICTED = "predicted"  # the predictor's, before (or instead of) a measurement

    def __str__(self) -> str:
        return self.value

    def __hash__(self) -> int:  # equal to its value, so it hashes like it
        return hash(self.value)

    @property
    def timed(self) -> bool:
        """Measured, or a toolchain's estimate of the device: a figure of the device itself, not the predictor's."""
        return self is not LatencySource.PREDICTED

    @property
    def estimated(self) -> bool:
        """A toolchain's figure, not a timing (an NPU compiler's cycles, an MCU's cycles per MAC)."""
        return self in (LatencySource.COMPILER_ESTIMATE, LatencySource.CYCLE_ESTIMATE)

    def label(self, detail: str | None = None) -> str:
        """The words a person reads: ``compiler estimate (Vela 5.2.0)``."""
        return f"{self.value} ({detail})" if detail else self.value

    @classmethod
    def of_label(cls, label: str) -> LatencySource:
        """The source a label names (its detail in brackets aside); an unknown one is an estimate's."""
        for source in cls:
            if label == source.value or (source is not cls.CYCLE_ESTIMATE and label.startswith(source.value + " (")):
                return source
        return cls.CYCLE_ESTIMATE if label.startswith("estimate") else cls.COMPILER_ESTIMATE
