#!/usr/bin/env python3
"""Run the model of this edgepack package on the device, with whichever runtime is installed.

    python3 run.py INPUT.npy [--top 5]      # one sample in the source model's layout (see manifest.json)

Needs numpy and one of: ai_edge_litert, tflite_runtime, tensorflow (TFLite models) or onnxruntime
(ONNX models). Input is given in the layout the original model took; this program transposes it and
(for int8 models) quantizes it as manifest.json says, then prints the top classes.
"""

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def load_manifest():
    with open(os.path.join(HERE, "manifest.json")) as fh:
        return json.load(fh)


def tflite_interpreter(path):
    for name in ("ai_edge_litert.interpreter", "tflite_runtime.interpreter"):
        try:
            module = __import__(name, fromlist=["Interpreter"])
            return module.Interpreter(model_path=path)
        except ImportError:
            continue
    try:
        import tensorflow as tf
    except ImportError:
        sys.exit("no TFLite runtime here: pip install ai-edge-litert (or tflite-runtime)")
    return tf.lite.Interpreter(model_path=path)


def prepare(array, binding):
    import numpy as np

    if binding.get("perm"):
        array = np.transpose(array, binding["perm"])
    dtype = np.dtype(binding["dtype"])
    if dtype.kind in "iu" and binding.get("scale"):
        info = np.iinfo(dtype)
        array = np.clip(np.round(array / binding["scale"] + binding["zero_point"]), info.min, info.max)
    return array.astype(dtype)


def finish(array, binding):
    import numpy as np

    if binding.get("scale") and array.dtype.kind in "iu":
        array = (array.astype(np.float32) - binding["zero_point"]) * binding["scale"]
    if binding.get("perm"):
        array = np.transpose(array, np.argsort(binding["perm"]))
    return array


def run(manifest, sample):
    model = os.path.join(HERE, manifest["model_file"])
    inputs, outputs = manifest["inputs"], manifest["outputs"]
    if model.endswith(".onnx"):
        try:
            import onnxruntime as ort
        except ImportError:
            sys.exit("no ONNX Runtime here: pip install onnxruntime")
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        values = session.run(None, {name: prepare(sample, inputs[0])})
    else:
        interpreter = tflite_interpreter(model)
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], prepare(sample, inputs[0]))
        interpreter.invoke()
        values = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    return [finish(v, b) for v, b in zip(values, outputs)]


def main():
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help=".npy file with one sample, in the original model's layout")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    manifest = load_manifest()
    sample = np.load(args.input)
    shape = manifest["inputs"][0]["source_shape"]
    if len(sample.shape) == len(shape) - 1:
        sample = sample[None]
    scores = run(manifest, sample.astype(np.float32))[0].reshape(-1)
    order = np.argsort(scores)[::-1][: args.top]
    print(json.dumps({"top": [{"class": int(i), "score": float(scores[i])} for i in order]}))


if __name__ == "__main__":
    main()
