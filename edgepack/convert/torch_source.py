"""Any PyTorch model handle (module factory, TorchScript, ExportedProgram): example inputs, and an ONNX export."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepack.convert.torch_to_onnx import ExportResult, export_to_onnx
from edgepack.errors import InputShapeError
from edgepack.model import ModelFormat, ModelHandle, torch_module_of
from edgepack.model_files import load_exported_program


def example_inputs(handle: ModelHandle) -> tuple[Any, ...]:
    """Zeros of every input's static shape; a dynamic or unknown shape is the user's to give."""
    import torch

    tensors = []
    for spec in handle.inputs:
        if not spec.is_static or not spec.shape:
            raise InputShapeError(f"input '{spec.name}' of {handle.source} has no static shape "
                                  f"({list(spec.shape) or 'unknown'})",
                                  "pass --input-shape, e.g. --input-shape 1,3,224,224")
        dtype = getattr(torch, spec.dtype, torch.float32)
        tensors.append(torch.zeros(*spec.shape, dtype=dtype))  # type: ignore[misc]
    return tuple(tensors)


def export_handle_to_onnx(handle: ModelHandle, out_path: Path) -> ExportResult:
    if handle.format is ModelFormat.EXPORTED_PROGRAM:
        assert handle.path is not None
        import torch

        from edgepack.quiet import captured_output

        program = load_exported_program(handle.path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        with captured_output():  # the exporter prints its progress on stdout
            torch.onnx.export(program, (), dynamo=True, external_data=False).save(str(out_path),
                                                                                  external_data=False)
        return ExportResult(out_path, "dynamo")
    return export_to_onnx(torch_module_of(handle), example_inputs(handle), out_path,
                          input_names=[s.name for s in handle.inputs])
