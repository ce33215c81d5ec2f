"""SIGINT and SIGTERM leave nothing behind: the real ``edgepack`` command (.venv/bin/edgepack) in a process
group of its own, with TMPDIR a fresh folder, signalled while its converters and workers run.

Each test asserts the exit code (130/143), one line on stderr and no traceback, that every process of
the command's tree (seen just before the signal, by pid and start time: onnx2tf's subprocess, its
onnxsim, the --jobs workers) and of its process group is gone, and that TMPDIR is left empty.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from edgepack import interrupts
from edgepack.examples.digits import load_digits_data

EDGEPACK = Path(sys.executable).parent / "edgepack"
DIGITS = Path(interrupts.__file__).parent / "examples" / "digits_cnn.onnx"
LINES = {signal.SIGINT: "edgepack: interrupted (SIGINT)", signal.SIGTERM: "edgepack: terminated (SIGTERM)"}


@pytest.fixture(scope="module")
def calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("signals") / "calib.npy"
    np.save(path, load_digits_data().x_train[:48].astype(np.float32))
    return path


@pytest.fixture()
def tmpdir_env(tmp_path: Path) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder


def _command(tmp: Path) -> dict[str, str]:
    return dict(os.environ, TMPDIR=str(tmp), PYTHONDONTWRITEBYTECODE="1")


def start(argv: list[str], tmp: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(argv, env=_command(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_for(proc: subprocess.Popen[str], found: Callable[[], bool], timeout_s: float = 45.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not found():
        assert proc.poll() is None, f"edgepack ended ({proc.returncode}) first: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "the stage to interrupt never came"
        time.sleep(0.1)


def running(proc: subprocess.Popen[str], fragment: str, below_a_worker: bool = False) -> Callable[[], bool]:
    """A process of the command's tree whose command line holds ``fragment`` (and, when asked, whose
    parent is not edgepack itself: the child of a worker)."""
    def found() -> bool:
        table = interrupts._process_table()
        return any(fragment in cmdline(pid) and (not below_a_worker or table.get(pid, (0,))[0] != proc.pid)
                   for pid, _ in interrupts.descendants(proc.pid))
    return found


def stop(proc: subprocess.Popen[str], signum: int, tmp: Path, *, tree_at_least: int = 1) -> str:
    """Send ``signum``; check the exit, the one line, the processes and TMPDIR; return stderr."""
    tree = interrupts.descendants(proc.pid)
    assert len(tree) >= tree_at_least, [cmdline(pid) for pid, _ in tree]
    proc.send_signal(signum)
    try:
        _, err = proc.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    assert proc.returncode == 128 + signum, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.splitlines() == [LINES[signum]], err
    deadline = time.monotonic() + 5  # multiprocessing's resource tracker ends when it sees edgepack gone
    while (interrupts._alive(tree) or interrupts.group_members(proc.pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [cmdline(pid) for pid, _ in interrupts._alive(tree) + interrupts.group_members(proc.pid)]
    assert left == [], left
    assert sorted(os.listdir(tmp)) == [], "temporary files left"
    return err


def test_sigterm_during_convert_ends_onnx2tf_and_its_children(tmpdir_env: Path, tmp_path: Path) -> None:
    proc = start([str(EDGEPACK), "convert", str(DIGITS), "--to", "tflite", "-o", str(tmp_path / "d.tflite"), "-q"],
                 tmpdir_env)
    wait_for(proc, running(proc, "_onnx2tf_worker"))
    time.sleep(2)  # onnx2tf is importing TensorFlow, or converting
    stop(proc, signal.SIGTERM, tmpdir_env)
    assert not (tmp_path / "d.tflite").exists()


def test_sigint_during_quantize_while_onnx2tf_runs(tmpdir_env: Path, tmp_path: Path, calib: Path) -> None:
    proc = start([str(EDGEPACK), "quantize", str(DIGITS), "--format", "tflite", "--calib", str(calib),
                  "-o", str(tmp_path / "q.tflite"), "-q"], tmpdir_env)
    wait_for(proc, running(proc, "_onnx2tf_worker"))
    time.sleep(1)
    stop(proc, signal.SIGINT, tmpdir_env)


def test_sigterm_during_prune(tmpdir_env: Path, tmp_path: Path, calib: Path) -> None:
    """Pruning runs torch in edgepack's own process: the signal unwinds it there."""
    proc = start([str(EDGEPACK), "prune", str(DIGITS), "--calib", str(calib), "--ratio", "0.5",
                  "--distill-epochs", "0", "-o", str(tmp_path / "p.onnx"), "-q"], tmpdir_env)
    wait_for(proc, lambda: bool(list(tmpdir_env.glob("edgepack-*/edgepack-prune-*"))))
    time.sleep(1)
    stop(proc, signal.SIGTERM, tmpdir_env, tree_at_least=0)
    assert not (tmp_path / "p.onnx").exists()


def test_sigint_during_build_ends_its_worker_processes(tmpdir_env: Path, tmp_path: Path, calib: Path) -> None:
    """--jobs 2: the pruning probe builds two artifacts in two worker processes."""
    proc = start([str(EDGEPACK), "build", str(DIGITS), "--device", "host", "--calib", str(calib), "--jobs", "2",
                  "--formats", "onnx", "--prune", "0.25,0.5", "--distill-epochs", "0", "--runs", "3",
                  "--warmup", "1", "--cache", str(tmp_path / "cache"), "-o", str(tmp_path / "pkg"), "-q"],
                 tmpdir_env)
    workers = running(proc, "multiprocessing.spawn")
    wait_for(proc, workers, timeout_s=50)
    time.sleep(3)  # the workers are importing torch, or pruning
    stop(proc, signal.SIGINT, tmpdir_env, tree_at_least=2)
    assert not (tmp_path / "pkg").exists()


@pytest.mark.parametrize("delay_s", [None, 0.5])
def test_sigint_in_the_first_second_is_one_line(tmpdir_env: Path, tmp_path: Path, delay_s: float | None) -> None:
    """None: the moment the entry point has its handlers (SIGTERM caught, read from /proc), before the CLI's
    imports; 0.5: while numpy and the CLI are imported or the model is read."""
    proc = start([str(EDGEPACK), "convert", str(DIGITS), "--to", "tflite", "-o", str(tmp_path / "d.tflite")],
                 tmpdir_env)
    if delay_s is None:
        def caught() -> bool:
            status = Path(f"/proc/{proc.pid}/status").read_text()
            mask = int(next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
            return bool(mask & (1 << (signal.SIGTERM - 1)))
        wait_for(proc, caught, timeout_s=10)
    else:
        time.sleep(delay_s)
    stop(proc, signal.SIGINT, tmpdir_env, tree_at_least=0)


WORKERS_SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path

    from edgepack import interrupts
    from edgepack.compress.builder import ArtifactBuilder
    from edgepack.compress.quantize import Check
    from edgepack.data import load_dataset
    from edgepack.model import load_model
    from edgepack.profiles import ProfileRegistry
    from edgepack.search.space import CompressionPlan

    model, calib_path, cache = sys.argv[1:4]
    try:
        with interrupts.Session():
            handle = load_model(model)
            calib = load_dataset(calib_path, handle.inputs)
            builder = ArtifactBuilder(handle, ProfileRegistry.discover().get("host"), calib, calib, Path(cache),
                                      calibrated=True, max_accuracy_drop=1.0, distill_epochs=0, check=Check(), jobs=2,
                                      say=print)
            try:
                builder.build([CompressionPlan("tflite", "fp32"), CompressionPlan("tflite", "fp16")])
            finally:
                builder.close()
    except KeyboardInterrupt as stop:
        print(f"edgepack: {interrupts.line(stop)}", file=sys.stderr)
        sys.exit(interrupts.exit_code(stop))
""")


def test_sigterm_ends_a_worker_and_the_onnx2tf_it_started(tmpdir_env: Path, tmp_path: Path, calib: Path) -> None:
    """ArtifactBuilder's workers (spawned) building TFLite: onnx2tf runs as a worker's child."""
    proc = start([sys.executable, "-c", WORKERS_SCRIPT, str(DIGITS), str(calib), str(tmp_path / "cache")],
                 tmpdir_env)
    wait_for(proc, running(proc, "_onnx2tf_worker", below_a_worker=True), timeout_s=50)
    time.sleep(1)
    stop(proc, signal.SIGTERM, tmpdir_env, tree_at_least=3)


STUCK_SCRIPT = textwrap.dedent("""
    import ctypes
    import subprocess
    import sys

    from edgepack import interrupts

    interrupts.DEADLINE_S = 2.0
    with interrupts.Session() as root:
        (root / "scratch").write_text("made inside")
        subprocess.Popen(["sleep", "120"])
        print("ready", flush=True)
        # native code that a signal does not interrupt, the GIL released: Python's handler never gets to run
        libc, mutex = ctypes.CDLL(None), ctypes.create_string_buffer(64)
        libc.pthread_mutex_lock(mutex)
        libc.pthread_mutex_lock(mutex)  # a default mutex locked twice by one thread: waits for ever
    sys.exit(0)
""")


def test_a_main_thread_stuck_in_native_code_is_ended_by_the_watchdog(tmpdir_env: Path) -> None:
    proc = start([sys.executable, "-c", STUCK_SCRIPT], tmpdir_env)
    assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    time.sleep(0.5)
    began = time.monotonic()
    stop(proc, signal.SIGTERM, tmpdir_env)
    assert time.monotonic() - began < interrupts.GRACE_S + 8  # not the 120 s of the stuck call
