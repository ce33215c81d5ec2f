"""The ``edgepack`` command's flags: one argparse parser, its subcommands and the flags they share.

Numbers are checked while parsing (edgepack.arguments: a bad value is one line and exit 2 before any
work); ``args.command`` names the subcommand, which edgepack.cli runs.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

from edgepack import __version__
from edgepack.arguments import flag, flag_list, image_size
from edgepack.compress.distill import DISTILL_EPOCHS
from edgepack.errors import USER_ERROR_EXIT_CODE
from edgepack.formats import FORMATS


def _add_ssh_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", action="append", metavar="[USER@]HOST[:PORT]",
                        help="the board (repeat for a pool of boards of this profile); ~/.ssh/config applies")
    parser.add_argument("--known-hosts", metavar="FILE", help="default: ~/.ssh/known_hosts")
    parser.add_argument("--identity", metavar="FILE", help="private key (default: ssh config, agent, ~/.ssh/id_*)")
    parser.add_argument("--trust-new-host", action="store_true",
                        help="accept and save the key of a host not in known_hosts (a changed key is always refused)")
    parser.add_argument("--remote-python", metavar="PATH", help="the Python on the device (default: the profile's)")


def _add_measurement_arguments(parser: argparse.ArgumentParser) -> None:
    """How each measurement on a board runs (profile, build)."""
    parser.add_argument("--runs", type=flag("runs"), metavar="N",
                        help="timed runs per measurement, every one of them (default: the profile's count at "
                             "most, stopping once the median is known to +-2%%)")
    parser.add_argument("--warmup", type=flag("warmup"), metavar="N",
                        help="untimed runs first (default: the profile's)")
    parser.add_argument("--timeout", type=flag("timeout_s"), default=300.0, metavar="S",
                        help="per measurement (default 300)")


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
    """The ``edgepack`` parser: ``args.command`` is the subcommand (``args.devices_command``: ``show``)."""
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

    inspect = commands.add_parser(
        "inspect", parents=[common],
        help="parameters, MACs, ops, memory, device compatibility and a latency estimate")
    _add_model_arguments(inspect)
    inspect.add_argument("--device", metavar="NAME", help="check against this device profile")

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

    profile = commands.add_parser(
        "profile", parents=[common],
        help="measure latency and memory on the board over SSH (or on this machine with --device host)")
    profile.add_argument("model", help=".onnx or .tflite file")
    _add_input_arguments(profile)
    profile.add_argument("--device", default="host", metavar="NAME")
    _add_ssh_arguments(profile)
    _add_measurement_arguments(profile)
    profile.add_argument("--threads", type=flag("threads"), metavar="T",
                         help="runtime threads (default: the profile's)")

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
    build.add_argument("--budget-minutes", type=flag("budget_minutes"), metavar="N",
                       help="board time the search may spend, in minutes (measuring stops when it is spent)")
    build.add_argument("--exhaustive", action="store_true",
                       help="measure every candidate that passes the fidelity gate: the exhaustive answer, to check "
                            "the search's choice or when board time is cheap (ignores --max-measurements)")
    build.add_argument("--formats", metavar="F,...", help="search only these formats (onnx, tflite)")
    build.add_argument("--precisions", metavar="P,...", help="search only these (fp32, fp16, int8, dynamic)")
    build.add_argument("--prune", metavar="R,...", type=flag_list("prune_ratios"),
                       help="pruning ratios to try (default 0,0.3,0.5,0.7)")
    build.add_argument("--threads", metavar="T,...", type=flag_list("threads"),
                       help="thread counts to try (default 1, 2, 4, ... cores)")
    build.add_argument("--distill-epochs", type=flag("distill_epochs"), default=DISTILL_EPOCHS, metavar="N",
                       help=f"at most (default {DISTILL_EPOCHS}; stops early when the held-out loss stalls)")
    _add_measurement_arguments(build)
    build.add_argument("-o", "--output", default="dist", metavar="DIR", help="where the package goes (default dist)")
    build.add_argument("--cache", metavar="DIR", help="records and built artifacts (default ~/.cache/edgepack)")
    build.add_argument("--jobs", type=flag("jobs"), metavar="N",
                       help="artifacts built side by side, in worker processes (default: this machine's cores)")
    build.add_argument("--all", action="store_true", help="list every candidate in the table (default: the "
                       "measured and the nearest contenders; the others grouped by why they were left)")
    build.add_argument("--skip-device-check", action="store_true",
                       help="package even when the held-out samples cannot be run on the board (the manifest "
                            "says it was skipped)")

    report = commands.add_parser("report", help="the path of a package's report.html, or --open it")
    report.add_argument("package", help="the directory edgepack build wrote")
    report.add_argument("--open", action="store_true", help="open it in the web browser")

    deploy = commands.add_parser(
        "deploy", parents=[common],
        help="upload a package, verify it on the board, smoke-test it, switch 'current' atomically")
    deploy.add_argument("package", help="the directory or .tar.gz that edgepack build wrote")
    deploy.add_argument("--device", required=True, metavar="NAME")
    _add_ssh_arguments(deploy)
    deploy.add_argument("--remote-dir", default="edgepack", metavar="DIR",
                        help="on the device, relative to the home directory (default: edgepack)")
    deploy.add_argument("--timeout", type=flag("timeout_s"), default=120.0, metavar="S", help="for the smoke test")
    return parser
