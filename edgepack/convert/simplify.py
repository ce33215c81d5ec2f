"""Freeze shapes and fold constants: real exported graphs compute Reshape targets, Slice bounds and
Resize sizes from Shape -> Gather -> Concat chains. With the input shapes fixed those chains are
constants; onnxsim folds them, so that converters (onnx2tf, ONNX -> PyTorch) see plain ops.

The simplified graph is never trusted blindly: whatever is built from it is compared with the
original source by the caller, as every artifact is.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from edgepack.errors import first_line

#: Ops whose inputs are shapes computed at run time; their presence is what simplifying removes.
SHAPE_OPS = frozenset({"Shape", "Size", "ConstantOfShape", "Range", "Expand"})


def simplify_onnx(path: Path, out: Path) -> tuple[Path, str]:
    """``out`` holding the simplified graph and a note; ``path`` itself (and why) when onnxsim fails
    or changes nothing. The input shapes must already be static (``routes.onnx_of`` fixes them)."""
    import onnx

    from edgepack.quiet import captured_output

    model = onnx.load(str(path))
    before = Counter(n.op_type for n in model.graph.node)
    try:
        import onnxsim

        with captured_output():  # onnxsim's C++ prints each op it could not fold
            simplified, _ = onnxsim.simplify(model)
    except Exception as exc:  # onnxsim raises whatever its shape inference or folding raised
        return path, f"onnxsim could not simplify the graph ({first_line(exc, with_type=True)})"
    after = Counter(n.op_type for n in simplified.graph.node)
    if after == before:
        return path, ""
    onnx.save(simplified, str(out))
    removed = sorted(op for op in before if op in SHAPE_OPS and not after.get(op))
    what = f"; computed shapes folded ({', '.join(removed)} gone)" if removed else ""
    return out, f"graph simplified with shapes frozen (onnxsim): {sum(before.values())} -> " \
                f"{sum(after.values())} nodes{what}"
