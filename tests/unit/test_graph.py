from __future__ import annotations

from edgepack.analysis.graph import peak_live_bytes


def test_peak_live_bytes_chain_frees_dead_tensors():
    # x(4) -> a(8) -> b(2) -> y(1): at a's node x and a live (12); at b's, a and b (10); at y's, b+y (3)
    steps = [(["x"], ["a"]), (["a"], ["b"]), (["b"], ["y"])]
    sizes = {"x": 4, "a": 8, "b": 2, "y": 1}
    assert peak_live_bytes(steps, sizes, ["x"], ["y"]) == 12


def test_peak_live_bytes_keeps_skip_connections_alive():
    # residual: x -> a -> b; add(x, b) -> y. x stays live until the add.
    steps = [(["x"], ["a"]), (["a"], ["b"]), (["x", "b"], ["y"])]
    sizes = {"x": 10, "a": 10, "b": 10, "y": 10}
    assert peak_live_bytes(steps, sizes, ["x"], ["y"]) == 30


def test_an_onnx2tf_failure_names_the_onnx_node_it_failed_on():
    from edgepack.convert.errors import failing_node, last_error_line

    text = ("\x1b[31mERROR:\x1b[0m The trace log is below.\nValueError: Exception encountered when calling layer "
            "\"tf.concat_21\" (type TFOpLambda).\n\x1b[31mERROR:\x1b[0m onnx_op_name: /model.22/Concat_3\n"
            "\x1b[31mERROR:\x1b[0m Read this and deal with it.")
    assert last_error_line(text).startswith("ValueError: Exception encountered")
    assert failing_node(text) == " (at ONNX node '/model.22/Concat_3')"
    assert failing_node("no node here") == ""
