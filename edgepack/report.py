"""``report.html``: one self-contained page (no network, no script) that says what was built and why.

A summary card first (the chosen candidate against the original, accuracy and where it was checked,
the device and its environment, every constraint and whether it held); then matplotlib's static SVG
figures: the measured candidates by size and p50 (each named in the legend and on hover, the chosen one
and the Pareto front marked, predicted ones apart), every run's latency per candidate, the ten most
expensive ops; the predictor's error; the pruning and quantization decisions.
"""

from __future__ import annotations

import html
import io
from collections.abc import Sequence
from typing import Any

from edgepack.compress.plan import Precision
from edgepack.latency import LatencySource
from edgepack.runners.base import EMULATED, Environment, OpTime
from edgepack.runners.conditions import Conditions
from edgepack.search.candidate import Status
from edgepack.search.result import BuildResult, CandidateRow
from edgepack.search.space import ConstraintCheck
from edgepack.stages import StageTime, totals

MARKERS = "osD^v<>phP*Xd"


def _e(value: Any) -> str:
    return html.escape(str(value))


def _svg(figure: Any, titles: dict[str, str] | None = None) -> str:
    """The figure as inline SVG; ``titles``: gid -> hover text, put in the element with that id."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(figure)
    text = buffer.getvalue()
    text = text[text.index("<svg"):]
    for gid, title in (titles or {}).items():
        text = text.replace(f'<g id="{gid}">', f'<g id="{gid}"><title>{_e(title)}</title>', 1)
    return text


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("svg")
    import matplotlib.pyplot as plt

    # text stays text (searchable, in the DOM), and the same build gives the same report
    plt.rcParams.update({"svg.hashsalt": "edgepack", "svg.fonttype": "none", "font.size": 9})
    return plt


def _quality(r: CandidateRow) -> str:
    return "-" if r.accuracy_drop is None else f"drop {r.accuracy_drop:.2f} pts"


def pareto_figure(rows: Sequence[CandidateRow]) -> str:
    plt = _pyplot()
    measured = [r for r in rows if r.measured and r.latency_ms is not None and r.size_mb is not None]
    predicted = [r for r in rows if not r.measured and r.shown_ms and r.size_mb is not None]
    figure, axes = plt.subplots(figsize=(8, 4.8))
    titles = {}
    for i, r in enumerate(measured):
        gid = f"candidate-{i}"
        points = axes.scatter([r.size_mb], [r.latency_ms], s=120 if r.chosen else 45,
                              marker="*" if r.chosen else MARKERS[i % len(MARKERS)],
                              edgecolors="black" if r.pareto else "none", linewidths=1.2,
                              label=("CHOSEN: " if r.chosen else "") + r.label, zorder=3)
        points.set_gid(gid)
        titles[gid] = (f"{r.label}: {r.size_mb:.3f} MB, p50 {r.latency_ms:.3f} ms, "
                       f"{_quality(r)}{', on the Pareto front' if r.pareto else ''}")
    if any(r.pareto for r in measured):  # the front is in three figures: drawn as an edge, not a line
        axes.scatter([], [], s=45, facecolors="none", edgecolors="black", linewidths=1.2,
                     label="black edge: on the Pareto front (size, p50, accuracy drop)")
    if predicted:
        axes.scatter([r.size_mb for r in predicted], [r.shown_ms for r in predicted], s=30,
                     facecolors="none", edgecolors="grey", label=f"predicted, not measured ({len(predicted)})",
                     zorder=1)
    axes.set_xlabel("model size (MB)")
    axes.set_ylabel("p50 latency (ms)")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axes.set_title("Candidates by size and latency (hover a point for its figures)")
    return _svg(figure, titles)


def distribution_figure(rows: Sequence[CandidateRow]) -> str | None:
    runs = [(r.label, r.runs_ms) for r in rows if r.runs_ms]
    if not runs:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 0.35 * len(runs) + 1.2))
    axes.boxplot([list(values) for _, values in runs], orientation="horizontal",
                 tick_labels=[label for label, _ in runs], showfliers=True, flierprops={"markersize": 3})
    axes.set_xlabel("latency of each timed run (ms)")
    axes.grid(True, axis="x", alpha=0.3)
    axes.set_title("Every timed run of each measured candidate")
    return _svg(figure)


def ops_figure(ops: Sequence[OpTime]) -> str:
    plt = _pyplot()
    top = list(ops[:10])[::-1]
    figure, axes = plt.subplots(figsize=(8, 0.35 * len(top) + 1.2))
    axes.barh([f"{o.name[:40]} ({o.type})" for o in top], [o.ms for o in top], color="steelblue")
    axes.set_xlabel("ms per inference")
    axes.set_title("The ten most expensive ops of the chosen candidate")
    return _svg(figure)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _baseline(rows: Sequence[CandidateRow], chosen: CandidateRow) -> CandidateRow | None:
    """The original as measured: the fastest fp32, unpruned candidate (the chosen one's format first)."""
    plain = [r for r in rows if r.measured and r.latency_ms is not None and r.plan.precision is Precision.FP32
             and not r.plan.prune_ratio]
    plain.sort(key=lambda r: (r.plan.format is not chosen.plan.format, r.latency_ms or 0.0))
    return plain[0] if plain else None


def summary_card(result: BuildResult, rows: Sequence[CandidateRow], constraints: Sequence[ConstraintCheck]) -> str:
    chosen = result.chosen
    items: list[tuple[str, str]] = []
    if chosen is not None:
        speed = f"p50 {_ms(chosen.shown_ms)} ms"
        speed += f", p90 {chosen.p90_ms:.3f} ms" if chosen.p90_ms else ""
        items.append(("chosen", f"{chosen.label}: {speed} ({chosen.latency_label}), {chosen.size_mb or 0:.3f} MB"))
        if chosen.unstable:
            items.append(("UNSTABLE", "measured while " + "; ".join(chosen.unstable)
                          + ": judged by its p90; measure again on a cool, idle board"))
        base = _baseline(rows, chosen)
        if base is not None and base.plan != chosen.plan and chosen.latency_ms and chosen.size_mb and base.size_mb:
            faster, smaller = (base.latency_ms or 0.0) / chosen.latency_ms, base.size_mb / chosen.size_mb
            items.append(("against the original", f"{base.label}: p50 {_ms(base.latency_ms)} ms, "
                          f"{base.size_mb:.3f} MB; the chosen one is {faster:.2f}x as fast and "
                          f"{smaller:.2f}x as small"))
    checked = chosen.artifact.fidelity if chosen and chosen.artifact else None
    if checked is not None and checked.accuracy is not None and checked.source_accuracy is not None:
        items.append(("accuracy", f"{checked.accuracy:.2%} (original {checked.source_accuracy:.2%}) on "
                      f"{checked.samples} {checked.data} samples, on this machine"))
    on_device = result.device_accuracy
    if on_device is not None and on_device.samples:
        figure = f"{on_device.accuracy:.2%}" if on_device.accuracy is not None else "; ".join(
            f"{k}: {o.figure}" for k, o in on_device.outputs.items())
        items.append(("on the device", f"{figure} on {on_device.samples} held-out samples, run by its runtime"))
    measurement = chosen.measurement if chosen else None
    env = measurement.device if measurement else Environment.from_dict(result.environment)
    items.append(("device", f"{result.device.name}, measured on {result.where}; " + env.line()
                  + (f"; {measurement.runtime} {measurement.runtime_version}"
                     if measurement and measurement.runtime else "")))
    conditions = Conditions.of(measurement) if measurement else None
    if conditions is not None:
        items.append(("measuring conditions", conditions.line()))
    for c in constraints:
        items.append((f"constraint {c.name}", f"limit {c.limit:g}, value "
                      + ("-" if c.value is None else f"{c.value:.4g}")
                      + (": held" if c.held else ": NOT HELD") + (f" ({c.source})" if c.source else "")))
    p = result.predictor_score
    if p.median_error is not None and p.within_10pct is not None:
        items.append(("predictor", f"median error {p.median_error:.0%} on {len(p.errors)} measured "
                      f"candidates, {p.within_10pct:.0%} within 10%"))
    rows_html = "".join(f"<tr><th>{_e(k)}</th><td data-key='{_e(k)}'>{_e(v)}</td></tr>" for k, v in items)
    return f"<section id='summary'><h2>Summary</h2><table class='card'>{rows_html}</table></section>"


def decisions(chosen: CandidateRow | None) -> str:
    """What was done to the model: the pruning and quantization the artifact's build recorded."""
    if chosen is None:
        return ""
    details = chosen.artifact.details if chosen.artifact else {}
    parts = []
    pruning = (details.get("pruning") or {})
    if pruning.get("history"):
        rows = "".join(f"<tr><td>{_e(layer)}</td><td>{len(indices)}</td></tr>"
                       for layer, _, indices in pruning["history"])
        distill = pruning.get("distillation") or {}
        parts.append(f"<h3>Pruning: {pruning.get('ratio', 0):.0%} of the channels</h3>"
                     f"<table><tr><th>layer</th><th>output channels removed</th></tr>{rows}</table>"
                     + (f"<p>distilled from the original: {distill.get('epochs_run')} epochs, "
                        f"{_e(distill.get('stopped_because'))}</p>" if distill else ""))
    quantization = details.get("quantization") or {}
    if quantization:
        floats = quantization.get("float_layers") or []
        listed = ", ".join(_e(f.get("name", f) if isinstance(f, dict) else f) for f in floats) or "none"
        parts.append(f"<h3>Quantization</h3><p>{_e(quantization.get('mode', chosen.plan.precision))}; "
                     f"layers kept in float: {listed}</p>")
    if not parts:
        parts.append(f"<p>{_e(chosen.plan.format)} {_e(chosen.plan.precision)}: neither pruned nor quantized.</p>")
    return "<section id='decisions'><h2>Decisions</h2>" + "".join(parts) + "</section>"


def time_section(stages: Sequence[StageTime]) -> str:
    """Where the build's time went: seconds per stage (in the order the stages first ran), then each
    timed step with what it worked on; empty when the build timed nothing."""
    if not stages:
        return ""
    summed = totals(list(stages))
    whole = sum(summed.values()) or 1.0
    rows = "".join(f"<tr><td>{_e(stage)}</td><td>{seconds:.1f}</td><td>{seconds / whole:.0%}</td></tr>"
                   for stage, seconds in summed.items())
    steps = "".join(f"<tr><td>{_e(t.stage)}</td><td>{_e(t.detail or '-')}</td><td>{t.seconds:.2f}</td></tr>"
                    for t in stages)
    return ("<section id='stages'><h2>Where the build's time went</h2>"
            "<table><tr><th>stage</th><th>seconds</th><th>share</th></tr>" + rows + "</table>"
            "<p class='note'>Wall-clock seconds per step; steps built side by side in worker processes overlap, "
            "so the sum can exceed the build's own time.</p>"
            f"<details><summary>every step ({len(stages)})</summary><table><tr><th>stage</th><th>what</th>"
            "<th>seconds</th></tr>" + steps + "</table></details></section>")


def render_report(name: str, result: BuildResult | None, constraints: Sequence[ConstraintCheck] = ()) -> str:
    """The page for a build's package: ``result``'s built candidates, the chosen one first in every view."""
    if result is None:  # a package written without a build (edgepack.package.write_package called alone)
        return (f"<!doctype html><html><head><meta charset='utf-8'><title>edgepack report: {_e(name)}</title>"
                f"</head><body><h1>{_e(name)}</h1><p>Packaged without a build: no candidates were searched or "
                "measured (manifest.json holds the model's figures).</p></body></html>")
    rows = [r for r in result.rows if r.size_mb is not None and r.error is None]
    ops = result.op_profile.ops if result.op_profile else ()
    if ops:
        ops_html = ops_figure(ops)
    else:
        why = (result.op_profile.unavailable if result.op_profile else None) or "not measured"
        ops_html = (f"<p class='note'>Per-op profile: unavailable ({_e(why)}). ONNX Runtime's profiler gives it "
                    "for .onnx candidates; for TFLite, TFLite's benchmark_model with --enable_op_profiling on the "
                    "board would.</p>")
    chosen = result.chosen
    predicted = chosen is not None and chosen.latency_source is LatencySource.PREDICTED
    distribution = distribution_figure(rows)
    table_rows = "".join(
        f"<tr class='{'chosen' if r.chosen else ''}'><td class='name'>{_e(r.label)}</td>"
        f"<td>{r.size_mb or 0:.3f}</td><td>{_ms(r.latency.ms if r.latency else None)}</td>"
        f"<td>{_e(_quality(r))}</td><td>{'yes' if r.feasible else 'no'}</td>"
        f"<td>{'unstable' if r.status is Status.UNSTABLE else 'measured' if r.measured else 'predicted'}</td>"
        f"<td>{'*' if r.pareto else ''}</td></tr>"
        for r in rows)
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>edgepack report: {_e(name)}</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222}"
        "table{border-collapse:collapse}td,th{padding:2px 8px;text-align:left;border-bottom:1px solid #ddd}"
        ".card th{width:14em;vertical-align:top}tr.chosen{font-weight:bold}.note{color:#555}"
        "</style></head><body>"
        f"<h1>{_e(name)}</h1>"
        + ("<p><b>Latencies here are predicted, not measured: "
           f"{_e(f'the board is emulated ({EMULATED})')}.</b></p>" if predicted else "")
        + summary_card(result, rows, constraints)
        + "<section id='pareto'><h2>Candidates</h2>" + pareto_figure(rows) + "</section>"
        + ("<section id='distribution'><h2>Latency distribution</h2>" + distribution + "</section>"
           if distribution else "")
        + "<section id='ops'><h2>Per-op profile</h2>" + ops_html + "</section>"
        + decisions(chosen)
        + time_section(result.stages)
        + "<section id='table'><h2>Every built candidate</h2><table><tr><th>candidate</th><th>size MB</th>"
        "<th>p50 ms</th><th>accuracy / fidelity</th><th>feasible</th><th>latency</th><th>Pareto</th></tr>"
        + table_rows + "</table></section></body></html>")
