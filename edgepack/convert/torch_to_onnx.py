"""PyTorch (nn.Module, TorchScript, ExportedProgram) -> ONNX with ``torch.onnx.export``."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgepack.conversion_error import ConversionError
from edgepack.errors import first_line
from edgepack.quiet import captured_output


@dataclass
class ExportResult:
    path: Path
    exporter: str  # "dynamo" or "torchscript (legacy)"
    notes: list[str] = field(default_factory=list)


def export_to_onnx(module: Any, example_inputs: tuple[Any, ...], out_path: Path,
                   input_names: list[str] | None = None, output_names: list[str] | None = None) -> ExportResult:
    """Export with the dynamo exporter (weights inside the file); fall back to the legacy exporter.

    The fallback is said in ``notes``; when both fail, :class:`ConversionError` carries both reasons.
    """
    import torch

    # The exporter logs a warning per torchvision op it cannot register; they are not the user's concern.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings(), captured_output():  # the exporter prints its progress on stdout
            warnings.simplefilter("ignore")
            program = torch.onnx.export(module, example_inputs, dynamo=True, external_data=False,
                                        input_names=input_names, output_names=output_names, verbose=False)
            program.save(str(out_path), external_data=False)
        return ExportResult(out_path, "dynamo")
    except Exception as dynamo_error:  # the dynamo exporter raises many types; the fallback says why
        dynamo_reason = first_line(dynamo_error, with_type=True)
    try:
        with warnings.catch_warnings(), captured_output():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, example_inputs, str(out_path), dynamo=False,
                              input_names=input_names, output_names=output_names, opset_version=17)
    except Exception as legacy_error:  # both exporters failed: report both, drop the half file
        out_path.unlink(missing_ok=True)
        legacy_reason = first_line(legacy_error)
        raise ConversionError("torch->onnx", f"dynamo exporter: {dynamo_reason}; legacy exporter: "
                              f"{legacy_reason}", "the model may use an op ONNX cannot express") from None
    return ExportResult(out_path, "torchscript (legacy)",
                        [f"the dynamo exporter failed ({dynamo_reason}); used the legacy exporter"])
