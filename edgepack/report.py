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
from typing import Any

from edgepack.runners.base import HarnessResult
from edgepack.runners.conditions import Conditions

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


def pareto_figure(rows: list[dict[str, Any]]) -> str:
    plt = _pyplot()
    measured = [r for r in rows if r.get("measured") and r.get("latency_ms") is not None]
    predicted = [r for r in rows if not r.get("measured") and (r.get("latency_ms") or r.get("predicted_ms"))]
    figure, axes = plt.subplots(figsize=(8, 4.8))
    titles = {}
    for i, r in enumerate(measured):
        gid = f"candidate-{i}"
        points = axes.scatter([r["size_mb"]], [r["latency_ms"]], s=120 if r.get("chosen") else 45,
                              marker="*" if r.get("chosen") else MARKERS[i % len(MARKERS)],
                              edgecolors="black" if r.get("pareto") else "none", linewidths=1.2,
                              label=("CHOSEN: " if r.get("chosen") else "") + r["label"], zorder=3)
        points.set_gid(gid)
        titles[gid] = (f"{r['label']}: {r['size_mb']:.3f} MB, p50 {r['latency_ms']:.3f} ms, "
                       f"{r.get('quality', '')}{', on the Pareto front' if r.get('pareto') else ''}")
    if any(r.get("pareto") for r in measured):  # the front is in three figures: drawn as an edge, not a line
        axes.scatter([], [], s=45, facecolors="none", edgecolors="black", linewidths=1.2,
                     label="black edge: on the Pareto front (size, p50, accuracy drop)")
    if predicted:
        axes.scatter([r["size_mb"] for r in predicted], [r.get("latency_ms") or r["predicted_ms"] for r in predicted],
                     s=30,
                     facecolors="none", edgecolors="grey", label=f"predicted, not measured ({len(predicted)})",
                     zorder=1)
    axes.set_xlabel("model size (MB)")
    axes.set_ylabel("p50 latency (ms)")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    axes.set_title("Candidates by size and latency (hover a point for its figures)")
    return _svg(figure, titles)


def distribution_figure(rows: list[dict[str, Any]]) -> str | None:
    runs = [(r["label"], r["runs_ms"]) for r in rows if r.get("runs_ms")]
    if not runs:
        return None
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 0.35 * len(runs) + 1.2))
    axes.boxplot([values for _, values in runs], orientation="horizontal", tick_labels=[label for label, _ in runs],
                 showfliers=True, flierprops={"markersize": 3})
    axes.set_xlabel("latency of each timed run (ms)")
    axes.grid(True, axis="x", alpha=0.3)
    axes.set_title("Every timed run of each measured candidate")
    return _svg(figure)


def ops_figure(ops: list[dict[str, Any]]) -> str:
    plt = _pyplot()
    top = ops[:10][::-1]
    figure, axes = plt.subplots(figsize=(8, 0.35 * len(top) + 1.2))
    axes.barh([f"{o['name'][:40]} ({o['type']})" for o in top], [o["ms"] for o in top], color="steelblue")
    axes.set_xlabel("ms per inference")
    axes.set_title("The ten most expensive ops of the chosen candidate")
    return _svg(figure)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _baseline(rows: list[dict[str, Any]], chosen: dict[str, Any]) -> dict[str, Any] | None:
    """The original as measured: the fastest fp32, unpruned candidate (the chosen one's format first)."""
    def plan(r: dict[str, Any]) -> dict[str, Any]:
        return r.get("plan") or {}

    plain = [r for r in rows if r.get("measured") and r.get("latency_ms") is not None
             and plan(r).get("precision") == "fp32" and not plan(r).get("prune_ratio")]
    plain.sort(key=lambda r: (plan(r).get("format") != plan(chosen).get("format"), r["latency_ms"]))
    return plain[0] if plain else None


def summary_card(name: str, device: str, rows: list[dict[str, Any]], plan: dict[str, Any],
                 measured: dict[str, Any], constraints: dict[str, Any], extra: dict[str, Any]) -> str:
    chosen = next((r for r in rows if r.get("chosen")), None)
    items: list[tuple[str, str]] = []
    if chosen is not None:
        source = measured.get("latency_source", "measured")
        speed = f"p50 {chosen['latency_ms']:.3f} ms"
        speed += f", p90 {chosen['p90_ms']:.3f} ms" if chosen.get("p90_ms") else ""
        items.append(("chosen", f"{chosen['label']}: {speed} ({source}), {chosen['size_mb']:.3f} MB"))
        if chosen.get("unstable"):
            items.append(("UNSTABLE", "measured while " + "; ".join(chosen["unstable"])
                          + ": judged by its p90; measure again on a cool, idle board"))
        base = _baseline(rows, chosen)
        if base is not None and base is not chosen:
            faster, smaller = base["latency_ms"] / chosen["latency_ms"], base["size_mb"] / chosen["size_mb"]
            items.append(("against the original", f"{base['label']}: p50 {base['latency_ms']:.3f} ms, "
                          f"{base['size_mb']:.3f} MB; the chosen one is {faster:.2f}x as fast and "
                          f"{smaller:.2f}x as small"))
    checked = plan.get("checked_against_original") or {}
    if checked.get("accuracy") is not None:
        items.append(("accuracy", f"{checked['accuracy']:.2%} (original {checked['source_accuracy']:.2%}) on "
                      f"{checked['samples']} {checked['data']} samples, on this machine"))
    on_device = plan.get("checked_on_device") or {}
    if on_device.get("samples"):
        figure = f"{on_device['accuracy']:.2%}" if on_device.get("accuracy") is not None else "; ".join(
            f"{k}: {o.get('figure')}" for k, o in (on_device.get("outputs") or {}).items())
        items.append(("on the device", f"{figure} on {on_device['samples']} held-out samples, run by its runtime"))
    env = measured.get("environment") or {}
    items.append(("device", f"{device}, measured on {measured.get('measured_on', '?')}; "
                  + ", ".join(f"{k} {env[k]}" for k in ("uname", "cpu_model", "cpu_count", "python", "numpy")
                              if env.get(k) is not None)
                  + (f"; {measured['runtime']} {measured.get('runtime_version')}" if measured.get("runtime") else "")))
    conditions = Conditions.of(HarnessResult(measured))
    if conditions is not None:
        items.append(("measuring conditions", conditions.line()))
    for key, c in constraints.items():
        items.append((f"constraint {key}", f"limit {c['limit']:g}, value "
                      + ("-" if c.get("value") is None else f"{c['value']:.4g}")
                      + (": held" if c["held"] else ": NOT HELD") + (f" ({c['source']})" if c.get("source") else "")))
    p = extra.get("predictor") or {}
    if p.get("median_error") is not None:
        items.append(("predictor", f"median error {p['median_error']:.0%} on {p['measured_candidates']} measured "
                      f"candidates, {p['within_10pct']:.0%} within 10%"))
    rows_html = "".join(f"<tr><th>{_e(k)}</th><td data-key='{_e(k)}'>{_e(v)}</td></tr>" for k, v in items)
    return f"<section id='summary'><h2>Summary</h2><table class='card'>{rows_html}</table></section>"


def decisions(plan: dict[str, Any]) -> str:
    parts = []
    pruning = plan.get("pruning") or {}
    if pruning.get("history"):
        rows = "".join(f"<tr><td>{_e(layer)}</td><td>{len(indices)}</td></tr>"
                       for layer, _, indices in pruning["history"])
        distill = pruning.get("distillation") or {}
        parts.append(f"<h3>Pruning: {pruning.get('ratio', 0):.0%} of the channels</h3>"
                     f"<table><tr><th>layer</th><th>output channels removed</th></tr>{rows}</table>"
                     + (f"<p>distilled from the original: {distill.get('epochs_run')} epochs, "
                        f"{_e(distill.get('stopped_because'))}</p>" if distill else ""))
    quantization = plan.get("quantization") or {}
    if quantization:
        floats = quantization.get("float_layers") or []
        listed = ", ".join(_e(f.get("name", f) if isinstance(f, dict) else f) for f in floats) or "none"
        parts.append(f"<h3>Quantization</h3><p>{_e(quantization.get('mode', plan.get('precision')))}; "
                     f"layers kept in float: {listed}</p>")
    if not parts:
        parts.append(f"<p>{_e(plan.get('format'))} {_e(plan.get('precision'))}: neither pruned nor quantized.</p>")
    return "<section id='decisions'><h2>Decisions</h2>" + "".join(parts) + "</section>"


def render_report(name: str, device: str, rows: list[dict[str, Any]], plan: dict[str, Any],
                  measured: dict[str, Any], constraints: dict[str, Any], extra: dict[str, Any]) -> str:
    ops_profile = measured.get("op_profile") or {}
    ops = ops_profile.get("ops") or []
    if ops:
        ops_html = ops_figure(ops)
    else:
        why = ops_profile.get("unavailable") or "not measured"
        ops_html = (f"<p class='note'>Per-op profile: unavailable ({_e(why)}). ONNX Runtime's profiler gives it "
                    "for .onnx candidates; for TFLite, TFLite's benchmark_model with --enable_op_profiling on the "
                    "board would.</p>")
    predicted = measured.get("latency_source") == "predicted"
    distribution = distribution_figure(rows)
    table_rows = "".join(
        f"<tr class='{'chosen' if r.get('chosen') else ''}'><td class='name'>{_e(r['label'])}</td>"
        f"<td>{r['size_mb']:.3f}</td><td>{_ms(r.get('latency_ms'))}</td>"
        f"<td>{_e(r.get('quality', ''))}</td><td>{'yes' if r.get('feasible') else 'no'}</td>"
        f"<td>{'unstable' if r.get('unstable') else 'measured' if r.get('measured') else 'predicted'}</td>"
        f"<td>{'*' if r.get('pareto') else ''}</td></tr>"
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
           f"{_e(measured.get('why', ''))}.</b></p>" if predicted else "")
        + summary_card(name, device, rows, plan, measured, constraints, extra)
        + "<section id='pareto'><h2>Candidates</h2>" + pareto_figure(rows) + "</section>"
        + ("<section id='distribution'><h2>Latency distribution</h2>" + distribution + "</section>"
           if distribution else "")
        + "<section id='ops'><h2>Per-op profile</h2>" + ops_html + "</section>"
        + decisions(plan)
        + "<section id='table'><h2>Every built candidate</h2><table><tr><th>candidate</th><th>size MB</th>"
        "<th>p50 ms</th><th>accuracy / fidelity</th><th>feasible</th><th>latency</th><th>Pareto</th></tr>"
        + table_rows + "</table></section></body></html>")
