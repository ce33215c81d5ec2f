#!/usr/bin/env python3
"""edgepack's on-device benchmark harness. Runs ON the device with the device's own Python.

Imports only the standard library, numpy and whichever runtime the device has (ai_edge_litert,
tflite_runtime, tensorflow.lite, onnxruntime, tflite_micro) - never edgepack. Prints exactly one JSON object on
stdout: every run's latency and its percentiles in ms, load time, peak RSS, the runtime and its
version, the device's environment, a per-op profile where the runtime gives one, and an "error" key
instead when something failed.

    python3 harness.py --model M.tflite [--model-sha256 HEX] [--inputs X.npz] [--threads 4] [--warmup 10]
                       [--runs 50] [--min-runs 10] [--target-ci 0.02] [--max-seconds S]
                       [--save-outputs OUT.npz] [--op-profile]
                       [--runtime tflite-micro --arena-kb 16384] [--delegate /usr/lib/libethosu_delegate.so]
    python3 harness.py --describe      (the environment only: Python, CPU, "emulated")

--runs is the most timed runs. After --min-runs, and every few runs after that, the harness looks at the
95% confidence interval of the median (distribution-free: the order statistics whose ranks the binomial
distribution gives) and stops once its half-width is at most --target-ci of the median (0: never, every
one of --runs is done); --max-seconds stops the timed runs after that many seconds (0: no limit). The
result's "stopping" says how many runs were done, the interval (ms) and why it stopped: "ci", "max runs"
or "time" (Google Benchmark's min_time and pyperf stop on time or on a count; a board's minutes are too
dear to time a slow model a hundred times when ten give its median to 2%).

--delegate loads that TFLite external delegate when the file exists on the device (NXP's Ethos-U
delegate on an i.MX 93) and says so in "delegate"; when it does not, the model runs on the CPU and
"delegate" says why.

--runtime tflite-micro runs the model under TFLite Micro's own interpreter (the tflite-micro wheel:
TFLM's reference kernels, which CMSIS-NN and ESP-NN match bit for bit) in an arena of --arena-kb, and
reports the bytes of the arena the model used ("arena_bytes", from TFLM's allocation recorder). Its
timings are this machine's, not a microcontroller's.

"emulated" is true when the userland's architecture is not the CPU's (an arm64 userland under
qemu-user on an x86 machine): its latencies are an emulator's, and edgepack never calls them a board's.

With --model-sha256 the model file is hashed before it is loaded and refused when it differs
(error_kind "model_changed"): a cached model on the device is never trusted by its name or size.
The timing and the peak RSS come from a run without any profiler; --op-profile then profiles the ops
in a second session whose trace files go to a temporary directory that is removed afterwards.

An inputs array with one axis more than the model's input holds several samples: the timing uses
the first, then every sample is run once and --save-outputs gets each output stacked on that axis
(how edgepack checks accuracy on the device itself).
"""

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HARNESS_VERSION = "5"  # 5: adaptive stop ("stopping"): fewer runs than --runs when the median is known


def emit(data):
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def fail(kind, message, **extra):
    data = {"harness_version": HARNESS_VERSION, "error": message, "error_kind": kind}
    data.update(extra)
    emit(data)
    sys.exit(3)


def read_first(path):
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return None


def emulated(machine, cpuinfo):
    """True when this userland's architecture is not the CPU's: qemu-user translating aarch64 code on
    an x86 machine shows the host's /proc/cpuinfo (an x86 "vendor_id", no Arm "CPU implementer")."""
    arm_userland = machine.startswith(("aarch64", "arm"))
    x86_userland = machine in ("x86_64", "amd64", "i386", "i686")
    return bool((arm_userland and "vendor_id" in cpuinfo) or (x86_userland and "cpu implementer" in cpuinfo))


def environment():
    temp = read_first("/sys/class/thermal/thermal_zone0/temp")
    fields = {}
    for line in (read_first("/proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip().lower(), value.strip())
    cpu_model = fields.get("model name") or fields.get("hardware") or fields.get("model") or None
    try:
        import numpy
        numpy_version = numpy.__version__
    except ImportError:
        numpy_version = None
    return {
        "emulated": emulated(platform.machine(), fields),
        "python": platform.python_version(),
        "numpy": numpy_version,
        "uname": " ".join(platform.uname()),
        "machine": platform.machine(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpu_governor": read_first("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_max_khz": read_first("/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq"),
        "temperature_c": round(int(temp) / 1000.0, 1) if temp and temp.lstrip("-").isdigit() else None,
    }


# --- measuring conditions ---------------------------------------------------------------------------
# What the board can tell about how it ran: the governor and clock of the cores this process may use,
# the temperature, the Raspberry Pi firmware's throttle flags, the load and the other processes that took
# CPU while the model was timed. edgepack judges them (throttled, under-clocked, too much spread); the
# harness only reports. Every reading may be missing (a VM has no cpufreq, a phone hides its thermal
# zones): then it is null, never a guess.

CPUFREQ = "/sys/devices/system/cpu/cpu%d/cpufreq/%s"
FIRMWARE_THROTTLED = "/sys/devices/platform/soc/soc:firmware/get_throttled"
BUSY_WINDOW_S = 0.5


def cores_used():
    try:
        return sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return list(range(os.cpu_count() or 1))


def khz(cpu, name):
    text = read_first(CPUFREQ % (cpu, name))
    return int(text) if text and text.isdigit() else None


def temperature_c():
    """The hottest thermal zone, in degrees C (zone 0 alone on most boards)."""
    found = []
    for zone in range(16):
        text = read_first("/sys/class/thermal/thermal_zone%d/temp" % zone)
        if text is None:
            break
        if text.lstrip("-").isdigit():
            found.append(int(text) / 1000.0)
    return round(max(found), 1) if found else None


def throttled():
    """The Raspberry Pi firmware's throttle flags as an integer (bit 0 under-voltage, 1 ARM clock capped,
    2 throttled, 3 soft temperature limit; bits 16-19: the same since boot), and where they came from."""
    text, source = None, None
    binary = shutil.which("vcgencmd")
    if binary:
        try:
            out = subprocess.run([binary, "get_throttled"], capture_output=True, text=True, timeout=5).stdout
            text, source = out.strip().partition("=")[2], "vcgencmd"
        except (OSError, subprocess.SubprocessError):
            text = None
    if not text:
        text, source = read_first(FIRMWARE_THROTTLED), "sysfs"
    try:
        return int(text, 16), source
    except (TypeError, ValueError):
        return None, None


def cpu_ticks():
    """{pid: (name, user + system clock ticks)} of every other process."""
    me, found = os.getpid(), {}
    try:
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return found
    for pid in pids:
        if pid == me:
            continue
        text = read_first("/proc/%d/stat" % pid)
        if not text or ")" not in text:
            continue
        name, rest = text[text.find("(") + 1:text.rfind(")")], text[text.rfind(")") + 2:].split()
        try:
            found[pid] = (name, int(rest[11]) + int(rest[12]))
        except (IndexError, ValueError):
            continue
    return found


def snapshot(cores):
    value, source = throttled()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {"at": time.monotonic(), "temperature_c": temperature_c(), "throttled": value,
            "throttled_source": source, "cur_khz": [khz(c, "scaling_cur_freq") for c in cores],
            "load_avg": load, "ticks": cpu_ticks()}


def conditions(before, after, cores):
    """The conditions of one timed stretch, from snapshots taken just before the warm-up and just after
    the last timed run (the cores are still busy then: their clock is the one the model ran at)."""
    seconds = max(after["at"] - before["at"], 1e-6)
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    busy = [] if seconds >= BUSY_WINDOW_S else None  # a clock tick is 10 ms: shorter stretches say nothing
    for pid, (name, ticks) in after["ticks"].items() if busy is not None else ():
        if pid in before["ticks"]:
            share = 100.0 * (ticks - before["ticks"][pid][1]) / hz / seconds
            if share >= 10.0:
                busy.append({"pid": pid, "name": name[:40], "cpu_pct": round(share, 1)})
    if busy is not None:
        busy = sorted(busy, key=lambda b: -b["cpu_pct"])[:5]
    governors = [read_first(CPUFREQ % (c, "scaling_governor")) for c in cores]
    return {
        "cores": cores,
        "governor": sorted(set(g for g in governors if g)) or None,
        "cur_khz": after["cur_khz"],
        "max_khz": [khz(c, "cpuinfo_max_freq") for c in cores],
        "scaling_max_khz": [khz(c, "scaling_max_freq") for c in cores],
        "temperature_c": [before["temperature_c"], after["temperature_c"]],
        "throttled": [before["throttled"], after["throttled"]],
        "throttled_source": after["throttled_source"] or before["throttled_source"],
        "load_avg": before["load_avg"],
        "busy": busy,
        "seconds": round(seconds, 3),
    }


def rss_mb():
    """Peak resident memory of this process so far, in MB. Linux: VmHWM, the high-water mark of this
    program's own address space. ru_maxrss is the fallback only: after fork it starts from the parent's
    size, so a harness started by a large process (edgepack with torch loaded) would report that."""
    for line in (read_first("/proc/self/status") or "").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def percentiles(values):
    import numpy as np

    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "std": float(a.std()),
            "min": float(a.min()), "max": float(a.max()), "runs": [round(float(v), 6) for v in a]}


def random_input(shape, dtype, seed):
    import numpy as np

    rng = np.random.default_rng(seed)
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        return rng.random(shape).astype(dtype)
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(max(info.min, -128), min(info.max, 127) + 1, size=shape).astype(dtype)
    return np.zeros(shape, dtype)


def split_samples(values, shapes):
    """(the first sample of each input, all samples or None when the file holds a single one)."""
    if all(v.ndim == len(s) + 1 for v, s in zip(values, shapes)):
        return [v[0] for v in values], [[v[i] for v in values] for i in range(len(values[0]))]
    return values, None


def run_samples(infer, samples):
    """Every sample once: {output name: outputs stacked on a new first axis}."""
    import numpy as np

    collected = {}
    for sample in samples:
        for name, value in infer(sample).items():
            collected.setdefault(name, []).append(np.array(value))
    return {name: np.stack(v) for name, v in collected.items()}


def load_inputs(path, specs):
    """specs: [(name, shape, dtype)]. Arrays from an .npz by name (or in order), else random."""
    import numpy as np

    if not path:
        return [random_input(shape, dtype, i) for i, (_, shape, dtype) in enumerate(specs)]
    with np.load(path) as archive:
        arrays = {k: archive[k] for k in archive.files}
    values = []
    for i, (name, shape, dtype) in enumerate(specs):
        array = arrays.get(name, arrays.get("arr_%d" % i))
        if array is None:
            fail("bad_input", "inputs file has no array for input '%s'" % name)
        values.append(array.astype(dtype, copy=False))
    return values


# --- TFLite -----------------------------------------------------------------------------------------

def tflite_delegates(args, runtime):
    """The --delegate library when the board has it (loaded); else none, and RESULT_EXTRA says why."""
    if not args.delegate:
        return []
    if not os.path.exists(args.delegate):
        RESULT_EXTRA["delegate"] = {"path": args.delegate, "loaded": False,
                                    "why": "not on the device: every op ran on the CPU"}
        return []
    if runtime == "ai_edge_litert":
        from ai_edge_litert.interpreter import load_delegate
    elif runtime == "tflite_runtime":
        from tflite_runtime.interpreter import load_delegate
    else:
        import tensorflow as tf
        load_delegate = tf.lite.experimental.load_delegate
    try:
        delegate = load_delegate(args.delegate)
    except Exception as exc:  # a library that is there but does not load
        RESULT_EXTRA["delegate"] = {"path": args.delegate, "loaded": False,
                                    "why": "did not load (%s): every op ran on the CPU" % str(exc)[:200]}
        return []
    RESULT_EXTRA["delegate"] = {"path": args.delegate, "loaded": True}
    return [delegate]


def tflite_interpreter_class():
    try:
        import ai_edge_litert
        from ai_edge_litert.interpreter import Interpreter
        return Interpreter, "ai_edge_litert", getattr(ai_edge_litert, "__version__", "unknown")
    except ImportError:
        pass
    try:
        import tflite_runtime
        from tflite_runtime.interpreter import Interpreter
        return Interpreter, "tflite_runtime", getattr(tflite_runtime, "__version__", "unknown")
    except ImportError:
        pass
    try:
        import tensorflow as tf
        return tf.lite.Interpreter, "tensorflow.lite", tf.__version__
    except ImportError:
        fail("missing_runtime", "no TFLite runtime on the device",
             install="pip install ai-edge-litert   (or: pip install tflite-runtime)")


def run_tflite(args):
    Interpreter, runtime, version = tflite_interpreter_class()
    start = time.perf_counter()
    delegates = tflite_delegates(args, runtime)
    if delegates:
        interpreter = Interpreter(model_path=args.model, num_threads=args.threads, experimental_delegates=delegates)
    else:
        interpreter = Interpreter(model_path=args.model, num_threads=args.threads)
    interpreter.allocate_tensors()
    load_ms = (time.perf_counter() - start) * 1000.0
    details = interpreter.get_input_details()
    inputs, samples = split_samples(load_inputs(args.inputs, [(d["name"], tuple(d["shape"]), d["dtype"])
                                                              for d in details]),
                                    [tuple(d["shape"]) for d in details])
    for detail, value in zip(details, inputs):
        if tuple(value.shape) != tuple(detail["shape"]):
            interpreter.resize_tensor_input(detail["index"], list(value.shape))
            interpreter.allocate_tensors()
            details = interpreter.get_input_details()

    def once():
        for detail, value in zip(details, inputs):
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()

    def infer(values):
        for detail, value in zip(details, values):
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        return {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}

    latencies = measure(once, args)
    outputs = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
    if samples is not None:
        outputs = run_samples(infer, samples)
    return runtime, version, load_ms, latencies, outputs, lambda: tflite_op_profile(args)


def tflite_op_profile(args):
    binary = shutil.which("benchmark_model")
    if binary is None:
        return {"unavailable": "TFLite per-op profiling needs the benchmark_model binary on the device's PATH"}
    try:
        text = subprocess.run([binary, "--graph=" + args.model, "--num_threads=%d" % args.threads,
                               "--enable_op_profiling=true", "--num_runs=%d" % max(runs_done(args), 10)],
                              capture_output=True, text=True, timeout=600).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"unavailable": "benchmark_model failed: %s" % exc}
    ops, section = [], False
    for line in text.splitlines():
        if "Run Order" in line:
            section = True
            continue
        if section and line.strip().startswith("="):
            break
        parts = line.split()
        if section and len(parts) >= 9 and parts[1].replace(".", "").isdigit():
            ops.append({"type": parts[0], "ms": float(parts[3]), "name": parts[-1]})
    return {"ops": ops} if ops else {"unavailable": "benchmark_model printed no op profile"}


# --- ONNX Runtime -----------------------------------------------------------------------------------

ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
             "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int8)": "int8",
             "tensor(uint8)": "uint8", "tensor(bool)": "bool"}


def ort_session(ort, args, profile_dir=None):
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    if profile_dir:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(profile_dir, "ort_profile")
    return ort.InferenceSession(args.model, options, providers=["CPUExecutionProvider"])


def run_onnxruntime(args):
    try:
        import onnxruntime as ort
    except ImportError:
        fail("missing_runtime", "no ONNX Runtime on the device", install="pip install onnxruntime")
    start = time.perf_counter()
    session = ort_session(ort, args)
    load_ms = (time.perf_counter() - start) * 1000.0
    specs = [(i.name, tuple(d if isinstance(d, int) else 1 for d in i.shape), ORT_TYPES.get(i.type, "float32"))
             for i in session.get_inputs()]
    first, samples = split_samples(load_inputs(args.inputs, specs), [s[1] for s in specs])
    feeds = dict(zip([s[0] for s in specs], first))
    names = [o.name for o in session.get_outputs()]
    result = {}

    def once():
        result["values"] = session.run(names, feeds)

    latencies = measure(once, args)
    outputs = dict(zip(names, result["values"]))
    if samples is not None:
        outputs = run_samples(lambda values: dict(zip(names, session.run(names, dict(zip(feeds, values))))), samples)
    return "onnxruntime", ort.__version__, load_ms, latencies, outputs, lambda: ort_op_profile(ort, args, feeds)


def ort_op_profile(ort, args, feeds):
    """Per-op times from a second session with ONNX Runtime's profiler on (never the timed one: the
    profiler slows every op and costs memory); its trace goes to a temporary directory, always removed."""
    folder = tempfile.mkdtemp(prefix="edgepack-ort-profile-")
    try:
        session = ort_session(ort, args, folder)
        calls = max(args.warmup, 1) + max(min(runs_done(args), 50), 1)
        for _ in range(calls):
            session.run(None, feeds)
        with open(session.end_profiling()) as fh:
            events = json.load(fh)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    totals = {}
    for event in events:
        if event.get("cat") != "Node" or not event.get("name", "").endswith("_kernel_time"):
            continue
        name = event["name"][: -len("_kernel_time")]
        entry = totals.setdefault(name, {"name": name, "type": event.get("args", {}).get("op_name", "?"), "us": 0,
                                         "dtype": output_dtype(event.get("args", {}))})
        entry["us"] += event.get("dur", 0)
    ops = [{"name": e["name"], "type": e["type"], "ms": e["us"] / 1000.0 / calls, "dtype": e["dtype"]}
           for e in totals.values()]
    return {"ops": sorted(ops, key=lambda o: o["ms"], reverse=True)}


def output_dtype(args):
    """The element type of a profiled node's first output ("uint8": ONNX Runtime ran it on quantized
    data, with its int8 kernel; "float": in float), or None when the profiler did not say."""
    found = args.get("output_type_shape")
    if isinstance(found, list) and found and isinstance(found[0], dict) and len(found[0]) == 1:
        return str(next(iter(found[0])))[:16]
    return None


# --- TFLite Micro -----------------------------------------------------------------------------------

def run_tflite_micro(args):
    try:
        from tflite_micro.python.tflite_micro import runtime as tflm
    except ImportError:
        fail("missing_runtime", "no TFLite Micro interpreter here", install="pip install tflite-micro")
    try:
        from tflite_micro.python.tflite_micro._version import __version__ as version
    except ImportError:
        version = "unknown"
    with open(args.model, "rb") as fh:
        graph = tflm.convert_bytearray_to_object(bytearray(fh.read())).subgraphs[0]

    def tensor_name(index):
        name = graph.tensors[index].name
        return name.decode() if isinstance(name, bytes) else str(name)

    start = time.perf_counter()
    interpreter = tflm.Interpreter.from_file(args.model, arena_size=int(args.arena_kb * 1024))
    load_ms = (time.perf_counter() - start) * 1000.0
    details = [interpreter.get_input_details(i) for i in range(len(graph.inputs))]
    names = [tensor_name(i) for i in graph.outputs]
    inputs, samples = split_samples(load_inputs(args.inputs, [(tensor_name(t), tuple(d["shape"]), d["dtype"])
                                                              for t, d in zip(graph.inputs, details)]),
                                    [tuple(d["shape"]) for d in details])

    def infer(values):
        for i, value in enumerate(values):
            interpreter.set_input(value, i)
        interpreter.invoke()
        return {name: interpreter.get_output(i) for i, name in enumerate(names)}

    latencies = measure(lambda: infer(inputs), args)
    outputs = infer(inputs)
    if samples is not None:
        outputs = run_samples(infer, samples)
    RESULT_EXTRA["arena_bytes"] = tflm_arena_bytes(args.model, args.arena_kb)
    return "tflite_micro", version, load_ms, latencies, outputs, None


TFLM_ALLOCATIONS = """
import sys
from tflite_micro.python.tflite_micro import runtime
runtime.Interpreter.from_file(sys.argv[1], arena_size=int(sys.argv[2])).print_allocations()
"""


def tflm_arena_bytes(model, arena_kb):
    """The arena TFLM's recording allocator used, from its report (C code writing to stderr: so it
    runs in a process of its own, whose output is read here)."""
    done = subprocess.run([sys.executable, "-c", TFLM_ALLOCATIONS, model, str(int(arena_kb * 1024))],
                          capture_output=True, text=True, timeout=300)
    for line in (done.stderr + done.stdout).splitlines():
        if "Arena allocation total" in line:
            return int(line.split("total")[1].split()[0])
    return None


RESULT_EXTRA = {}  # fields a runtime adds to the result (TFLM's arena)
OUT_OF_MEMORY = ("bad_alloc", "Failed to allocate memory", "out of memory")

RUNTIME_DISTRIBUTIONS = {"tflite": ("ai-edge-litert", "tflite-runtime", "tensorflow"), "onnxruntime": ("onnxruntime",),
                         "tflite-micro": ("tflite-micro",)}


def version_tuple(text):
    parts = []
    for piece in text.split(".")[:3]:
        digits = ""
        for c in piece:
            if not c.isdigit():
                break
            digits += c
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def numpy_shortfall(runtime, installed=None, requirements=None):
    """(why, what to run) when an installed runtime asks for a newer numpy than the device has (Debian 11's
    numpy 1.19 under tflite-runtime 2.14, say), else None. ``requirements``: {distribution: [Requires-Dist]}."""
    if installed is None:
        import numpy
        installed = numpy.__version__
    for name in RUNTIME_DISTRIBUTIONS.get(runtime, ()):
        if requirements is not None:
            found = requirements.get(name)
        else:
            try:
                from importlib import metadata
                found = metadata.requires(name)
            except Exception:  # not installed (PackageNotFoundError), or no importlib.metadata
                found = None
        for requirement in found or []:
            head = requirement.split(";")[0].replace(" ", "")
            if not head.startswith("numpy>="):
                continue
            needed = head[len("numpy>="):].split(",")[0]
            if version_tuple(installed) < version_tuple(needed):
                return ("%s needs numpy>=%s; the device has numpy %s" % (name, needed, installed),
                        "pip install 'numpy>=%s'   (in the Python edgepack runs)" % needed)
    return None


def check_model(path, expected):
    """Refuse a model file whose bytes are not the ones edgepack sent (a cache overwritten on the device)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    if digest.hexdigest() != expected:
        fail("model_changed", "the model file on the device is not the one sent (sha256 differs): %s" % path)


# --- common -----------------------------------------------------------------------------------------

STOP_CONFIDENCE = 0.95
LOOK_EVERY = 5  # timed runs between two looks at the median's interval (a tenth of the runs so far, once more)
STOPPED_BY = ("ci", "max runs", "time")
_RANKS = {}


def median_rank(n, confidence=STOP_CONFIDENCE):
    """The rank r (1-based) such that the r-th smallest and the r-th largest of n runs bracket the true
    median with at least ``confidence``, whatever the runs' distribution: how many runs fall below the
    median is Binomial(n, 1/2), so r is the largest with P(B <= r - 1) <= (1 - confidence) / 2. None when n
    runs are too few for any interval (n < 6 at 95%)."""
    key = (n, confidence)
    if key not in _RANKS:
        tail, rank, cdf = (1.0 - confidence) / 2.0, 0, 0.0
        log_all = math.lgamma(n + 1) + n * math.log(0.5)
        start = max(0, int(n / 2.0 - 4.0 * math.sqrt(n)))  # the terms below add < 1e-7: summed from here
        for k in range(start, n // 2 + 1):
            cdf += math.exp(log_all - math.lgamma(k + 1) - math.lgamma(n - k + 1))
            if cdf > tail:
                break
            rank = k + 1
        _RANKS[key] = rank or None
    return _RANKS[key]


def median_of(values):
    ordered = sorted(values)
    n = len(ordered)
    return ordered[n // 2] if n % 2 else (ordered[n // 2 - 1] + ordered[n // 2]) / 2.0


def median_ci(values, confidence=STOP_CONFIDENCE):
    """(low, high): the distribution-free confidence interval of the median of ``values`` (two of the
    values themselves), or None when they are too few."""
    rank = median_rank(len(values), confidence)
    if rank is None:
        return None
    ordered = sorted(values)
    return ordered[rank - 1], ordered[len(ordered) - rank]


def ci_rel(values):
    """The half-width of the median's interval over the median; None without an interval."""
    found = median_ci(values)
    median = median_of(values) if values else 0.0
    if found is None or median <= 0:
        return None
    return (found[1] - found[0]) / 2.0 / median


def stopping(runs, args, stopped_by, timed_s):
    """The "stopping" block: the runs done, the median's interval (ms, of the runs as printed) and why
    the timed runs stopped."""
    found = median_ci(runs)
    return {"runs_done": len(runs), "runs_max": args.runs, "min_runs": args.min_runs,
            "target_ci": args.target_ci or None, "max_seconds": args.max_seconds or None,
            "confidence": STOP_CONFIDENCE, "median_ci_ms": list(found) if found else None,
            "median_ci_rel": ci_rel(runs), "stopped_by": stopped_by, "timed_s": round(timed_s, 6)}


def runs_done(args):
    """The timed runs done (as many profiled runs are enough: fewer when the median was known early)."""
    return RESULT_EXTRA.get("stopping", {}).get("runs_done", args.runs)


def measure(once, args, clock=time.perf_counter):
    """Warm up, then time runs until the median's interval is tight (--target-ci, looked at from
    --min-runs on), --runs are done, or --max-seconds have passed; RESULT_EXTRA gets the conditions and
    the "stopping" block. Each run is rounded as it is printed (a nanosecond), and the interval is judged
    on the rounded runs, so that edgepack can check it from the runs it receives. ``clock``: seconds."""
    cores = cores_used()
    before = snapshot(cores)
    for _ in range(args.warmup):
        once()
    latencies = []
    look = max(1, min(args.min_runs, args.runs))
    stopped_by = "max runs"
    began = clock()
    while len(latencies) < args.runs:
        start = clock()
        once()
        latencies.append(round((clock() - start) * 1000.0, 6))
        n = len(latencies)
        if args.target_ci > 0 and n >= look:
            look = n + max(LOOK_EVERY, n // 10)
            rel = ci_rel(latencies)
            if rel is not None and rel <= args.target_ci:
                stopped_by = "ci"
                break
        if 0 < args.max_seconds <= clock() - began and n < args.runs:
            stopped_by = "time"
            break
    timed_s = clock() - began
    RESULT_EXTRA["conditions"] = conditions(before, snapshot(cores), cores)
    RESULT_EXTRA["stopping"] = stopping(latencies, args, stopped_by, timed_s)
    return latencies


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--describe", action="store_true", help="print the device's environment only")
    parser.add_argument("--model")
    parser.add_argument("--model-sha256")
    parser.add_argument("--runtime", choices=["auto", "tflite", "onnxruntime", "tflite-micro"], default="auto")
    parser.add_argument("--arena-kb", type=float, default=65536.0)
    parser.add_argument("--delegate", help="a TFLite external delegate library, used when the device has it")
    parser.add_argument("--inputs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--runs", type=int, default=50, help="the most timed runs")
    parser.add_argument("--min-runs", type=int, default=10, help="timed runs before the median's interval is judged")
    parser.add_argument("--target-ci", type=float, default=0.02,
                        help="stop once the 95%% interval of the median is within this share of it (0: every run)")
    parser.add_argument("--max-seconds", type=float, default=0.0,
                        help="stop the timed runs after this long (0: no limit)")
    parser.add_argument("--save-outputs")
    parser.add_argument("--op-profile", action="store_true")
    args = parser.parse_args()
    if args.describe:
        now = snapshot(cores_used())
        now.pop("ticks")
        now.pop("at")
        emit({"harness_version": HARNESS_VERSION, "environment": environment(), "now": now})
        return
    if not args.model:
        fail("bad_arguments", "--model is required")
    if args.runs < 1 or args.min_runs < 1 or args.target_ci < 0 or args.max_seconds < 0:
        fail("bad_arguments", "--runs and --min-runs must be at least 1, --target-ci and --max-seconds not negative")
    try:
        import numpy  # noqa: F401
    except ImportError:
        fail("missing_numpy", "numpy is not installed on the device (%s)" % sys.executable,
             install="pip install numpy   (or: sudo apt install python3-numpy)")
    if not os.path.exists(args.model):
        fail("missing_model", "model file not found on the device: %s" % args.model)
    if args.model_sha256:
        check_model(args.model, args.model_sha256)
    runtime = args.runtime
    if runtime == "auto":
        runtime = "onnxruntime" if args.model.endswith(".onnx") else "tflite"
    rss_before = rss_mb()
    try:
        run = {"onnxruntime": run_onnxruntime, "tflite-micro": run_tflite_micro}.get(runtime, run_tflite)
        name, version, load_ms, latencies, outputs, profile_ops = run(args)
        peak_rss = rss_mb()  # before any profiling session exists
    except MemoryError:
        fail("out_of_memory", "the device ran out of memory")
    except Exception as exc:  # the runtime's own errors, reported as data
        detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        if any(word in str(exc) for word in OUT_OF_MEMORY):  # a runtime's C++ allocator said so
            fail("out_of_memory", "the device ran out of memory (%s)" % detail[:200])
        short = numpy_shortfall(runtime)
        if short:  # a runtime built against a newer numpy fails with a cryptic SystemError: say why
            fail("runtime_error", "%s: %s (%s)" % (type(exc).__name__, detail, short[0]), install=short[1])
        fail("runtime_error", "%s: %s" % (type(exc).__name__, detail))
    op_profile = None
    if args.op_profile and profile_ops is None:
        op_profile = {"unavailable": "%s gives no per-op times" % name}
    elif args.op_profile:
        try:
            op_profile = profile_ops()
        except Exception as exc:  # the timing stands; only the per-op breakdown is missing
            op_profile = {"unavailable": "op profiling failed: %s: %s" % (type(exc).__name__, str(exc)[:200])}
    if args.save_outputs:
        import numpy as np

        np.savez(args.save_outputs, **{"output_%d" % i: v for i, v in enumerate(outputs.values())})
    emit({
        "harness_version": HARNESS_VERSION,
        "runtime": name,
        "runtime_version": version,
        "model_bytes": os.path.getsize(args.model),
        "threads": args.threads,
        "warmup": args.warmup,
        "load_ms": load_ms,
        "latency_ms": percentiles(latencies),
        "peak_rss_mb": peak_rss,
        "rss_before_load_mb": rss_before,
        "output_names": list(outputs),
        "op_profile": op_profile,
        "environment": environment(),
        **RESULT_EXTRA,
    })


if __name__ == "__main__":
    main()
