"""The ``edgepack`` command: parse, call one function, print a table or ``--json``, exit.

Exit codes: 0 success, 2 a user error (one line on stderr, no traceback), 1 a bug in edgepack.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from edgepack import __version__, api
from edgepack.arguments import flag, flag_list, image_size
from edgepack.compress.distill import DISTILL_EPOCHS
from edgepack.errors import USER_ERROR_EXIT_CODE, EdgepackError
from edgepack.formats import FORMATS
from edgepack.progress import Progress


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


def _ssh_options(args: argparse.Namespace) -> Any:
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
    from edgepack.data import IMAGE_SUFFIXES
    from edgepack.package import check_package_target, package_name
    from edgepack.pipeline import BuildOptions
    from edgepack.records import default_cache_dir
    from edgepack.render import render_build
    from edgepack.search.space import PRUNE_RATIOS, Constraints

    api.folder_for_writing(args.output, "-o")  # before any work: -o and --cache are folders
    if args.cache:
        api.folder_for_writing(args.cache, "--cache")
    profile = _registry(args).get(args.device)
    handle = _handle(args)
    check_package_target(Path(args.output), package_name(handle.name, profile.name))
    calib, eval_data = _datasets(args, handle) if args.calib else (None, None)
    images = args.calib and Path(args.calib).is_dir() and any(
        p.suffix.lower() in IMAGE_SUFFIXES for p in Path(args.calib).iterdir())
    threads = _floats(args.threads, "--threads")
    options = BuildOptions(
        Constraints(args.max_size_mb, args.max_sram_kb / 1024 if args.max_sram_kb else args.max_ram_mb,
                    args.max_latency_ms, args.max_accuracy_drop),
        objective=args.objective, max_measurements=args.max_measurements,
        formats=args.formats.split(",") if args.formats else None,
        precisions=args.precisions.split(",") if args.precisions else None,
        threads=[int(t) for t in threads] if threads else None,
        prune_ratios=tuple(_floats(args.prune, "--prune") or PRUNE_RATIOS), runs=args.runs, warmup=args.warmup,
        timeout_s=args.timeout, output_dir=Path(args.output), distill_epochs=args.distill_epochs,
        cache_dir=Path(args.cache) if args.cache else default_cache_dir(),
        preprocessing=_preprocessing(args).to_dict() if images else None, check=_check(args),
        jobs=args.jobs or os.cpu_count() or 1, skip_device_check=args.skip_device_check)
    settings = {f: getattr(options, f) for f in options.__dataclass_fields__ if f not in ("constraints", "output_dir")}
    c = options.constraints
    try:
        result = api.build(handle, profile, calib, eval_data, ssh=_ssh_options(args), output=options.output_dir,
                           say=_say, max_size_mb=c.max_size_mb, max_ram_mb=c.max_ram_mb,
                           max_latency_ms=c.max_latency_ms, max_accuracy_drop=c.max_accuracy_drop, **settings)
    except api.NoFeasibleCandidate as nothing:
        _show(args, nothing.result, lambda r: render_build(r, all_rows=args.all))
        print(f"edgepack: error: {nothing}", file=sys.stderr)
        return USER_ERROR_EXIT_CODE
    _show(args, result, lambda r: render_build(r, all_rows=args.all))
    return 0


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


def _add_ssh_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", action="append", metavar="[USER@]HOST[:PORT]",
                        help="the board (repeat for a pool of boards of this profile); ~/.ssh/config applies")
    parser.add_argument("--known-hosts", metavar="FILE", help="default: ~/.ssh/known_hosts")
    parser.add_argument("--identity", metavar="FILE", help="private key (default: ssh config, agent, ~/.ssh/id_*)")
    parser.add_argument("--trust-new-host", action="store_true",
                        help="accept and save the key of a host not in known_hosts (a changed key is always refused)")
    parser.add_argument("--remote-python", metavar="PATH", help="the Python on the device (default: the profile's)")


def _add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--eval", metavar="PATH", help="held-out data; an .npz with x and y (labels) gives accuracy")
    _add_image_arguments(parser)


def _add_image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resize", metavar="HxW", type=image_size,
                        help="image data: resize to this (default: the model's input)")
    parser.add_argument("--mean", metavar="R,G,B", help="image data: subtract after scaling to [0, 1]")
    parser.add_argument("--std", metavar="R,G,B", help="image data: divide by after subtracting the mean")
    parser.add_argument("--channel-order", choices=["rgb", "bgr"], default="rgb")


def _add_check_arguments(parser: argparse.ArgumentParser, *, metric: bool = True, allow_drift: bool = True) -> None:
    parser.add_argument("--output-kind", metavar="NAME=KIND,...",
                        help="how to compare an output when its kind is not read right: scores (top-1), "
                             "sequence (argmax per position), map (thresholded IoU), values (relative error)")
    if metric:
        parser.add_argument("--metric", metavar="PKG.MOD:FUNCTION",
                            help="your task metric: gets (source outputs, artifact outputs, labels), each output "
                                 "a dict name -> samples; returns a score in [0, 1] (higher is better); its drop in "
                                 "points is what --max-accuracy-drop bounds")
    if allow_drift:
        parser.add_argument("--allow-drift", action="store_true",
                            help="write the result even when it fails its check against the source (said loudly)")


def _add_model_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", nargs="?", help="model file (.onnx .tflite .keras .h5 .pt .pt2) or "
                        "SavedModel directory")
    parser.add_argument("--torch-module", metavar="PKG.MOD:FACTORY",
                        help="an nn.Module built by calling this factory (needs --input-shape)")
    _add_input_arguments(parser)


def _add_input_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input-shape", metavar="SHAPE",
                        help="static input shape: 1,3,224,224 or name:1,3,224,224;other:1,10")
    parser.add_argument("--input-value", metavar="VALUES",
                        help="inputs that are not samples (a rank-0 sample rate, a recurrent state): "
                             "'sr=16000;state=zeros' (a number, zeros or a .npy file each) or an .npz by name")


class _Parser(argparse.ArgumentParser):
    """argparse's refusals as one line (``edgepack: error: ...``) and exit 2, like every user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(USER_ERROR_EXIT_CODE, f"edgepack: error: {message}; see '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--profile", action="append", metavar="FILE",
                        help="an extra device profile file (repeatable); its name is the file's stem")
    common.add_argument("--json", action="store_true", help="print JSON on stdout instead of a table")
    loudness = common.add_mutually_exclusive_group()
    loudness.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    loudness.add_argument("-v", "--verbose", action="store_true",
                          help="every progress line, plain (each distillation epoch too)")

    parser = _Parser(
        prog="edgepack",
        description="Package trained neural networks for small devices: convert, quantize, prune, "
                    "and measure on the board over SSH.")
    parser.add_argument("--version", action="version", version=f"edgepack {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    devices = commands.add_parser("devices", parents=[common], help="list device profiles, or show one")
    devices_commands = devices.add_subparsers(dest="devices_command", metavar="show")
    show = devices_commands.add_parser("show", parents=[common], help="show one device profile")
    show.add_argument("name", help="profile name, e.g. rpi4")
    devices.set_defaults(handler=cmd_devices)

    inspect = commands.add_parser(
        "inspect", parents=[common],
        help="parameters, MACs, ops, memory, device compatibility and a latency estimate")
    _add_model_arguments(inspect)
    inspect.add_argument("--device", metavar="NAME", help="check against this device profile")
    inspect.set_defaults(handler=cmd_inspect)

    convert = commands.add_parser(
        "convert", parents=[common],
        help="convert to ONNX, TFLite, SavedModel or PyTorch, verified against the source")
    _add_model_arguments(convert)
    convert.add_argument("--to", required=True, choices=[*FORMATS, "savedmodel", "torch"])
    convert.add_argument("-o", "--output", metavar="OUT", help="where to write (default: ./MODEL.EXT)")
    convert.add_argument("--calib", metavar="PATH",
                         help="samples (.npy/.npz, images, or a directory of them) in the source layout to verify "
                              "on; default: random inputs")
    _add_image_arguments(convert)
    convert.add_argument("--device", default="host", metavar="NAME",
                         help="profile whose route order and tolerances apply (default: host)")
    convert.add_argument("--tolerance", type=flag("tolerance"), metavar="REL",
                         help="largest max abs error allowed, as a fraction of each output's scale (default: the "
                              "profile's, scaled by sqrt(ops/50) for deeper graphs)")
    _add_check_arguments(convert, metric=False)
    convert.set_defaults(handler=cmd_convert)

    quantize = commands.add_parser(
        "quantize", parents=[common],
        help="int8/fp16/dynamic quantization calibrated on your data, checked with the real runtime")
    _add_model_arguments(quantize)
    quantize.add_argument("--calib", required=True, metavar="PATH",
                          help=".npy/.npz, a directory of them or of images, or pkg.mod:function")
    _add_data_arguments(quantize)
    quantize.add_argument("--mode", choices=["int8", "fp16", "dynamic"], default="int8")
    quantize.add_argument("--format", choices=FORMATS,
                          help="default: -o's suffix, else the device's first runtime")
    quantize.add_argument("--device", default="host", metavar="NAME")
    quantize.add_argument("--max-accuracy-drop", type=flag("max_accuracy_drop"), default=1.0, metavar="PTS",
                          help="percentage points of --metric, of accuracy (with labels) or of agreement with the "
                               "original: top-1, per-position argmax, thresholded-map IoU (default 1.0)")
    quantize.add_argument("--calibration", choices=["minmax", "entropy", "percentile"], default="minmax",
                          help="ONNX activation calibration method")
    quantize.add_argument("--io-dtype", choices=["float32", "int8", "uint8"],
                          help="TFLite int8 input/output type (default: what the device takes)")
    quantize.add_argument("--tolerance", type=flag("tolerance"), metavar="REL",
                          help="value outputs (boxes, landmarks, regressions): largest max abs error per channel, "
                               "a fraction of the channel's scale (default 0.1)")
    _add_check_arguments(quantize)
    quantize.add_argument("-o", "--output", metavar="OUT")
    quantize.set_defaults(handler=cmd_quantize)

    prune = commands.add_parser(
        "prune", parents=[common],
        help="structured pruning to a size budget, then distillation from the original model")
    _add_model_arguments(prune)
    prune.add_argument("--calib", required=True, metavar="PATH", help="samples to prune and distill on")
    _add_data_arguments(prune)
    budget = prune.add_mutually_exclusive_group()
    budget.add_argument("--max-size-mb", type=flag("max_size_mb"), metavar="X",
                        help="size of the final file (MB = 10^6 bytes)")
    budget.add_argument("--ratio", type=flag("ratio"), metavar="R", help="fraction of channels to remove, e.g. 0.5")
    prune.add_argument("--device", default="host", metavar="NAME", help="its memory budget applies without "
                       "--max-size-mb/--ratio")
    prune.add_argument("--format", choices=FORMATS, help="default: -o's suffix, else onnx")
    prune.add_argument("--precision", choices=["fp32", "int8"], default="fp32")
    prune.add_argument("--importance", choices=["magnitude", "taylor"], default="magnitude")
    prune.add_argument("--distill-epochs", type=flag("distill_epochs"), default=DISTILL_EPOCHS, metavar="N",
                       help=f"at most (default {DISTILL_EPOCHS}; stops early when the held-out loss stalls)")
    prune.add_argument("--round-to", type=flag("round_to"), default=8, metavar="N",
                       help="keep channel counts multiples of N, so kernels stay on their fast path (1: exact)")
    prune.add_argument("--time-budget", type=flag("time_budget_s"), default=300.0, metavar="S", help="for distillation")
    prune.add_argument("-o", "--output", metavar="OUT")
    prune.set_defaults(handler=cmd_prune)

    profile = commands.add_parser(
        "profile", parents=[common],
        help="measure latency and memory on the board over SSH (or on this machine with --device host)")
    profile.add_argument("model", help=".onnx or .tflite file")
    _add_input_arguments(profile)
    profile.add_argument("--device", default="host", metavar="NAME")
    _add_ssh_arguments(profile)
    profile.add_argument("--runs", type=flag("runs"), metavar="N", help="timed runs (default: the profile's)")
    profile.add_argument("--warmup", type=flag("warmup"), metavar="N",
                         help="untimed runs first (default: the profile's)")
    profile.add_argument("--threads", type=flag("threads"), metavar="T",
                         help="runtime threads (default: the profile's)")
    profile.add_argument("--timeout", type=flag("timeout_s"), default=300.0, metavar="S",
                         help="per measurement (default 300)")
    profile.set_defaults(handler=cmd_profile)

    build = commands.add_parser(
        "build", parents=[common],
        help="search formats, precisions, pruning and threads, measuring on the board; write a package")
    _add_model_arguments(build)
    build.add_argument("--device", required=True, metavar="NAME", help="device profile (host: this machine)")
    _add_ssh_arguments(build)
    build.add_argument("--calib", metavar="PATH", help="your samples (.npy/.npz, a directory, images, "
                       "pkg.mod:function): calibrate int8, distil pruned models, hold some out to check accuracy")
    _add_data_arguments(build)
    build.add_argument("--max-size-mb", type=flag("max_size_mb"), metavar="X",
                       help="model file size (default: the profile's memory budget)")
    build.add_argument("--max-ram-mb", type=flag("max_ram_mb"), metavar="X",
                       help="peak resident memory measured on the device")
    build.add_argument("--max-sram-kb", type=flag("max_sram_kb"), metavar="X",
                       help="microcontrollers: the arena plus the firmware's SRAM (default: the profile's SRAM)")
    build.add_argument("--max-latency-ms", type=flag("max_latency_ms"), metavar="X",
                       help="p50 latency measured on the device")
    build.add_argument("--max-accuracy-drop", type=flag("max_accuracy_drop"), default=1.0, metavar="PTS",
                       help="against the original on held-out data, in points (default 1.0)")
    build.add_argument("--tolerance", type=flag("tolerance"), metavar="REL",
                       help="value outputs (boxes, landmarks, regressions): largest max abs error per channel of a "
                            "compressed candidate, a fraction of the channel's scale (default 0.1)")
    _add_check_arguments(build, allow_drift=False)
    build.add_argument("--objective", choices=["latency", "size"], default="latency",
                       help="what to minimise among the feasible (default: p50 latency)")
    build.add_argument("--max-measurements", type=flag("max_measurements"), default=12, metavar="N",
                       help="measurements on the device at most (default 12)")
    build.add_argument("--formats", metavar="F,...", help="search only these formats (onnx, tflite)")
    build.add_argument("--precisions", metavar="P,...", help="search only these (fp32, fp16, int8, dynamic)")
    build.add_argument("--prune", metavar="R,...", type=flag_list("prune_ratios"),
                       help="pruning ratios to try (default 0,0.3,0.5,0.7)")
    build.add_argument("--threads", metavar="T,...", type=flag_list("threads"),
                       help="thread counts to try (default 1, 2, 4, ... cores)")
    build.add_argument("--distill-epochs", type=flag("distill_epochs"), default=DISTILL_EPOCHS, metavar="N",
                       help=f"at most (default {DISTILL_EPOCHS}; stops early when the held-out loss stalls)")
    build.add_argument("--runs", type=flag("runs"), metavar="N",
                       help="timed runs per measurement (default: the profile's)")
    build.add_argument("--warmup", type=flag("warmup"), metavar="N", help="untimed runs first (default: the profile's)")
    build.add_argument("--timeout", type=flag("timeout_s"), default=300.0, metavar="S",
                       help="per measurement (default 300)")
    build.add_argument("-o", "--output", default="dist", metavar="DIR", help="where the package goes (default dist)")
    build.add_argument("--cache", metavar="DIR", help="records and built artifacts (default ~/.cache/edgepack)")
    build.add_argument("--jobs", type=flag("jobs"), metavar="N",
                       help="artifacts built side by side, in worker processes (default: this machine's cores)")
    build.add_argument("--all", action="store_true", help="list every candidate in the table (default: the "
                       "measured and the nearest contenders; the others grouped by why they were left)")
    build.add_argument("--skip-device-check", action="store_true",
                       help="package even when the held-out samples cannot be run on the board (the manifest "
                            "says it was skipped)")
    build.set_defaults(handler=cmd_build)

    report = commands.add_parser("report", help="the path of a package's report.html, or --open it")
    report.add_argument("package", help="the directory edgepack build wrote")
    report.add_argument("--open", action="store_true", help="open it in the web browser")
    report.set_defaults(handler=cmd_report)

    deploy = commands.add_parser(
        "deploy", parents=[common],
        help="upload a package, verify it on the board, smoke-test it, switch 'current' atomically")
    deploy.add_argument("package", help="the directory or .tar.gz that edgepack build wrote")
    deploy.add_argument("--device", required=True, metavar="NAME")
    _add_ssh_arguments(deploy)
    deploy.add_argument("--remote-dir", default="edgepack", metavar="DIR",
                        help="on the device, relative to the home directory (default: edgepack)")
    deploy.add_argument("--timeout", type=flag("timeout_s"), default=120.0, metavar="S", help="for the smoke test")
    deploy.set_defaults(handler=cmd_deploy)
    return parser



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
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
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
