#!/usr/bin/env python3
"""Run the model of this edgepack package on the device, with whichever runtime is installed.

    python3 run.py INPUT.npy [--top 5]      # one sample in the source model's layout (see manifest.json)
    python3 run.py INPUTS.npz               # several inputs: one array per source input name

Needs numpy and one of: ai_edge_litert, tflite_runtime, tensorflow (TFLite models) or onnxruntime
(ONNX models). Input is given in the layout the original model took; this program transposes it and
(for int8 models) quantizes it as manifest.json says, then prints each output as JSON: its shape and
dtype, and a class-score vector's top classes, anything else's range and first values.
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


def run(manifest, samples):
    """``samples``: one array per input, in the source's order and layout (or the one array of a
    single-input model)."""
    if not isinstance(samples, (list, tuple)):
        samples = [samples]
    model = os.path.join(HERE, manifest["model_file"])
    inputs, outputs = manifest["inputs"], manifest["outputs"]
    if model.endswith(".onnx"):
        try:
            import onnxruntime as ort
        except ImportError:
            sys.exit("no ONNX Runtime here: pip install onnxruntime")
        session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
        feed = {b["name"]: prepare(x, b) for b, x in zip(inputs, samples)}
        values = dict(zip([o.name for o in session.get_outputs()], session.run(None, feed)))
    else:
        interpreter = tflite_interpreter(model)
        interpreter.allocate_tensors()
        details = {d["name"]: d for d in interpreter.get_input_details()}
        for i, (binding, x) in enumerate(zip(inputs, samples)):
            detail = details.get(binding["name"], interpreter.get_input_details()[i])
            interpreter.set_tensor(detail["index"], prepare(x, binding).reshape(detail["shape"]))
        interpreter.invoke()
        values = {d["name"]: interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()}
    ordered = list(values.values())
    return [finish(values.get(b["name"], ordered[i]), b) for i, b in enumerate(outputs)]


def usage(manifest):
    """Each input as the original model took it, and the layout change run.py makes for the artifact."""
    lines = ["inputs, in the original model's layout:"]
    for i in manifest["inputs"]:
        change = " (the model takes %s; run.py transposes)" % i["layout"] if i.get("perm") else ""
        lines.append("  %s: %s %s %s%s" % (i["source_name"], i["source_shape"], i["source_layout"],
                                          i["dtype"] if not i.get("scale") else "float32", change))
    return "\n".join(lines)


def read_inputs(path, manifest):
    import numpy as np

    specs = manifest["inputs"]
    if path.endswith(".npz"):
        with np.load(path) as archive:
            missing = [s["source_name"] for s in specs if s["source_name"] not in archive.files]
            if missing:
                sys.exit("%s has no array for input '%s'" % (path, missing[0]))
            arrays = [archive[s["source_name"]] for s in specs]
    elif len(specs) == 1:
        arrays = [np.load(path)]
    else:
        sys.exit("the model has %d inputs: give an .npz with one array per input name" % len(specs))
    result = []
    for spec, array in zip(specs, arrays):
        if len(array.shape) == len(spec["source_shape"]) - 1:
            array = array[None]
        float_in = spec.get("scale") or np.dtype(spec["dtype"]).kind == "f"
        result.append(array.astype(np.float32) if float_in else array)
    return result


def describe(array, top):
    import numpy as np

    flat = array.reshape(-1)
    found = {"shape": [int(d) for d in array.shape], "dtype": str(array.dtype)}
    if flat.size > 1 and max(array.shape) == flat.size:  # one vector: class scores
        order = np.argsort(flat)[::-1][:top]
        found["top"] = [{"class": int(i), "score": float(flat[i])} for i in order]
    elif flat.size:
        found.update({"min": float(flat.min()), "max": float(flat.max()), "first": [float(v) for v in flat[:8]]})
    return found


def main():
    manifest = load_manifest()
    parser = argparse.ArgumentParser(description=__doc__, epilog=usage(manifest),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("input", help=".npy file with one sample (or .npz by input name), in the original "
                        "model's layout")
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    results = run(manifest, read_inputs(args.input, manifest))
    named = {b["source_name"]: describe(v, args.top) for b, v in zip(manifest["outputs"], results)}
    first = next((d for d in named.values() if "top" in d), None)
    print(json.dumps({**({"top": first["top"]} if first else {}), "outputs": named}))


if __name__ == "__main__":
    main()
