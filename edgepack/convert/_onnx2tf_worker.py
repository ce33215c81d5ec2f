"""Runs onnx2tf for convert_onnx_to_tflite in its own process (see onnx_to_tflite.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from edgepack.convert.onnx_to_tflite import ONNX2TF_OPTIONS
from edgepack.convert.tensor_names import RenamedNames, restore_tflite_file


def main(job_path: str) -> int:
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))
    import onnx2tf

    onnx2tf.convert(input_onnx_file_path=job["onnx"], output_folder_path=job["out"], **ONNX2TF_OPTIONS)
    names = RenamedNames.from_dict(job.get("names", {}))
    for tflite in Path(job["out"]).glob("*.tflite"):  # the user's tensor names back (TensorFlow is loaded here)
        restore_tflite_file(tflite, names)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
