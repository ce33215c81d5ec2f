#!/usr/bin/env python3
"""Classify image files on a Raspberry Pi with a package built by ``edgepack build``.

    python3 classify.py PACKAGE_DIR IMAGE [IMAGE ...] [--labels labels.txt] [--top 3]

PACKAGE_DIR is the package directory (or the ``current`` link that ``edgepack deploy`` keeps). Images
are read with Pillow and prepared as the package's manifest says (size, channel order, mean and std,
layout); the model runs through the package's own ``run.py`` with whichever runtime the Pi has
(ai_edge_litert, tflite_runtime or tensorflow for .tflite, onnxruntime for .onnx). One JSON line per
image: {"image": ..., "top": [{"class": i, "label": ..., "score": s}, ...], "ms": ...}.

Needs: python3, numpy, Pillow (``sudo apt install python3-numpy python3-pil``) and a runtime
(``pip install ai-edge-litert`` or ``tflite-runtime``).
"""

import argparse
import importlib.util
import json
import os
import sys
import time


def load_package(directory):
    """The package's manifest and its run.py as a module."""
    manifest_path = os.path.join(directory, "manifest.json")
    if not os.path.isfile(manifest_path):
        sys.exit("classify.py: %s has no manifest.json; give the package directory edgepack built" % directory)
    spec = importlib.util.spec_from_file_location("edgepack_package_run", os.path.join(directory, "run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.HERE = os.path.abspath(directory)
    with open(manifest_path) as fh:
        return json.load(fh), module


def image_array(path, manifest):
    """One image as float32 in the source model's input layout, with a batch axis of 1."""
    import numpy as np
    from PIL import Image

    binding = manifest["inputs"][0]
    layout, shape = binding["source_layout"], binding["source_shape"]
    channels_first = layout == "NCHW"
    channels, height, width = (shape[1], shape[2], shape[3]) if channels_first else (shape[3], shape[1], shape[2])
    prep = manifest.get("preprocessing") or {}
    if prep.get("size"):
        height, width = prep["size"]
    with Image.open(path) as image:
        image = image.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
        pixels = np.asarray(image, dtype=np.float32) / 255.0
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if prep.get("channel_order") == "bgr":
        pixels = pixels[..., ::-1]
    mean = np.asarray(prep.get("mean", [0.0] * 3)[: pixels.shape[-1]], np.float32)
    std = np.asarray(prep.get("std", [1.0] * 3)[: pixels.shape[-1]], np.float32)
    pixels = (pixels - mean) / std
    if channels_first:
        pixels = np.transpose(pixels, (2, 0, 1))
    return pixels[None].astype(np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description="Classify images with an edgepack package.")
    parser.add_argument("package", help="the package directory (or the deployment's 'current' link)")
    parser.add_argument("images", nargs="+", help="image files (jpg, png, bmp)")
    parser.add_argument("--labels", help="a text file with one class name per line")
    parser.add_argument("--top", type=int, default=3)
    args = parser.parse_args(argv)
    import numpy as np

    manifest, run = load_package(args.package)
    if not manifest.get("preprocessing"):
        print("classify.py: the package records no image preprocessing (it was calibrated on arrays); "
              "using pixels scaled to [0, 1]", file=sys.stderr)
    labels = None
    if args.labels:
        with open(args.labels) as fh:
            labels = [line.strip() for line in fh]
    for path in args.images:
        try:
            sample = image_array(path, manifest)
        except OSError as exc:
            print(json.dumps({"image": path, "error": "not a readable image: %s" % exc}))
            continue
        start = time.perf_counter()
        scores = run.run(manifest, sample)[0].reshape(-1)
        elapsed = (time.perf_counter() - start) * 1000.0
        order = np.argsort(scores)[::-1][: args.top]
        top = [{"class": int(i), "score": float(scores[i])} for i in order]
        if labels:
            for entry in top:
                entry["label"] = labels[entry["class"]] if entry["class"] < len(labels) else None
        print(json.dumps({"image": path, "top": top, "ms": round(elapsed, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
