"""The ``edgepack`` command: parse, call one function, print a table or ``--json``, exit.

Exit codes: 0 success, 2 a user error (one line on stderr, no traceback), 1 a bug in edgepack.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepack import api
from edgepack.arguments import folder_for_writing
from edgepack.cli_arguments import build_parser
from edgepack.errors import USER_ERROR_EXIT_CODE, EdgepackError
from edgepack.progress import Progress

if TYPE_CHECKING:
    from edgepack.runners.factory import SshOptions
    from edgepack.search.options import BuildOptions

__all__ = ["build_parser", "main"]


def _emit_json(data: Any) -> None:
    from edgepack.strict_json import dump

    dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


_progress = Progress()


def _show(args: argparse.Namespace, result: Any, render: Callable[[Any], str]) -> None:
    """``--json``: the result's dict on stdout; otherwise its table."""
    _progress.done()
    if args.json:
        _emit_json(result.to_dict())
    else:
        print(render(result))


def _say(line: str) -> None:
    """Progress on stderr, so that stdout stays the table or the JSON (edgepack.progress)."""
    _progress(line)


def _handle(args: argparse.Namespace) -> Any:
    from edgepack.model import load_model

    return load_model(args.model, torch_module=args.torch_module, input_shape=args.input_shape,
                      input_value=args.input_value)


def _datasets(args: argparse.Namespace, handle: Any) -> tuple[Any, Any]:
    """``--calib`` and ``--eval`` (None when not given), read with the image preprocessing flags."""
    from edgepack.data import load_dataset

    prep = _preprocessing(args)
    calib = load_dataset(args.calib, handle.inputs, purpose="calibration", preprocessing=prep)
    eval_data = load_dataset(args.eval, handle.inputs, purpose="evaluation", preprocessing=prep) if args.eval else None
    return calib, eval_data


def _registry(args: argparse.Namespace) -> Any:
    from edgepack.profiles import ProfileRegistry

    return ProfileRegistry.discover([Path(p) for p in args.profile or []])


def cmd_devices(args: argparse.Namespace) -> int:
    from edgepack.render import render_device, render_devices

    registry = _registry(args)
    if args.devices_command == "show":
        profile = registry.get(args.name)
        if args.json:
            _emit_json(profile.to_dict())
        else:
            print(render_device(profile))
        return 0
    if args.json:
        _emit_json([p.summary() for p in registry.all()])
    else:
        print(render_devices(registry.all()))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    from edgepack.render import render_inspection

    device = _registry(args).get(args.device) if args.device else None
    _show(args, api.inspect(_handle(args), device), render_inspection)
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from edgepack.data import load_dataset
    from edgepack.render import render_conversion

    profile = _registry(args).get(args.device)
    handle = _handle(args)
    data = load_dataset(args.calib, handle.inputs, purpose="calibration",
                        preprocessing=_preprocessing(args)) if args.calib else None
    result = api.convert(handle, args.to, args.output, device=profile, calib=data, tolerance=args.tolerance,
                         kinds=_kinds(args), allow_drift=args.allow_drift)
    _show(args, result, render_conversion)
    _warn_drift(result.artifact.notes)
    return 0


def _kinds(args: argparse.Namespace) -> dict[str, str]:
    from edgepack.fidelity import parse_output_kinds

    return parse_output_kinds(args.output_kind)


def _check(args: argparse.Namespace) -> Any:
    """--output-kind, --metric, --tolerance (value outputs) and --allow-drift as the quantize check."""
    from edgepack.compress.quantize import Check
    from edgepack.convert.validate import Gate, check_tolerance, load_metric

    gate = Gate(max_drop_pts=args.max_accuracy_drop)
    if args.tolerance is not None:
        gate = Gate(args.max_accuracy_drop, check_tolerance(args.tolerance, "0.05"))
    return Check(gate, _kinds(args), load_metric(args.metric), getattr(args, "allow_drift", False))


def _warn_drift(notes: list[str]) -> None:
    for note in notes:
        if "--allow-drift" in note:
            print(f"edgepack: WARNING: {note}", file=sys.stderr)


def _preprocessing(args: argparse.Namespace) -> Any:
    from edgepack.data import ImagePreprocessing

    def floats(text: str | None, default: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(float(v) for v in text.split(",")) if text else default

    size = tuple(int(v) for v in args.resize.lower().split("x")) if args.resize else None
    try:
        return ImagePreprocessing(floats(args.mean, (0.0, 0.0, 0.0)), floats(args.std, (1.0, 1.0, 1.0)),
                                  args.channel_order, size)  # type: ignore[arg-type]
    except ValueError:
        from edgepack.errors import UsageError

        raise UsageError("--mean/--std take numbers like 0.485,0.456,0.406", "fix the flag") from None


def cmd_quantize(args: argparse.Namespace) -> int:
    from edgepack.compress.quantize import default_format
    from edgepack.render import render_quantization

    profile = _registry(args).get(args.device)
    handle = _handle(args)
    fmt = _format(args, default_format(profile))
    calib, eval_data = _datasets(args, handle)
    result = api.quantize(handle, calib, args.mode, args.output, format=fmt, device=profile, eval=eval_data,
                          max_accuracy_drop=args.max_accuracy_drop, calibration=args.calibration,
                          io_dtype=args.io_dtype, check=_check(args))
    _show(args, result, render_quantization)
    _warn_drift(result.notes)
    return 0


def _format(args: argparse.Namespace, default: str) -> str:
    """--format, else what -o's suffix says (-o model.tflite), else ``default``; a contradiction is refused."""
    from edgepack.formats import ArtifactFormat

    suffix = str(ArtifactFormat.of_path(args.output) or "") if args.output else ""
    if args.format and suffix and args.format != suffix:
        from edgepack.errors import UsageError

        raise UsageError(f"--format {args.format} but -o {args.output} is a .{suffix} file",
                         "drop --format, or name the output after it")
    return args.format or suffix or default


def cmd_prune(args: argparse.Namespace) -> int:
    from edgepack.render import render_pruning

    profile = _registry(args).get(args.device)
    handle = _handle(args)
    fmt = _format(args, "onnx")
    calib, eval_data = _datasets(args, handle)
    result = api.prune(handle, calib, ratio=args.ratio, max_size_mb=args.max_size_mb, output=args.output,
                       format=fmt, device=profile, eval=eval_data, precision=args.precision,
                       distill_epochs=args.distill_epochs, importance=args.importance, time_budget_s=args.time_budget,
                       round_to=args.round_to if args.round_to > 1 else None, say=_say)
    _show(args, result, render_pruning)
    return 0


def _ssh_options(args: argparse.Namespace) -> SshOptions:
    from edgepack.runners.factory import SshOptions

    return SshOptions(tuple(args.host or ()), Path(args.known_hosts) if args.known_hosts else None,
                      Path(args.identity) if args.identity else None, args.trust_new_host, args.remote_python)


def cmd_profile(args: argparse.Namespace) -> int:
    from edgepack.render import render_profile

    profile = _registry(args).get(args.device)
    report = api.profile(Path(args.model), profile, ssh=_ssh_options(args), runs=args.runs, warmup=args.warmup,
                         threads=args.threads, timeout_s=args.timeout, say=_say, input_shape=args.input_shape,
                         input_value=args.input_value)
    _show(args, report, render_profile)
    failed = [m for m in report.measurements if m.error]
    if failed and all(m.error_kind == "out_of_memory" for m in failed):  # the model's size: the user's to fix
        print(f"edgepack: error: {args.model} is too large for the memory of {', '.join(m.device for m in failed)}"
              f" ({failed[0].error})", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    for m in failed:
        print(f"edgepack: {m.device}: {m.error}", file=sys.stderr)
    return 1 if failed else 0


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        from edgepack.errors import UsageError

        raise UsageError(f"{flag} takes numbers separated by commas, not '{text}'", f"e.g. {flag} 0,0.3,0.5") from None


def cmd_build(args: argparse.Namespace) -> int:
    from edgepack.package import check_package_target, package_name
    from edgepack.render import render_build

    folder_for_writing(args.output, "-o")  # before any work: -o and --cache are folders
    if args.cache:
        folder_for_writing(args.cache, "--cache")
    profile = _registry(args).get(args.device)
    handle = _handle(args)
    check_package_target(Path(args.output), package_name(handle.name, profile.name))  # before reading the data
    calib, eval_data = _datasets(args, handle) if args.calib else (None, None)
    try:
        result = api.build(handle, profile, calib, eval_data, options=_build_options(args), ssh=_ssh_options(args),
                           say=_say)
    except api.NoFeasibleCandidate as nothing:
        _show(args, nothing.result, lambda r: render_build(r, all_rows=args.all))
        print(f"edgepack: error: {nothing}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    _show(args, result, lambda r: render_build(r, all_rows=args.all))
    return 0


def _build_options(args: argparse.Namespace) -> BuildOptions:
    """The build flags as one BuildOptions (``--max-sram-kb`` is ``max_ram_mb``)."""
    from edgepack.data import IMAGE_SUFFIXES
    from edgepack.search.options import BuildOptions
    from edgepack.search.space import PRUNE_RATIOS, Constraints

    images = args.calib and Path(args.calib).is_dir() and any(
        p.suffix.lower() in IMAGE_SUFFIXES for p in Path(args.calib).iterdir())
    threads = _floats(args.threads, "--threads")
    return BuildOptions(
        Constraints(args.max_size_mb, args.max_sram_kb / 1024 if args.max_sram_kb else args.max_ram_mb,
                    args.max_latency_ms, args.max_accuracy_drop),
        objective=args.objective, max_measurements=args.max_measurements, budget_minutes=args.budget_minutes,
        exhaustive=args.exhaustive,
        formats=tuple(args.formats.split(",")) if args.formats else None,
        precisions=tuple(args.precisions.split(",")) if args.precisions else None,
        threads=tuple(int(t) for t in threads) if threads else None,
        prune_ratios=tuple(_floats(args.prune, "--prune") or PRUNE_RATIOS), runs=args.runs, warmup=args.warmup,
        timeout_s=args.timeout, output_dir=Path(args.output), cache_dir=Path(args.cache) if args.cache else None,
        distill_epochs=args.distill_epochs, preprocessing=_preprocessing(args).to_dict() if images else None,
        check=_check(args), jobs=args.jobs or os.cpu_count() or 1, skip_device_check=args.skip_device_check)


def cmd_report(args: argparse.Namespace) -> int:
    """The path of a package's report.html (opened in the browser with --open)."""
    from edgepack.package import package_report

    path = package_report(Path(args.package))
    print(path)
    if args.open:
        import webbrowser

        webbrowser.open(path.as_uri())
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    from edgepack.deploy import deploy_package

    profile = _registry(args).get(args.device)
    deployments = deploy_package(Path(args.package), profile, _ssh_options(args), args.remote_dir, args.timeout,
                                 say=_say)
    if args.json:
        _emit_json([d.to_dict() for d in deployments])
        return 0
    for d in deployments:
        top = (d.smoke_test.get("top") or [{}])[0]
        smoke = f"top class {top['class']} (score {top['score']:.3g})" if top else d.smoke_test.get("skipped", "")
        print(f"{d.host}: {d.files_verified} files verified by sha256 on the device; run.py sample.npy: {smoke}")
        print(f"{d.host}: {d.current} -> {d.path}" + (f" (previous: {d.previous})" if d.previous else ""))
    return 0


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "devices": cmd_devices, "inspect": cmd_inspect, "convert": cmd_convert, "quantize": cmd_quantize,
    "prune": cmd_prune, "profile": cmd_profile, "build": cmd_build, "report": cmd_report, "deploy": cmd_deploy}


def main(argv: Sequence[str] | None = None) -> int:
    """SIGINT/SIGTERM: workers ended, temporary folders removed, one line, 130/143 (edgepack.interrupts)."""
    from edgepack import interrupts

    try:
        with interrupts.Session():
            return _run(argv)
    except KeyboardInterrupt as stop:
        _progress.done()
        print(f"edgepack: {interrupts.line(stop)}", file=sys.stderr)
        return interrupts.exit_code(stop)


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    handler = HANDLERS[args.command]
    global _progress
    _progress = Progress(0 if getattr(args, "quiet", False) else 2 if getattr(args, "verbose", False) else 1)
    _progress.export()
    try:
        return handler(args)
    except EdgepackError as error:
        from edgepack import interrupts

        if interrupts.received() is not None:  # the signal's doing (a runtime turned it into its own error)
            raise interrupts.Interrupted(interrupts.received() or 0) from None
        _progress.done()
        print(f"edgepack: error: {error}", file=sys.stderr)
        return getattr(error, "exit_code", USER_ERROR_EXIT_CODE)  # 1: the board's fault (errors.BoardFault)
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
