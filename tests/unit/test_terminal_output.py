"""What the terminal shows: progress lines (updating on a terminal, plain when piped) and the build
table's grouping of candidates left for the same reason."""

from __future__ import annotations

import io

from edgepack.compress.plan import CompressionPlan
from edgepack.latency import LatencySource
from edgepack.progress import Progress
from edgepack.render import CONTENDERS, MEASURED_SHOWN, grouped_rows
from edgepack.search.candidate import Latency, Status
from edgepack.search.result import CandidateRow


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_a_stage_updates_one_line_and_a_new_stage_starts_another():
    screen = Terminal()
    say = Progress(1, screen)
    for line in ("searching 4 candidates", "build  tflite int8: 0.08 MB", "measure  1  tflite int8 x1: p50 1 ms",
                 "checking accuracy on the board"):
        say(line)
    say.done()
    text = screen.getvalue()
    assert text.count("\n") == 2  # the search loop's lines shared one line; the check got its own
    assert "\r\033[Kedgepack: measure  1" in text and text.endswith("edgepack: checking accuracy on the board\n")


def test_piped_every_line_is_plain_and_quiet_prints_nothing():
    piped = io.StringIO()
    say = Progress(1, piped)
    say("build  a")
    say("build  b")
    assert piped.getvalue() == "edgepack: build  a\nedgepack: build  b\n"
    silent = Terminal()
    Progress(0, silent)("build  a")
    assert silent.getvalue() == ""


def _row(label: str, status: str, latency: float | None = None, blocked: list[str] | None = None,
         chosen: bool = False, error: str | None = None) -> CandidateRow:
    return CandidateRow(CompressionPlan("onnx", "fp32"), label, Status(status), 1.0,
                        None if latency is None else Latency(latency, LatencySource.MEASURED), predicted_ms=1.0,
                        chosen=chosen, blocked_by=tuple(blocked or ()), error=error)


def test_the_table_keeps_the_measured_and_the_nearest_and_groups_the_rest_by_reason():
    rows = [_row("chosen", "measured", 1.0, chosen=True), _row("m2", "measured", 2.0)]
    rows += [_row(f"slow{i}", "measured", 10.0 + i) for i in range(MEASURED_SHOWN - 1)]
    rows += [_row(f"open{i}", "predicted") for i in range(CONTENDERS + 5)]
    rows += [_row(f"same{i}", "predicted", blocked=["pruning 30% gives the same model as pruning 50%"])
             for i in range(14)]
    rows += [_row("broken", "failed", error="measurement failed: timeout")]
    shown, groups = grouped_rows(rows)
    kept = ["chosen", "m2", *[f"slow{i}" for i in range(MEASURED_SHOWN - 2)]]
    assert [r.label for r in shown] == [*kept, *[f"open{i}" for i in range(CONTENDERS)]]
    assert groups[0] == f"1 more measured, slower and off the Pareto front: slow{MEASURED_SHOWN - 2}"
    assert groups[1] == "14 candidates: pruning 30% gives the same model as pruning 50%"
    assert groups[2] == "5 candidates: not built nor measured: the search chose before reaching them"
    assert groups[-1] == "1 candidate: failed: measurement failed: timeout"
