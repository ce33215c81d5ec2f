"""TFLite's GPU compatibility analyzer (``tf.lite.experimental.Analyzer``, ``gpu_compatibility=True``):
the official per-op verdict for the GPU delegate, when it works.

It is checked before it is believed: a probe model whose op the GPU delegate cannot run (a Flex op,
TensorFlow's own kernel) must be called incompatible. TensorFlow 2.21's analyzer passes that probe as
"compatible" (its GPU check is not built in): then its verdict is not used, the profile's op list
speaks, and the output says so.
"""

from __future__ import annotations

import contextlib
import functools
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

WARNING = re.compile(r"Op#\d+ (\S+)\(.*GPU COMPATIBILITY WARNING: (.*)")
NOT_SUPPORTED = re.compile(r"GPU COMPATIBILITY WARNING: Not supported (?:custom )?op (\S+)")


@dataclass(frozen=True)
class GpuVerdict:
    compatible: bool
    ops: dict[str, str] = field(default_factory=dict)  # op -> the analyzer's reason
    analyzer: str = ""


def _report(model_content: bytes) -> str:
    import tensorflow as tf

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        tf.lite.experimental.Analyzer.analyze(model_content=model_content, gpu_compatibility=True)
    return buffer.getvalue()


def parse_report(text: str) -> tuple[bool, dict[str, str]]:
    ops: dict[str, str] = {}
    for line in text.splitlines():
        found = WARNING.search(line)
        if found:
            ops.setdefault(found.group(1), found.group(2).strip())
            continue
        found = NOT_SUPPORTED.search(line)
        if found:
            ops.setdefault(found.group(1), "not supported")
    compatible = "looks compatible with GPU delegate" in text and not ops
    return compatible, ops


def _probe_model() -> bytes:
    """A model the GPU delegate cannot run: its one op is a Flex op (TensorFlow's own Cosh kernel)."""
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def cosh(x: tf.Tensor) -> tf.Tensor:
        return tf.cosh(x)

    converter = tf.lite.TFLiteConverter.from_concrete_functions([cosh.get_concrete_function()], cosh)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
    return converter.convert()


@functools.lru_cache(maxsize=1)
def analyzer_status() -> tuple[bool, str]:
    """(does the analyzer work here, why not / which one it is)."""
    try:
        import tensorflow as tf
    except ImportError:
        return False, "TensorFlow is not installed"
    name = f"TFLite's GPU analyzer (TensorFlow {tf.__version__})"
    try:
        compatible, _ = parse_report(_report(_probe_model()))
    except Exception as exc:
        return False, f"{name} failed: {type(exc).__name__}"
    if compatible:
        return False, f"{name} called a Flex op GPU-compatible: its GPU check does not work in this build"
    return True, name


def analyze(model: Path) -> GpuVerdict | None:
    """The analyzer's verdict on a TFLite model; None when the analyzer cannot be believed here."""
    works, name = analyzer_status()
    if not works:
        return None
    compatible, ops = parse_report(_report(model.read_bytes()))
    return GpuVerdict(compatible, ops, name)
