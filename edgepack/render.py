"""Plain-text tables and figures for the terminal (``--json`` bypasses all of this)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from edgepack.compress.pruning import PruneResult
from edgepack.compress.quantize import QuantizeResult
from edgepack.convert.convert import ConversionResult
from edgepack.inspection import Inspection
from edgepack.latency import LatencySource
from edgepack.profiles import DeviceProfile
from edgepack.profiling import ProfileReport
from edgepack.runners.base import EMULATED, ToolchainFigures
from edgepack.runners.conditions import Conditions
from edgepack.search.candidate import Status
from edgepack.search.result import BuildResult, CandidateRow
from edgepack.text import printable

WIDTH = 100  # columns the listings keep within (devices, inspect)


def fit(lines: list[str], width: int = WIDTH) -> str:
    """Lines longer than ``width`` wrapped at spaces, continued under their value ("  label      value");
    table rows (no room to wrap) are cut."""
    import textwrap

    out = []
    for line in lines:
        if len(line) <= width:
            out.append(line)
            continue
        label = re.match(r"^(\s+\S+(?: \S+)?\s{2,})\S", line)
        indent = " " * (len(label.group(1)) if label else len(line) - len(line.lstrip()) + 4)
        wrapped = textwrap.wrap(line, width, subsequent_indent=indent, break_on_hyphens=False,
                                drop_whitespace=True, initial_indent="")
        lead = len(line) - len(line.lstrip())
        out += [(" " * lead + wrapped[0].lstrip()) if wrapped else line, *wrapped[1:]]
    return "\n".join(out)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], align: str = "", width: int | None = None) -> str:
    """A left/right-aligned text table; ``align`` is one of 'l'/'r' per column (default: left);
    ``width``: the last column is cut (…) so that every line fits."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    if width is not None:
        room = max(8, width - sum(widths[:-1]) - 2 * (len(widths) - 1))
        cells = [[*row[:-1], row[-1] if len(row[-1]) <= room else row[-1][:room - 1] + "…"] for row in cells]
        widths[-1] = min(widths[-1], room)
    align = align or "l" * len(headers)

    def line(row: list[str]) -> str:
        parts = [c.rjust(w) if a == "r" else c.ljust(w) for c, w, a in zip(row, widths, align, strict=True)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_count(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def render_devices(profiles: list[DeviceProfile]) -> str:
    rows = [(p.name, p.device_class, p.architecture, p.cores, f"{p.ram_mb:g}", f"{p.memory_budget_mb:g}",
             ",".join(p.runtimes), p.description) for p in profiles]
    return table(["name", "class", "arch", "cores", "RAM MB", "budget MB", "runtimes", "description"], rows,
                 "lllrrrll", width=WIDTH) + "\n(edgepack devices show NAME: all of one profile)"


def render_device(p: DeviceProfile) -> str:
    roof = p.roofline
    ops = p.ops
    lines = [
        f"{p.name}: {p.description}",
        f"  file            {p.path}",
        f"  class           {p.device_class} ({p.architecture}, {p.cores} cores @ {p.clock_ghz:g} GHz)",
        f"  memory          {p.ram_mb:.0f} MB RAM, model budget {p.memory_budget_mb:g} MB"
        + (f", on-chip {p.on_chip_memory_mb:g} MB" if p.on_chip_memory_mb else ""),
        f"  runtimes        {', '.join(p.runtimes)} (in order of preference)",
        f"  precisions      {', '.join(p.precisions.supported)}"
        + (f"; requires {', '.join(p.precisions.required)}" if p.precisions.required else "")
        + f"; I/O {', '.join(p.precisions.io_dtypes)}",
    ]
    for fmt, listed in (("tflite", ops.tflite), ("onnx", ops.onnx)):
        if listed is not None:
            text = "all builtin ops" if listed == "all" else f"{len(listed)} ops: {', '.join(listed)}"
            lines.append(f"  {fmt + ' ops':<15} {text}")
    lines += [
        f"  ops source      {ops.source}",
        f"  ssh defaults    {p.ssh.user}@<host>:{p.ssh.port}, python '{p.ssh.python}'",
        f"  benchmark       {p.benchmark.warmup} warmup, {p.benchmark.runs} runs, {p.benchmark.threads} "
        "threads",
        f"  roofline        fp32 {roof.fp32_gflops:g} GFLOP/s"
        + (f", fp16 {roof.fp16_gflops:g} GFLOP/s" if roof.fp16_gflops else "")
        + f", int8 {roof.int8_gops:g} GOP/s, memory {roof.memory_gbps:g} GB/s",
        f"  roofline source {roof.source}",
    ]
    if p.microcontroller is not None:
        m = p.microcontroller
        lines[4:4] = [f"  microcontroller {m.cpu}: flash {m.flash_kb:g} KB, SRAM {m.sram_kb:g} KB"
                      + (f", PSRAM {m.psram_kb:g} KB" if m.psram_kb else "")
                      + f"; firmware takes {m.runtime_flash_kb:g} KB flash, {m.runtime_sram_kb:g} KB SRAM",
                      f"  kernels         {m.kernels}; latency estimate {m.cycles_per_mac:g} cycles per MAC",
                      f"  mcu source      {m.source}"]
        lines = [ln for ln in lines if not ln.startswith(("  ssh defaults", "  benchmark"))]
    if p.vela is not None:
        v = p.vela
        lines.append(f"  compiler        Arm Vela for {v.accelerator}, {v.memory_mode}"
                     + (f", arena cache {v.arena_cache_size_kb:g} KB" if v.arena_cache_size_kb else "")
                     + (f"; delegate {v.delegate} on the board" if v.delegate else ""))
        lines.append(f"  vela source     {v.source}")
    if p.gpu_check:
        lines.append("  GPU check       TFLite's GPU compatibility analyzer, when it works here (else the op list)")
    return "\n".join(lines)


def render_inspection(result: Inspection, top_layers: int = 15) -> str:
    m, s = result.model, result.summary
    lines = [f"{m.source}", f"  format          {m.format.value}" + (
        f" (analysed as {result.analysed_as})" if result.analysed_as != m.format.value else ""),
        f"  sha256          {m.sha256}",
        f"  file size       {human_bytes(m.size_bytes)} ({m.size_bytes} bytes)"]
    for kind, specs in (("input", m.inputs), ("output", m.outputs)):
        for t in specs:
            lines.append(f"  {kind:<15} {t.name}: {list(t.shape)} {t.dtype} {t.layout}")
    lines += [
        f"  parameters      {s.params:,} ({human_count(s.params)}), weights {human_bytes(s.weight_bytes)}",
        f"  MACs            {s.macs:,} ({human_count(s.macs)}) per inference",
        f"  precision       {s.precision_text}",
        f"  activations     peak {human_bytes(s.peak_activation_bytes)} (estimate: live tensors, no reuse)",
        "  ops             " + ", ".join(f"{op} x{n}" for op, n in s.op_histogram.items()),
    ]
    lines += [f"  note            {n}" for n in [*m.notes, *s.notes]]
    heavy = sorted(s.layers, key=lambda layer: layer.macs, reverse=True)[:top_layers]
    heavy = [layer for layer in heavy if layer.macs or layer.params]
    if heavy:
        total = max(s.macs, 1)
        rows = [(layer.name[:48], layer.op, f"{layer.macs:,}", f"{100 * layer.macs / total:.1f}%",
                 f"{layer.params:,}", human_bytes(layer.output_bytes)) for layer in heavy]
        lines += ["", f"Layers by MACs (top {len(rows)} of {len(s.layers)}):",
                  table(["layer", "op", "MACs", "share", "params", "output"], rows, "llrrrr")]
    if result.device is not None and result.compatibility is not None and result.estimate is not None:
        c, e = result.compatibility, result.estimate
        lines += ["", f"On {result.device.name} ({result.device.description}):",
                  f"  runtime checked {c.runtime}", f"  checked by      {c.checked_by}",
                  "  op support      " + ("all ops supported" if not c.issues else
                                         f"{len(c.issues)} op type(s) with issues")]
        lines += [f"    {i.status:<11} {i.op} x{i.count}: {i.reason}" for i in c.issues]
        lines += [f"  note            {note}" for note in c.precision_notes]
        lines += toolchain_lines(result.toolchain)
        budget_bytes = result.device.memory_budget_mb * 1024 * 1024
        need = s.weight_bytes + s.peak_activation_bytes
        lines.append(f"  memory          weights + peak activations {human_bytes(need)}; budget "
                     f"{result.device.memory_budget_mb:g} MB"
                     + (" (OVER BUDGET)" if need > budget_bytes else ""))
        lines.append(f"  latency         ~{e.latency_ms:.3f} ms ESTIMATE (roofline lower bound at "
                     f"{e.assumed_precision} {e.peak_gops:g} GOP/s, {e.memory_gbps:g} GB/s; "
                     f"{e.compute_bound_layers} compute-bound, {e.memory_bound_layers} memory-bound "
                     "layers) - not measured; run 'edgepack profile' to measure")
    return fit(lines)


def toolchain_lines(found: dict[str, Any]) -> list[str]:
    lines = []
    vela = found.get("vela") or {}
    if "per_op" in vela:
        lines.append(f"  Vela placement  {vela['npu_ops']} of {vela['ops']} ops on the {vela['accelerator']} NPU "
                     f"({vela['compiler']}; compiler estimate: NPU {vela['inference_ms']:.3f} ms, SRAM "
                     f"{vela['sram_kb']:.1f} KB, flash {vela['flash_kb']:.1f} KB)")
        lines += [f"    {op['target']:<4} {op['op']:<18} {op['name'][:60]}" for op in vela["per_op"]]
    elif vela:
        lines.append(f"  Vela            not run: {vela.get('not_run') or vela.get('error')}")
    for key, label in (("gpu_analyzer", "GPU analyzer"), ("edgetpu_compiler", "Edge TPU")):
        entry = found.get(key) or {}
        if entry:
            lines.append(f"  {label:<15} {entry.get('not_used') or entry.get('not_run')}")
    return lines


def render_conversion(result: ConversionResult) -> str:
    a, r = result.artifact, result.report
    rows = []
    for attempt in result.attempts:
        rep = attempt.report
        if rep is None:
            rows.append((attempt.route, "failed", "", "", "", "", attempt.error or ""))
            continue
        worst = max(rep.outputs, key=lambda o: o.max_abs_error_rel)
        agreements = [o for o in rep.outputs if o.agreement is not None]
        agree = ", ".join(f"{o.agreement:.0%}" for o in agreements)
        verdict = ("chosen" if attempt.route == a.route else "ok") if rep.passed else "drift"
        rows.append((attempt.route, verdict, f"{worst.max_abs_error:.3g}", f"{worst.max_abs_error_rel:.3g}",
                     f"{worst.cosine:.6f}", agree, rep.first_failure or f"{attempt.seconds:.1f} s"))
    kinds = ", ".join(f"{o.name}: {o.kind}" for o in r.outputs)
    lines = [f"Routes to {a.format} (verified on {r.samples} {r.data} samples, source layout; outputs {kinds}):",
             table(["route", "result", "max abs err", "rel. to scale", "cosine", "agreement", "note"], rows,
                   "llrrrrl"),
             "",
             f"wrote {a.path} ({human_bytes(a.size_bytes)}) via {a.route}",
             f"  metadata        {a.metadata_path}",
             f"  sha256          {a.sha256}"]
    for b in a.inputs:
        change = f" (transposed from {b.source_layout} by {list(b.perm)})" if b.perm else ""
        lines.append(f"  input           {b.name}: {list(b.shape)} {b.dtype} {b.layout}{change}")
    for b in a.outputs:
        change = f" (source layout {b.source_layout})" if b.perm else ""
        lines.append(f"  output          {b.name}: {list(b.shape)} {b.dtype} {b.layout}{change}")
    lines += [f"  note            {n}" for n in a.notes]
    return "\n".join(lines)


def render_quantization(result: QuantizeResult) -> str:
    a, f = result.artifact, result.fidelity
    worst = max(f.outputs, key=lambda o: o.max_abs_error_rel)

    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    rows = [("size", human_bytes(result.fp32_size_bytes), human_bytes(a.size_bytes),
             f"{a.size_bytes / result.fp32_size_bytes:.2f}x" if result.fp32_size_bytes else "")]
    if f.source_accuracy is not None:
        drop = "" if result.accuracy_drop_pts is None else f"{-result.accuracy_drop_pts:+.2f} pts"
        rows.append(("accuracy", pct(f.source_accuracy), pct(f.accuracy), drop))
    if f.metric is not None:
        drop = f"{-100 * (f.metric['source'] - f.metric['artifact']):+.2f} pts"
        rows.append((f"--metric {f.metric['name']}", f"{f.metric['source']:.4g}", f"{f.metric['artifact']:.4g}", drop))
    for o in f.outputs:
        figure = f"{o.describe()} (cosine {o.cosine:.4f})"
        rows.append((f"output {o.name} ({o.kind})", "", figure,
                     "" if o.loss_pts is None else f"{-o.loss_pts:+.2f} pts"))
    rows.append(("max abs error", "", f"{worst.max_abs_error:.4g}", f"{worst.max_abs_error_rel:.3g} of scale"))
    io = ", ".join(f"{b.name} {b.dtype}" + (f" (scale {b.scale:.6g}, zero point {b.zero_point})" if b.scale else "")
                   for b in a.inputs)
    lines = [f"{a.route}: measured with the real runtime on {f.samples} held-out samples "
             f"(calibrated on {result.calibration_samples})",
             table(["", "fp32", result.mode, "change"], rows, "lrrr"), "",
             f"wrote {a.path}", f"  metadata        {a.metadata_path}", f"  inputs          {io}"]
    if result.float_layers:
        lines.append(f"  kept in float   {len(result.float_layers)} layer(s), most sensitive first:")
        lines += [f"    {fl.name} (" + ("" if fl.sensitivity is None else f"sensitivity {fl.sensitivity:.3g}, ")
                  + f"+{human_bytes(fl.size_cost_bytes)})"
                  for fl in result.float_layers]
    else:
        lines.append("  kept in float   none")
    lines += [f"  note            {n}" for n in result.notes]
    return "\n".join(lines)


def render_profile(report: ProfileReport) -> str:
    lines = []
    for m in report.measurements:
        where = "this machine (local runner: measured here, not on a board)" if m.device == "local" else m.device
        lines.append(f"{m.request.model.name} on {report.device.name}, {where}")
        if m.error:
            lines.append(f"  FAILED: {m.error}")
            continue
        r, lat = m.result, m.latency_ms
        if r.emulated:
            lines.append(f"  {EMULATED.upper()}: an arm64 userland under qemu on this machine's CPU times the "
                         "emulator; outputs and 'does it run' are the board's, the milliseconds are not")
        lines.append(table(["runtime", "threads", "runs", "load ms", "p50 ms", "p90 ms", "p99 ms", "mean ms",
                            "min ms", "max ms", "peak RSS"],
                           [(f"{r.runtime} {r.runtime_version}", r.threads, len(r.runs_ms), f"{r.load_ms or 0:.2f}",
                             f"{lat['p50']:.3f}", f"{lat['p90']:.3f}", f"{lat['p99']:.3f}", f"{lat['mean']:.3f}",
                             f"{lat['min']:.3f}", f"{lat['max']:.3f}", f"{r.peak_rss_mb or 0:.1f} MB")],
                           "lrrrrrrrrrr"))
        conditions = Conditions.of(r)
        if conditions is not None:
            lines.append(f"  conditions: {printable(conditions.line(), 200)}")
        if r.unstable:
            lines.append(f"  UNSTABLE after {r.attempts} attempt(s): "
                         + printable("; ".join(r.unstable), 300))
        env = r.device
        lines.append(f"  device: {env.uname}; CPU {env.cpu_model} x{env.cpu_count}; "
                     f"governor {env.cpu_governor or 'n/a'}; temperature "
                     f"{str(env.temperature_c) + ' C' if env.temperature_c is not None else 'n/a'}; "
                     f"Python {env.python}")
        ops = r.op_profile
        if ops is not None and ops.ops:
            lines.append("  most expensive ops (per inference" + (", emulated" if r.emulated else "") + "):")
            lines.append(table(["op", "type", "ms"], [(o.name[:50], o.type, f"{o.ms:.4f}") for o in ops.ops[:10]],
                               "llr"))
        elif ops is not None and ops.unavailable:
            lines.append(f"  per-op profile: unavailable ({ops.unavailable})")
    return "\n".join(lines)


def render_pruning(result: PruneResult) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{100 * v:.2f}%"

    rows = [(s.name, f"{s.params:,}", f"{s.macs:,}", human_bytes(s.size_bytes),
             "-" if s.latency_ms is None else f"{s.latency_ms:.4f}", pct(s.accuracy), s.vs_original or pct(s.agreement))
            for s in result.stages]
    a = result.artifact
    lines = [f"Pruned {result.ratio:.1%} of the channels" + (
        f" to fit {human_bytes(result.budget_bytes)}" if result.budget_bytes else ""),
        table(["stage", "params", "MACs", "ONNX size", "p50 ms (local)", "accuracy", "vs original (worst output)"],
              rows, "lrrrrrr"),
        "", f"wrote {a.path} ({human_bytes(a.size_bytes)}, {a.format}, {a.precision})",
        f"  metadata        {a.metadata_path}",
        f"  history         {a.path.parent / (a.path.name + '.pruning.json')} (replay it on the original)"]
    if result.distill_report:
        r = result.distill_report
        lines.append(f"  distillation    {r.epochs_run} epochs, {r.seconds:.1f} s; {r.stopped_because}")
    lines += [f"  note            {n}" for n in result.notes]
    lines.append("  latency         measured on this machine by the local runner, not on a board")
    return "\n".join(lines)


MEASURED = (Status.MEASURED, Status.ESTIMATED, Status.UNSTABLE)  # a candidate with a latency of its own
CONTENDERS = 2  # unmeasured feasible candidates shown, nearest first (the rest are counted)
MEASURED_SHOWN = 8  # the chosen, the Pareto front, then the fastest
RANK = {Status.MEASURED: 0, Status.ESTIMATED: 0, Status.UNSTABLE: 0, Status.PREDICTED: 1, Status.SKIPPED: 2,
        Status.FAILED: 3, Status.NOT_BUILT: 4}


def grouped_rows(rows: list[CandidateRow]) -> tuple[list[CandidateRow], list[str]]:
    """The rows worth a line (the chosen, the Pareto front and the fastest of the measured, the nearest
    unmeasured contenders) and one line per group of the others: measured but slower and off the front,
    blocked for the same reason, failed alike, or never built nor measured."""
    measured = [r for r in rows if r.chosen or r.status in MEASURED]
    first = sorted(measured, key=lambda r: (not r.chosen, not r.pareto, r.latency_ms or 0.0))
    keep = {id(r) for r in first[:MEASURED_SHOWN]}
    shown = [r for r in measured if id(r) in keep]
    slower = [r for r in measured if id(r) not in keep]
    rest = [r for r in rows if r not in measured]
    open_ = [r for r in rest if not r.blocked_by and r.status is not Status.FAILED]
    shown += open_[:CONTENDERS]
    groups: dict[str, list[CandidateRow]] = {}
    for r in rest:
        if r in shown:
            continue
        reason = r.blocked_by[0] if r.blocked_by else f"failed: {r.error}" if r.status is Status.FAILED \
            else "not built nor measured: the search chose before reaching them"
        groups.setdefault(reason, []).append(r)
    lines = [f"{len(g)} candidate{'s' if len(g) > 1 else ''}: {reason if len(reason) <= 90 else reason[:89] + '…'}"
             for reason, g in sorted(groups.items(), key=lambda kv: -len(kv[1]))]
    if slower:
        lines.insert(0, f"{len(slower)} more measured, slower and off the Pareto front: "
                        + ", ".join(r.label for r in slower[:3]) + (", …" if len(slower) > 3 else ""))
    return shown, lines


def _cells(r: CandidateRow) -> list[str]:
    def ms(value: float | None, predicted: float | None = None) -> str:
        return f"{value:.3f}" if value is not None else f"~{predicted:.3f}" if predicted is not None else "-"

    return [("> " if r.chosen else "  ") + r.label, "-" if r.size_mb is None else f"{r.size_mb:.3f}",
            ms(r.latency_ms, r.predicted_ms), ms(r.p90_ms),
            "-" if r.accuracy_drop is None else f"{r.accuracy_drop:.2f}",
            "yes" if r.feasible else ("no: " + "; ".join(r.blocked_by) if r.blocked_by else "-"),
            str(r.status) if not r.error else f"failed: {r.error[:60]}", "*" if r.pareto else ""]


def render_build(result: BuildResult, all_rows: bool = False) -> str:
    """The candidate table (the chosen, the measured fastest first, the nearest contenders; ``all_rows``:
    every one), the others grouped by why they were left, then what was chosen and why, or what blocks."""
    every = sorted(result.rows, key=lambda r: (not r.chosen, RANK[r.status], r.latency_ms or r.predicted_ms or 0.0))
    rows, groups = (every, []) if all_rows else grouped_rows(every)
    lines = [table(["candidate", "size MB", "p50 ms", "p90 ms", "acc. drop", "feasible", "status", "Pareto"],
                   [_cells(r) for r in rows], "lrrrrlll"),
             *[f"  + {g}" for g in groups],
             f"(~: predicted, not measured; acc. drop: points against the original on held-out data; Pareto: "
             f"size, p50, acc. drop; measured on {result.where}"
             + ("" if all_rows else "; --all: every candidate") + ")"]
    m, p = result.counts, result.predictor_score
    lines.append(f"measurements: {sum(m.new.values())} new, {sum(m.recorded.values())} from the records "
                 f"({sum(r.status in MEASURED for r in every)} of {len(every)} candidates measured)")
    if p.median_error is not None and p.within_10pct is not None:
        lines.append(f"predictor: median error {p.median_error:.0%} on the {len(p.errors)} measured "
                     f"candidates (each predicted before it was measured); {p.within_10pct:.0%} within 10%")
    if result.board_time is not None and result.board_time.measured:
        lines.append(result.board_time.sentence)
    if result.stages:
        from edgepack.stages import totals

        spent = totals(result.stages).items()
        lines.append("time: " + ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in spent))
    lines += [f"finding: {f}" for f in result.findings] + [f"note: {n}" for n in result.notes]
    c = result.chosen
    if c is None:
        lines.append(no_feasible_message(result.rows))
        return "\n".join(lines)
    speed = f"p50 ~{c.predicted_ms or 0.0:.3f} ms predicted (the board is emulated: not measured)" \
        if c.latency_ms is None else f"p50 {c.latency_ms:.3f} ms" + (
            "" if c.latency_source is LatencySource.MEASURED else f" ({c.latency_label})") + (
            f" (UNSTABLE: {printable('; '.join(c.unstable), 120)})" if c.unstable else "")
    lines.append(f"chosen: {c.label}: {speed}, {c.size_mb or 0.0:.3f} MB"
                 + ("" if c.accuracy_drop is None else f", accuracy drop {c.accuracy_drop:.2f} pts"))
    if c.toolchain:
        lines.append(microcontroller_line(c.toolchain))
    check = result.device_accuracy
    if check is not None and check.error:
        lines.append(f"accuracy check on the device failed: {check.error}")
    elif check is not None and check.ran:
        figure = (f"accuracy {check.accuracy:.2%} (original {check.source_accuracy or 0.0:.2%})"
                  if check.accuracy is not None else "against the original: " + "; ".join(
                      f"{name} {o.figure}" for name, o in check.outputs.items()))
        where = "this machine" if result.where.startswith("local") else \
            "TFLite Micro on this machine" if c.toolchain and c.toolchain.arena_bytes else "the device"
        lines.append(f"checked on {where}: {figure} on {check.samples} held-out samples, run by its own runtime")
    lines.append(f"package: {result.package}")
    return "\n".join(lines)


def microcontroller_line(t: ToolchainFigures) -> str:
    line = (f"microcontroller: TFLM arena {t.arena_bytes / 1024:.1f} KB (measured by TFLite Micro), "
            f"SRAM {t.sram_kb:.1f} KB with the firmware's, flash {t.flash_kb:.1f} KB with the firmware")
    vela = t.vela
    if vela:  # Vela's own report (edgepack.toolchains.vela.VelaReport.to_dict)
        cpu = ", ".join(sorted({o["op"] for o in vela["cpu_ops"]})) or "none"
        line += (f"; {vela['compiler']} for {vela['accelerator']}: {vela['npu_ops']} of {vela['ops']} ops on the NPU "
                 f"(on the CPU: {cpu}), NPU {vela['inference_ms']:.3f} ms, SRAM {vela['sram_kb']:.1f} KB "
                 "(compiler estimates)")
    return line


def no_feasible_message(rows: Sequence[CandidateRow]) -> str:
    """Why nothing was chosen, from a build's rows. When no candidate was built and left by a constraint, the
    failures are the cause and come first (a conversion that failed is never hidden behind "no candidate
    meets ...")."""
    failed = [r for r in rows if r.status is Status.FAILED and r.error]
    reasons = list(dict.fromkeys(r.error for r in failed if r.error))
    # built and measurable, then ruled out by a constraint (not by its own failure)
    blocked = [r for r in rows if r.blocked_by and r.size_mb is not None and r.status is not Status.FAILED]
    if failed and not blocked:
        skipped = list(dict.fromkeys("; ".join(r.blocked_by) for r in rows if r.status is Status.SKIPPED))
        return (f"every candidate failed ({len(failed)} failed): " + " | ".join(reasons[:3])
                + (f"; {len(skipped)} left unbuilt: " + " | ".join(skipped[:2]) if skipped else ""))
    near = sorted((r for r in rows if r.blocked_by),
                  key=lambda r: (r.size_mb is None, len(r.blocked_by), r.latency_ms or r.predicted_ms or 0.0))[:3]
    text = "no candidate meets the constraints"
    if near:
        text += "; nearest: " + " | ".join(f"{r.label} ({'; '.join(r.blocked_by)})" for r in near)
    if failed:
        text += f"; {len(failed)} failed: " + " | ".join(reasons[:2])
    return text
