"""Tensor and node names onnx2tf cannot take: which are renamed, to what, and that nothing else changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import edgepack
from edgepack.convert.tensor_names import NAMES_FILE, RenamedNames, sanitise_onnx


def _model(path: Path) -> Path:
    weight = numpy_helper.from_array(np.ones((2, 3), np.float32), "fc weight <w>")
    nodes = [helper.make_node("MatMul", ["image <1>", "fc weight <w>"], ["a b"], name="fc 1"),
             helper.make_node("Relu", ["a b"], ["a_b"], name="/block/Relu"),  # the safe form of "a b", taken
             helper.make_node("Identity", ["a_b"], ["input.1:0"], name="id"),
             helper.make_node("Softmax", ["input.1:0"], ['prob"é'], axis=1, name="soft max")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("image <1>", TensorProto.FLOAT, [1, 2])],
                              [helper.make_tensor_value_info('prob"é', TensorProto.FLOAT, [1, 3])], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.save(model, path)
    return path


def test_unsafe_names_are_replaced_uniquely_and_mapped_back(tmp_path: Path) -> None:
    names = sanitise_onnx(_model(tmp_path / "m.onnx"), tmp_path / "safe.onnx")
    assert names.tensors == {"image__1_": "image <1>", "fc_weight__w_": "fc weight <w>", "a_b_2": "a b",
                             "prob__": 'prob"é'}
    assert names.nodes == {"fc_1": "fc 1", "soft_max": "soft max"}
    graph = onnx.load(tmp_path / "safe.onnx").graph
    onnx.checker.check_model(onnx.load(tmp_path / "safe.onnx"))
    assert [i.name for i in graph.input] == ["image__1_"] and [o.name for o in graph.output] == ["prob__"]
    assert [list(n.input) for n in graph.node] == [["image__1_", "fc_weight__w_"], ["a_b_2"], ["a_b"], ["input.1:0"]]
    assert [n.name for n in graph.node] == ["fc_1", "/block/Relu", "id", "soft_max"]  # names onnx2tf takes: kept
    assert graph.initializer[0].name == "fc_weight__w_"


def test_safe_names_give_a_plain_copy_and_an_empty_map(tmp_path: Path) -> None:
    digits = Path(edgepack.__file__).parent / "examples" / "digits_cnn.onnx"  # torch's names: "/conv1/Conv", ...
    names = sanitise_onnx(digits, tmp_path / "copy.onnx")
    assert not names
    assert (tmp_path / "copy.onnx").read_bytes() == digits.read_bytes()


def test_the_map_travels_with_a_saved_model(tmp_path: Path) -> None:
    names = RenamedNames({"prob__": 'prob"é'}, {"soft_max": "soft max"})
    names.save(tmp_path)
    assert (tmp_path / NAMES_FILE).is_file()
    assert RenamedNames.of(tmp_path) == names
    assert not RenamedNames.of(tmp_path / "elsewhere")
