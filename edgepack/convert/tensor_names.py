"""Tensor names onnx2tf cannot take, made safe on the way in and given back on the way out.

onnx2tf turns ONNX tensor and node names into Keras layer and TensorFlow scope names, which must match
``[A-Za-z0-9_.\\/>-]``: a name holding ``<``, ``"``, a space or a non-ASCII letter fails the whole
conversion (``'model/prob"é/' is not a valid scope name``). So the copy of the model given to onnx2tf
has every such name replaced by one of ``[A-Za-z0-9_]`` (unique in the graph), and the TFLite files made
from its output get the user's names back: tensors named exactly as a replaced name, the SavedModel
signature's ``serving_default_<name>:<n>`` tensors, and signature keys. The SavedModel itself keeps the
safe names (its signature is traced code); the map travels with it in :data:`NAMES_FILE`, so TFLite
files quantized from it later are renamed the same way. Names that need nothing are left as they are.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Written next to a SavedModel made from renamed tensors: {"tensors": {safe: user's}, "nodes": {...}}.
NAMES_FILE = "edgepack_tensor_names.json"
_KEPT = re.compile(r"[A-Za-z0-9_.:/-]*")  # what onnx2tf takes (it rewrites ':' itself)
_UNSAFE = re.compile(r"[^A-Za-z0-9_]")
_SIGNATURE_TENSOR = re.compile(r"^(serving_default_)(.*)(:\d+)$")


@dataclass
class RenamedNames:
    """safe name -> the user's name, for tensors and for nodes; empty when nothing was renamed."""

    tensors: dict[str, str] = field(default_factory=dict)
    nodes: dict[str, str] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.tensors or self.nodes)

    def to_dict(self) -> dict[str, dict[str, str]]:
        return {"tensors": self.tensors, "nodes": self.nodes}

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, str]]) -> RenamedNames:
        return cls(dict(data.get("tensors", {})), dict(data.get("nodes", {})))

    def save(self, folder: Path) -> None:
        (folder / NAMES_FILE).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def of(cls, folder: Path) -> RenamedNames:
        """The map saved in ``folder`` (a SavedModel made by onnx2tf), else an empty one."""
        path = folder / NAMES_FILE
        if not path.is_file():
            return cls()
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def node(self, name: str) -> str:
        return self.nodes.get(name, name)


def _graphs(graph: Any) -> Iterator[Any]:
    """The graph and every subgraph (If, Loop, Scan bodies), which may read the outer graph's names."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for sub in attribute.graphs:
                yield from _graphs(sub)


def _tensor_names(graph: Any) -> Iterator[str]:
    for g in _graphs(graph):
        for value in (*g.input, *g.output, *g.value_info):
            yield value.name
        yield from (tensor.name for tensor in g.initializer)
        yield from (sparse.values.name for sparse in g.sparse_initializer)
        for node in g.node:
            yield from node.input
            yield from node.output


def _safe_map(names: Iterator[str], taken: set[str]) -> dict[str, str]:
    """user's name -> safe name, for the names onnx2tf cannot take."""
    renamed: dict[str, str] = {}
    for name in names:
        if not name or name in renamed or _KEPT.fullmatch(name):
            continue
        base = _UNSAFE.sub("_", name)
        safe, n = base, 1
        while safe in taken:
            n += 1
            safe = f"{base}_{n}"
        taken.add(safe)
        renamed[name] = safe
    return renamed


def sanitise_onnx(src: Path, dst: Path) -> RenamedNames:
    """Write ``src`` to ``dst`` with every tensor and node name onnx2tf cannot take replaced; the map back.

    When no name needs it, ``dst`` is a plain copy of ``src`` and the map is empty.
    """
    import shutil

    import onnx

    model = onnx.load(str(src), load_external_data=False)
    tensor_names = list(_tensor_names(model.graph))
    node_names = [node.name for g in _graphs(model.graph) for node in g.node]
    tensors = _safe_map(iter(tensor_names), set(tensor_names))
    nodes = _safe_map(iter(node_names), set(node_names))
    if not tensors and not nodes:
        shutil.copyfile(src, dst)
        return RenamedNames()

    def rename(name: str) -> str:
        return tensors.get(name, name)

    for g in _graphs(model.graph):
        for value in (*g.input, *g.output, *g.value_info, *g.initializer):
            value.name = rename(value.name)
        for sparse in g.sparse_initializer:
            sparse.values.name = rename(sparse.values.name)
        for node in g.node:
            node.input[:] = [rename(n) for n in node.input]
            node.output[:] = [rename(n) for n in node.output]
            node.name = nodes.get(node.name, node.name)
    onnx.save(model, str(dst))
    return RenamedNames({v: k for k, v in tensors.items()}, {v: k for k, v in nodes.items()})


def _user_name(name: str, tensors: dict[str, str]) -> str:
    if name in tensors:
        return tensors[name]
    match = _SIGNATURE_TENSOR.match(name)
    if match and match.group(2) in tensors:
        return match.group(1) + tensors[match.group(2)] + match.group(3)
    return name


def restore_tflite(flatbuffer: bytes, names: RenamedNames) -> bytes:
    """The TFLite model with the user's names back on its tensors and signature keys. Imports TensorFlow
    (its flatbuffer schema): call it where TensorFlow is loaded already."""
    if not names.tensors:
        return flatbuffer
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))

    def text(value: str | bytes | None) -> str:
        return value.decode("utf-8") if isinstance(value, bytes) else value or ""

    for graph in model.subgraphs or []:
        for tensor in graph.tensors or []:
            tensor.name = _user_name(text(tensor.name), names.tensors)
    for signature in model.signatureDefs or []:
        for mapping in (*(signature.inputs or []), *(signature.outputs or [])):
            mapping.name = _user_name(text(mapping.name), names.tensors)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def restore_tflite_file(path: Path, names: RenamedNames) -> None:
    if names.tensors:
        path.write_bytes(restore_tflite(path.read_bytes(), names))
