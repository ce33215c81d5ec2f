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
