"""Turn any PyTorch model handle (module factory, TorchScript, ExportedProgram) into a module + inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepack.convert.torch_to_onnx import ExportResult, export_to_onnx
from edgepack.errors import InputShapeError
from edgepack.model import (
    ModelFormat,
    ModelHandle,
    load_exported_program,
    load_torchscript,
    torch_module_from_spec,
)


def torch_module_of(handle: ModelHandle) -> Any:
    """An eval-mode callable module for the handle."""
    if handle.format is ModelFormat.TORCH_MODULE:
        if handle.module is None:
            handle.module = torch_module_from_spec(handle.source)
        return handle.module
    assert handle.path is not None
    if handle.format is ModelFormat.TORCHSCRIPT:
        return load_torchscript(handle.path).eval()
    return load_exported_program(handle.path).module()


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
