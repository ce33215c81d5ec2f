"""The command line: tables, --json on stdout only, and one-line errors with exit code 2.

No traceback at its boundaries: flags out of range are refused while parsing, -o and --cache that are
files are refused before any work, an input too large for memory is one line, and so is a port that does
not speak SSH.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edgepack.cli import build_parser
from edgepack.profiles import BUILTIN_DIR

EXAMPLE = Path(__file__).resolve().parents[2] / "edgepack" / "examples" / "digits_cnn.onnx"


def assert_user_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("edgepack: error: ")
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]


def test_devices_table_and_json(cli):
    code, out, _ = cli("devices")
    assert code == 0
    for name in ("rpi4", "rpi5", "rpi-zero-2w", "android-gpu", "coral-edgetpu", "host"):
        assert name in out
    code, out, err = cli("devices", "--json")
    assert code == 0 and err == ""
    names = {d["name"] for d in json.loads(out)}
    assert {"rpi4", "coral-edgetpu", "host"} <= names


def test_devices_show(cli):
    code, out, _ = cli("devices", "show", "coral-edgetpu")
    assert code == 0 and "requires int8" in out and "coral.ai" in out
    code, out, _ = cli("devices", "show", "rpi4", "--json")
    data = json.loads(out)
    assert data["class"] == "cpu" and data["roofline"]["fp32_gflops"] == 96.0
    assert data["ssh"]["user"] == "pi" and data["benchmark"]["threads"] == 4


def test_unknown_device_is_a_one_line_error(cli):
    assert_user_error(*cli("devices", "show", "rpi44"), "unknown device 'rpi44'",
                      "did you mean 'rpi4'")
    assert_user_error(*cli("inspect", str(EXAMPLE), "--device", "corall-edgetpu"),
                      "did you mean 'coral-edgetpu'")


def test_invalid_profile_is_a_one_line_error(cli, tmp_path: Path):
    bad = tmp_path / "board.toml"
    bad.write_text((BUILTIN_DIR / "rpi4.toml").read_text().replace("cores = 4", "cores = 4\ncorez = 1"))
    assert_user_error(*cli("devices", "--profile", str(bad)), str(bad), "corez", "unknown key")


def test_inspect_example_json(cli):
    code, out, err = cli("inspect", str(EXAMPLE), "--device", "rpi4", "--json")
    assert code == 0 and err == ""
    data = json.loads(out)
    assert data["macs"] == 370_944 and data["params"] == 71_754
    assert data["model"]["inputs"][0] == {"name": "image", "shape": [1, 1, 8, 8], "dtype": "float32",
                                          "layout": "NCHW"}
    assert data["compatibility"]["compatible"] is True
    assert data["latency_estimate"]["kind"].startswith("estimate")
    assert sum(layer["macs"] for layer in data["layers"]) == data["macs"]
    assert data["op_histogram"]["Conv"] == 2


def test_inspect_table_labels_the_estimate(cli):
    code, out, _ = cli("inspect", str(EXAMPLE), "--device", "coral-edgetpu")
    assert code == 0
    assert "ESTIMATE" in out and "not measured" in out
    assert "runs only int8" in out


def test_missing_and_unknown_files(cli, tmp_path: Path):
    assert_user_error(*cli("inspect", str(tmp_path / "nope.onnx")), "nope.onnx",
                      "no such file")
    other = tmp_path / "model.bin"
    other.write_bytes(b"\x00" * 10)
    assert_user_error(*cli("inspect", str(other)), "unknown model format '.bin'")
    assert_user_error(*cli("inspect"), "no model given")


def test_truncated_and_corrupt_models(cli, tmp_path: Path, digits_onnx: Path):
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(digits_onnx.read_bytes()[: digits_onnx.stat().st_size // 3])
    assert_user_error(*cli("inspect", str(truncated)), "truncated.onnx", "not a", "ONNX")
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(b"this is not a flatbuffer" * 10)
    assert_user_error(*cli("inspect", str(garbage)), "garbage.tflite", "TFLite")
    keras_file = tmp_path / "broken.keras"
    keras_file.write_bytes(b"PK\x03\x04 not really a zip")
    assert_user_error(*cli("inspect", str(keras_file)), "broken.keras", "Keras")
    torchscript = tmp_path / "weights.pt"
    torchscript.write_bytes(b"\x80\x02pickle")
    assert_user_error(*cli("inspect", str(torchscript)), "weights.pt", "TorchScript")


def test_bad_input_shape(cli):
    assert_user_error(*cli("inspect", str(EXAMPLE), "--input-shape", "1,a,8"),
                      "not a list of integers")
    assert_user_error(*cli("inspect", str(EXAMPLE), "--input-shape", "1,3,8,8"),
                      "contradicts the model's fixed shape")
    assert_user_error(*cli("inspect", "--torch-module", "edgepack.examples.digits:digits_cnn"),
                      "--input-shape")
    assert_user_error(*cli("inspect", "--torch-module", "edgepack.examples.digits:nothing",
                           "--input-shape", "1,1,8,8"), "no callable 'nothing'")


def test_console_script_exit_code_and_stderr(tmp_path: Path):
    script = Path(sys.executable).parent / "edgepack"
    proc = subprocess.run([str(script), "inspect", str(tmp_path / "missing.onnx"), "--json"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "missing.onnx" in proc.stderr


def test_devices_and_inspect_fit_in_100_columns(cli):
    for argv in (["devices"], ["inspect", str(EXAMPLE), "--device", "coral-edgetpu"],
                 ["inspect", str(EXAMPLE), "--device", "android-gpu"]):
        code, out, _ = cli(*argv)
        assert code == 0 and max(len(line) for line in out.splitlines()) <= 100, argv


# -- flags out of range are refused while parsing ------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["profile", "m.onnx", "--runs", "-5"],
    ["profile", "m.onnx", "--runs", "0"],  # was taken as "the profile's default" (50)
    ["profile", "m.onnx", "--timeout", "-1"],
    ["profile", "m.onnx", "--warmup", "-1"],
    ["profile", "m.onnx", "--threads", "0"],
    ["profile", "m.onnx", "--runs", "2.5"],
    ["build", "m.onnx", "--device", "host", "--jobs", "0"],
    ["build", "m.onnx", "--device", "host", "--distill-epochs", "-1"],
    ["build", "m.onnx", "--device", "host", "--max-measurements", "0"],
    ["build", "m.onnx", "--device", "host", "--prune", "0,1"],
    ["build", "m.onnx", "--device", "host", "--prune", "0,-0.3"],
    ["build", "m.onnx", "--device", "host", "--threads", "1,0"],
    ["build", "m.onnx", "--device", "host", "--threads", "1.5"],
    ["build", "m.onnx", "--device", "host", "--max-size-mb", "0"],
    ["build", "m.onnx", "--device", "host", "--max-ram-mb", "-1"],
    ["build", "m.onnx", "--device", "host", "--max-sram-kb", "0"],
    ["build", "m.onnx", "--device", "host", "--max-latency-ms", "nan"],
    ["build", "m.onnx", "--device", "host", "--max-accuracy-drop", "-1"],
    ["build", "m.onnx", "--device", "host", "--tolerance", "0"],
    ["build", "m.onnx", "--device", "host", "--timeout", "0"],
    ["build", "m.onnx", "--device", "host", "--runs", "0"],
    ["build", "m.onnx", "--device", "host", "--warmup", "-2"],
    ["prune", "m.onnx", "--calib", "c.npy", "--ratio", "1"],
    ["prune", "m.onnx", "--calib", "c.npy", "--ratio", "-0.1"],
    ["prune", "m.onnx", "--calib", "c.npy", "--max-size-mb", "-3"],
    ["prune", "m.onnx", "--calib", "c.npy", "--round-to", "0"],
    ["prune", "m.onnx", "--calib", "c.npy", "--time-budget", "0"],
    ["prune", "m.onnx", "--calib", "c.npy", "--distill-epochs", "-1"],
    ["quantize", "m.onnx", "--calib", "c.npy", "--max-accuracy-drop", "inf"],
    ["quantize", "m.onnx", "--calib", "c.npy", "--tolerance", "-0.1"],
    ["convert", "m.onnx", "--to", "onnx", "--tolerance", "0"],
    ["convert", "m.onnx", "--to", "onnx", "--resize", "0x224"],
    ["deploy", "pkg", "--device", "rpi4", "--timeout", "0"],
])
def test_numeric_flags_out_of_range_are_refused_while_parsing(cli, one_line_error, argv):
    """Refused before anything is read (the model path does not even exist): one line naming the flag."""
    flag = next(a for a in argv if a.startswith("--") and a not in ("--device", "--calib", "--to"))
    line = one_line_error(cli(*argv), f"argument {flag}: must be", f"'{argv[argv.index(flag) + 1]}'")
    assert "--help" in line


def test_edge_values_are_accepted_as_given_not_rewritten():
    args = build_parser().parse_args(["build", "m.onnx", "--device", "host", "--prune", "0,0.3", "--warmup", "0",
                                      "--distill-epochs", "0", "--runs", "1", "--threads", "1,2", "--jobs", "1"])
    assert (args.prune, args.warmup, args.distill_epochs, args.runs, args.threads, args.jobs) == \
        ("0,0.3", 0, 0, 1, "1,2", 1)
    args = build_parser().parse_args(["profile", "m.onnx", "--runs", "3", "--timeout", "0.5", "--threads", "2"])
    assert (args.runs, args.timeout, args.threads) == (3, 0.5, 2)
    args = build_parser().parse_args(["prune", "m.onnx", "--calib", "c.npy", "--ratio", "0"])
    assert args.ratio == 0.0


def test_a_bad_flag_is_one_line_from_the_installed_command(tmp_path: Path):
    """The console script: no usage block, one line, exit 2."""
    done = subprocess.run([str(Path(sys.executable).parent / "edgepack"), "profile", "m.onnx", "--runs", "0"],
                          capture_output=True, text=True)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == ["edgepack: error: argument --runs: must be a whole number of at least 1, "
                                        "not '0'; see 'edgepack profile --help'"]


# -- -o, --cache and --input-shape are checked before any work -----------------------------------------------

def test_build_output_that_is_a_file_is_refused_before_any_work(cli, one_line_error, digits_onnx: Path,
                                                                tmp_path: Path):
    existing = tmp_path / "existing.onnx"
    shutil.copyfile(digits_onnx, existing)
    before = existing.read_bytes()
    np.save(tmp_path / "calib.npy", np.zeros((40, 1, 8, 8), np.float32))
    start = time.perf_counter()
    one_line_error(cli("build", digits_onnx, "--device", "host", "--calib", tmp_path / "calib.npy",
                       "--cache", tmp_path / "cache", "-o", existing), f"-o {existing} is a file, not a folder")
    assert time.perf_counter() - start < 5
    one_line_error(cli("build", digits_onnx, "--device", "host", "--cache", tmp_path / "cache",
                       "-o", existing / "dist"), f"would be made inside {existing}, which is a file")
    one_line_error(cli("build", digits_onnx, "--device", "host", "--cache", existing,
                       "-o", tmp_path / "dist"), f"--cache {existing} is a file")
    assert existing.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["calib.npy", "existing.onnx"]


@pytest.fixture()
def dynamic_onnx(tmp_path: Path) -> Path:
    """A Relu over an input of dynamic height and width: its size is --input-shape's."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "dyn",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "dyn.onnx"
    onnx.save(model, str(path))
    return path


def test_an_input_shape_larger_than_memory_is_refused(cli, one_line_error, dynamic_onnx: Path):
    for command in ("profile", "inspect"):
        one_line_error(cli(command, dynamic_onnx, "--input-shape", "x:1,3,300000,300000"),
                       "--input-shape 1,3,300000,300000 for 'x' is 1,080.0 GB per sample",
                       "more than this machine's memory")
    code, out, err = cli("profile", dynamic_onnx, "--input-shape", "x:1,3,8,8", "--runs", "3",
                         "--warmup", "1", "--json")
    assert code == 0, err
    assert json.loads(out)["latency_ms"]["p50"] > 0


# -- one line from the installed command, no library noise ---------------------------------------------------

@pytest.fixture()
def not_ssh_port():
    """A loopback port that answers like a web server, not like sshd."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    stop = threading.Event()

    def answer() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def edgepack(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgepack.cli", *map(str, argv)], capture_output=True, text=True,
                          timeout=300)


def test_a_port_that_is_not_ssh_and_a_bad_pt2_are_one_line(tmp_path: Path, digits_onnx: Path, not_ssh_port: int):
    done = edgepack("profile", digits_onnx, "--device", "rpi4", "--host", f"pi@127.0.0.1:{not_ssh_port}",
                    "--known-hosts", tmp_path / "kh")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "cannot connect" in done.stderr and "Traceback" not in done.stderr
    (tmp_path / "bad.pt2").write_bytes(b"PK\x03\x04 not a zip at all" * 10)
    done = edgepack("inspect", tmp_path / "bad.pt2")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "is not a readable ExportedProgram" in done.stderr
