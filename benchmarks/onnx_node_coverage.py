"""ONNX -> TFLite coverage over the ONNX backend node test suite, with onnx2tf as edgepack runs it.

    .venv/bin/python benchmarks/onnx_node_coverage.py [--workers 2] [--limit N] [--json results.json]

Recent onnx wheels no longer ship onnx/backend/test/data/node, so the suite is written offline from
the generators inside the wheel (onnx.backend.test.case.node) in the standard layout, once, under
benchmarks/.cache/. The reference set is the cases ONNX Runtime itself reproduces (its outputs match
the stored ones); each is converted by onnx2tf with edgepack's options and offline fences, run in
the TFLite interpreter with inputs moved to the layout onnx2tf chose, and compared with the stored
outputs (rtol 1e-3, atol 1e-4). Conversions run in long-lived worker processes (TensorFlow is
imported once per worker); a case that hangs is killed after --timeout seconds.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import queue
import re
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

SUITE = Path(__file__).resolve().parent / ".cache" / "onnx_node_suite"
RTOL, ATOL = 1e-3, 1e-4


# --- the suite --------------------------------------------------------------------------------------

def write_suite(root: Path) -> Path:
    """Serialise every node case in the standard layout (root/node/<case>/...)."""
    node_dir = root / "node"
    if node_dir.is_dir() and any(node_dir.iterdir()):
        return node_dir
    from onnx.backend.test import cmd_tools
    from onnx.backend.test.case import model as model_test
    from onnx.backend.test.case.node import collect_testcases

    model_test.collect_testcases = collect_testcases  # generate_data serialises what this returns
    cmd_tools.generate_data(argparse.Namespace(output=str(root)))
    return node_dir


def read_case(case: Path) -> tuple[Any, list[np.ndarray], list[np.ndarray]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(case / "model.onnx"))
    data = case / "test_data_set_0"

    def load(prefix: str) -> list[np.ndarray]:
        arrays = []
        for i in range(len(list(data.glob(f"{prefix}_*.pb")))):
            tensor = onnx.TensorProto()
            tensor.ParseFromString((data / f"{prefix}_{i}.pb").read_bytes())
            arrays.append(numpy_helper.to_array(tensor))
        return arrays

    return model, load("input"), load("output")


def close(expected: list[np.ndarray], got: list[np.ndarray]) -> bool:
    if len(expected) != len(got):
        return False
    for e, g in zip(expected, got, strict=True):
        if e.shape != g.shape:
            return False
        if e.dtype.kind in "fc":
            if not np.allclose(e.astype(np.float64), g.astype(np.float64), rtol=RTOL, atol=ATOL, equal_nan=True):
                return False
        elif not np.array_equal(e, g.astype(e.dtype)):
            return False
    return True


def ort_reproduces(case: Path) -> bool:
    import onnxruntime as ort

    try:
        model, inputs, expected = read_case(case)
        options = ort.SessionOptions()
        options.log_severity_level = 4
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        if len(names) != len(inputs):
            return False
        got = session.run(None, dict(zip(names, inputs, strict=True)))
        return close(expected, [np.asarray(g) for g in got])
    except Exception:  # any failure means "not in the reference set"; the table counts them
        return False


# --- one conversion, inside a worker ----------------------------------------------------------------

def convert_case(case: Path, onnx2tf: Any, work: Path) -> dict[str, Any]:
    from edgepack.convert.onnx_to_tflite import ONNX2TF_OPTIONS
    from edgepack.convert.validate import ShapeMismatchError, bind
    from edgepack.engines import TfliteEngine
    from edgepack.model_files import onnx_graph_specs
    from edgepack.quiet import captured_output

    model, inputs, expected = read_case(case)
    shutil.rmtree(work / "out", ignore_errors=True)
    shutil.copyfile(case / "model.onnx", work / "model.onnx")
    try:
        with captured_output() as log:
            onnx2tf.convert(input_onnx_file_path=str(work / "model.onnx"), output_folder_path=str(work / "out"),
                            **ONNX2TF_OPTIONS)
    except BaseException as exc:  # onnx2tf raises anything, even SystemExit
        return {"status": "conversion failed", "reason": _reason(f"{type(exc).__name__}: {exc}", log.text)}
    tflite = work / "out" / "model_float32.tflite"
    if not tflite.exists():
        return {"status": "conversion failed", "reason": _reason("no .tflite written", log.text)}
    try:
        engine = TfliteEngine(tflite)
        specs_in, specs_out = onnx_graph_specs(model)
        specs_in = [s._replace(shape=tuple(x.shape)) if hasattr(s, "_replace") else
                    type(s)(s.name, tuple(x.shape), s.dtype, s.layout) for s, x in zip(specs_in, inputs, strict=False)]
        in_bindings = bind("onnx2tf", specs_in, [(tuple(d["shape"]), np.dtype(d["dtype"]).name, d["name"])
                                                for d in engine.inputs], True)
        got = engine.run([b.from_source(x) for b, x in zip(in_bindings, inputs, strict=True)])
        out_specs = [type(s)(s.name, tuple(e.shape), e.dtype.name, s.layout) for s, e in
                     zip(specs_out, expected, strict=False)]
        out_bindings = bind("onnx2tf", out_specs, [(tuple(g.shape), g.dtype.name, "") for g in got], True)
        got = [b.to_source(g) for b, g in zip(out_bindings, got, strict=True)]
    except ShapeMismatchError as exc:
        return {"status": "shape mismatch", "reason": _short(exc.reason)}
    except Exception as exc:  # the interpreter's own errors
        return {"status": "runtime failed", "reason": _short(f"{type(exc).__name__}: {exc}")}
    if not close(expected, got):
        return {"status": "outputs differ", "reason": "outside rtol 1e-3 / atol 1e-4"}
    return {"status": "match", "reason": ""}


def _short(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    first = re.sub(r"/\S+", "", first)  # file paths
    return re.sub(r"0x[0-9a-f]+|\b\d+\b", "N", first)[:90]


def _reason(headline: str, log: str) -> str:
    """The exception onnx2tf raised, unless it said nothing; then its own first error line."""
    from edgepack.convert.errors import last_error_line

    name, _, message = headline.partition(": ")
    return _short(headline if message.strip() else last_error_line(log) or name)


def worker() -> int:
    """Read case paths on stdin, answer one JSON line each on stdout."""
    from edgepack.convert.onnx_to_tflite import write_sample_images
    from edgepack.quiet import captured_output

    work = Path(tempfile.mkdtemp(prefix="edgepack-coverage-"))
    os.chdir(work)
    write_sample_images(work)
    with captured_output():
        import onnx2tf
    out = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        result = convert_case(Path(line.strip()), onnx2tf, work)
        out.write(json.dumps(result) + "\n")
        out.flush()
    return 0


# --- the pool ---------------------------------------------------------------------------------------

class Slot:
    def __init__(self) -> None:
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> subprocess.Popen[str]:
        from edgepack.convert.onnx_to_tflite import offline_env

        self.proc = subprocess.Popen([sys.executable, __file__, "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                     env=offline_env(dict(os.environ)))
        return self.proc

    def ask(self, case: Path, timeout: float) -> dict[str, Any]:
        proc = self.proc if self.proc and self.proc.poll() is None else self.start()
        assert proc.stdin and proc.stdout
        proc.stdin.write(f"{case}\n")
        proc.stdin.flush()
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line:
            proc.kill()
            proc.wait()
            self.proc = None
            return {"status": "conversion failed", "reason": "timeout" if not ready else "worker crashed"}
        return json.loads(line)


def run_pool(cases: list[Path], workers: int, timeout: float) -> dict[str, dict[str, Any]]:
    todo: queue.Queue[Path] = queue.Queue()
    for case in cases:
        todo.put(case)
    results: dict[str, dict[str, Any]] = {}
    lock = threading.Lock()
    start = time.time()

    def loop() -> None:
        slot = Slot()
        while True:
            try:
                case = todo.get_nowait()
            except queue.Empty:
                break
            result = slot.ask(case, timeout)
            with lock:
                results[case.name] = result
                if len(results) % 50 == 0:
                    print(f"  {len(results)}/{len(cases)} converted in {time.time() - start:.0f} s", file=sys.stderr)
        if slot.proc:
            slot.proc.kill()

    threads = [threading.Thread(target=loop) for _ in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--limit", type=int, default=0, help="only the first N reference cases")
    parser.add_argument("--per-op", type=int, default=0, metavar="N",
                        help="only the first N reference cases of each op type (the full set takes hours here)")
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--json", type=Path, help="write every case's result here")
    args = parser.parse_args()
    if args.worker:
        return worker()
    from edgepack.render import table

    started = time.time()
    node_dir = write_suite(SUITE)
    cases = sorted(p for p in node_dir.iterdir() if (p / "model.onnx").exists())
    reference = [c for c in cases if ort_reproduces(c)]
    reproduced = len(reference)
    if args.per_op:
        seen: collections.Counter[str] = collections.Counter()
        sampled = []
        for case in reference:
            op = read_case(case)[0].graph.node[0].op_type
            if seen[op] < args.per_op:
                seen[op] += 1
                sampled.append(case)
        reference = sampled
    if args.limit:
        reference = reference[: args.limit]
    print(f"{len(cases)} node cases; ONNX Runtime reproduces {reproduced}; converting {len(reference)}",
          file=sys.stderr)
    results = run_pool(reference, args.workers, args.timeout)
    statuses = collections.Counter(r["status"] for r in results.values())
    converted = len(results) - statuses["conversion failed"]
    n = max(len(results), 1)
    print(f"ONNX -> TFLite with onnx2tf over the ONNX backend node tests ({len(cases)} cases written offline "
          f"from the onnx wheel; reference set: the {reproduced} that ONNX Runtime reproduces"
          + (f"; converted here: {len(reference)} of them" + (f", the first {args.per_op} per op type"
                                                               if args.per_op else "")
             if len(reference) < reproduced else "") + ")")
    print(table(["outcome", "cases", "share"], [
        ("reference cases", len(results), "100%"),
        ("converted", converted, f"{converted / n:.1%}"),
        ("matching within tolerance", statuses["match"], f"{statuses['match'] / n:.1%}"),
        ("converted, outputs differ", statuses["outputs differ"], f"{statuses['outputs differ'] / n:.1%}"),
        ("converted, shape mismatch", statuses["shape mismatch"], f"{statuses['shape mismatch'] / n:.1%}"),
        ("converted, TFLite runtime failed", statuses["runtime failed"], f"{statuses['runtime failed'] / n:.1%}"),
        ("conversion failed", statuses["conversion failed"], f"{statuses['conversion failed'] / n:.1%}"),
    ], "lrr"))
    reasons = collections.Counter((r["status"], r["reason"]) for r in results.values() if r["status"] != "match")
    print("\nFailures by reason (top 20):")
    print(table(["outcome", "reason", "cases"], [(s, r or "-", c) for (s, r), c in reasons.most_common(20)], "llr"))
    print(f"\n{time.time() - started:.0f} s with {args.workers} workers")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
