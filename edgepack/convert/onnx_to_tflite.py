"""ONNX -> TFLite (fp32, fp16) and SavedModel with onnx2tf, run in a fenced-off subprocess.

onnx2tf rewrites its input file in place, calls ``onnxsim`` from PATH, prints a great deal, and for
3-channel image inputs fetches a sample image file from the internet unless one sits in its working
directory. So edgepack gives it a copy of the model in a fresh directory, with our own sample data
file there (from the user's calibration data when given), PATH pointing at this interpreter's
scripts, and proxies that lead nowhere so that nothing can go online. Tensor names it cannot take
(``<``, ``"``, spaces, non-ASCII) are made safe in that copy and given back to the TFLite files
(convert/tensor_names.py). It runs in a process group of its own, ended with everything it started
when edgepack is interrupted (edgepack.interrupts).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgepack import __version__, interrupts
from edgepack.conversion_error import ConversionError
from edgepack.convert import reuse
from edgepack.convert.errors import failing_node, last_error_line
from edgepack.convert.tensor_names import RenamedNames, sanitise_onnx

ROUTE = "onnx->tflite (onnx2tf)"
# onnx2tf reads this file from its working directory instead of downloading it (utils/common_functions).
_SAMPLE_FILE = "calibration_image_sample_data_20x128x128x3_float32.npy"
_UNREACHABLE_PROXY = "http://127.0.0.1:9"
#: How edgepack calls onnx2tf.convert (also used by benchmarks/onnx_node_coverage.py).
ONNX2TF_OPTIONS = {"copy_onnx_input_output_names_to_tflite": True, "output_signaturedefs": True,
                   "non_verbose": True}


@dataclass
class TfliteOutputs:
    float32: Path
    float16: Path | None
    saved_model: Path | None
    notes: list[str] = field(default_factory=list)


def write_sample_images(directory: Path, calib_nchw: np.ndarray | None = None) -> None:
    """Put onnx2tf's sample file where it looks first, so it never downloads one."""
    np.save(directory / _SAMPLE_FILE, sample_images(calib_nchw))


def offline_env(env: dict[str, str]) -> dict[str, str]:
    """Environment for onnx2tf: this interpreter's scripts on PATH (onnxsim), proxies leading nowhere."""
    env = dict(env)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "HTTP_PROXY": _UNREACHABLE_PROXY,
                "HTTPS_PROXY": _UNREACHABLE_PROXY, "http_proxy": _UNREACHABLE_PROXY,
                "https_proxy": _UNREACHABLE_PROXY, "NO_PROXY": "", "no_proxy": "",
                "CUDA_VISIBLE_DEVICES": "-1"})
    return env


def sample_images(calib_nchw: np.ndarray | None, count: int = 20) -> np.ndarray:
    """20x128x128x3 float32 images for onnx2tf's own checks: the user's data when it is image-like."""
    if calib_nchw is not None and calib_nchw.ndim == 4 and calib_nchw.shape[1] == 3:
        images = np.transpose(calib_nchw[:count].astype(np.float32), (0, 2, 3, 1))
        reps = int(np.ceil(count / len(images)))
        images = np.concatenate([images] * reps)[:count]
        rows = np.linspace(0, images.shape[1] - 1, 128).astype(int)
        cols = np.linspace(0, images.shape[2] - 1, 128).astype(int)
        return np.ascontiguousarray(images[:, rows][:, :, cols])
    return np.random.default_rng(0).random((count, 128, 128, 3), dtype=np.float32)


def convert_onnx_to_tflite(onnx_path: Path, out_dir: Path, *, calib: np.ndarray | None = None,
                           timeout_s: float = 900.0) -> TfliteOutputs:
    """Convert ``onnx_path`` into ``out_dir`` (model_float32.tflite, model_float16.tflite, saved_model/).

    The user's file is never opened for writing. Raises :class:`ConversionError` with onnx2tf's own
    last error line when the conversion fails or times out. The TFLite files carry the model's own tensor
    names; a SavedModel made from renamed ones holds the map back (tensor_names.NAMES_FILE). Within
    ``reuse.conversions_kept_in`` the same graph with the same sample data is converted once (its
    failure too) and copied from there.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    kept = reuse.kept_folder()
    if kept is None:
        with tempfile.TemporaryDirectory(prefix="edgepack-onnx2tf-") as tmp:
            return _copied(_onnx2tf(onnx_path, Path(tmp), calib, timeout_s), out_dir)
    samples = sample_images(calib)
    folder = kept / ("onnx2tf-" + reuse.digest(onnx_path.read_bytes(), samples.tobytes(), str(samples.shape),
                                               json.dumps(ONNX2TF_OPTIONS, sort_keys=True), reuse.version_of("onnx2tf"),
                                               __version__))
    with reuse.locked(folder):
        failed, made = folder / "failed.txt", folder / "out"
        if failed.is_file():
            raise ConversionError(ROUTE, failed.read_text(encoding="utf-8") + " (kept from an earlier try)")
        if not (made / "model_float32.tflite").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="edgepack-onnx2tf-", dir=folder) as tmp:
                try:
                    produced = _onnx2tf(onnx_path, Path(tmp), calib, timeout_s)
                except _Timeout:
                    raise  # the machine's load may decide that: tried again next time
                except ConversionError as exc:
                    failed.write_text(exc.reason, encoding="utf-8")
                    raise
                shutil.rmtree(made, ignore_errors=True)
                produced.replace(made)  # whole or not at all: the float32 file marks it done
        return _copied(made, out_dir)


class _Timeout(ConversionError):
    """onnx2tf ran out of time (not kept as the graph's failure)."""


def _onnx2tf(onnx_path: Path, work: Path, calib: np.ndarray | None, timeout_s: float) -> Path:
    """onnx2tf run on a copy of the graph in ``work``; its output folder (the renamed names' map in it)."""
    names = sanitise_onnx(onnx_path, work / "model.onnx")
    write_sample_images(work, calib)
    job = {"onnx": str(work / "model.onnx"), "out": str(work / "out"), "names": names.to_dict()}
    (work / "job.json").write_text(json.dumps(job))
    env = offline_env(dict(os.environ))
    try:  # in a process group of its own: onnx2tf's own children (onnxsim) end with it
        proc = interrupts.run([sys.executable, "-m", "edgepack.convert._onnx2tf_worker", str(work / "job.json")],
                              cwd=work, env=env, timeout_s=timeout_s)
    except subprocess.TimeoutExpired:
        raise _Timeout(ROUTE, f"onnx2tf did not finish in {timeout_s:.0f} s") from None
    produced = work / "out"
    if proc.returncode != 0 or not (produced / "model_float32.tflite").exists():
        text = proc.stdout + "\n" + proc.stderr
        raise ConversionError(ROUTE, last_error_line(text) + _users_node(failing_node(text), names))
    if names:
        names.save(produced)
    return produced


def _copied(produced: Path, out_dir: Path) -> TfliteOutputs:
    """onnx2tf's files from ``produced`` into ``out_dir``; the SavedModel keeps the renamed names' map."""
    float32 = out_dir / "model_float32.tflite"
    shutil.copyfile(produced / "model_float32.tflite", float32)
    float16 = None
    if (produced / "model_float16.tflite").exists():
        float16 = out_dir / "model_float16.tflite"
        shutil.copyfile(produced / "model_float16.tflite", float16)
    saved_model = None
    if (produced / "saved_model.pb").exists():
        saved_model = out_dir / "saved_model"
        shutil.rmtree(saved_model, ignore_errors=True)
        shutil.copytree(produced, saved_model, ignore=shutil.ignore_patterns("*.tflite", "*.json"))
        names = RenamedNames.of(produced)
        if names:
            names.save(saved_model)
    return TfliteOutputs(float32, float16, saved_model)


def _users_node(where: str, names: RenamedNames) -> str:
    """`` (at ONNX node 'safe')`` with the node's own name."""
    for safe, user in names.nodes.items():
        where = where.replace(f"'{safe}'", f"'{user}'")
    return where


def unsupported_ops(onnx_path: Path) -> list[str]:
    """Op types in the graph that onnx2tf has no converter for (it keeps one module per op type).

    Reads onnx2tf's ``ops/`` folder instead of importing it: importing onnx2tf imports TensorFlow.
    """
    import importlib.util

    import onnx

    spec = importlib.util.find_spec("onnx2tf")
    if spec is None or spec.origin is None:
        return []
    known = {p.stem for p in (Path(spec.origin).parent / "ops").glob("*.py")}
    model = onnx.load(str(onnx_path), load_external_data=False)
    missing: list[str] = []
    for node in model.graph.node:
        standard = node.domain in ("", "ai.onnx")
        label = node.op_type if standard else f"{node.domain}.{node.op_type}"
        if label not in missing and (not standard or node.op_type not in known):
            missing.append(label)
    return missing
