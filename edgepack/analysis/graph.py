"""The format-neutral summary of a model graph that ``inspect``, the predictor and the search share."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from edgepack.formats import ArtifactFormat


@dataclass(frozen=True)
class Layer:
    """One node/op of the graph, in execution order.

    ``macs``: multiply-accumulates (a Conv's ``out_elems * Cin/groups * kH * kW``; 0 for ops without a
    matrix or convolution product). ``params``: elements of constant weights the node reads.
    ``input_bytes``/``output_bytes``: activation traffic; ``weight_bytes``: constant traffic.
    """

    name: str
    op: str
    macs: int
    params: int
    weight_bytes: int
    input_bytes: int
    output_bytes: int
    precision: str  # "fp32", "fp16", "int8": the arithmetic this layer runs in
    domain: str = ""  # ONNX: the op's domain when it is not the standard one (a custom op's library)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class GraphSummary:
    """What a model computes, independent of its file format."""

    graph_format: ArtifactFormat  # the vocabulary of ``op`` names (ONNX or TFLite)
    layers: list[Layer]
    params: int  # unique constant weight elements in the whole graph
    weight_bytes: int
    peak_activation_bytes: int
    input_shapes: dict[str, tuple[int, ...]]
    notes: list[str] = field(default_factory=list)
    #: TFLite custom ops that no builtin kernel runs but TFLite's default (XNNPACK) delegate does
    delegate_ops: list[str] = field(default_factory=list)
    #: how weights are stored when not as the arithmetic runs: "fp16" (DEQUANTIZE at load), "sparse"
    weight_storage: list[str] = field(default_factory=list)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def op_histogram(self) -> dict[str, int]:
        return dict(Counter(layer.op for layer in self.layers).most_common())

    @property
    def precision(self) -> str:
        """The model's dominant arithmetic, weighted by MACs (or by layer count when there are none)."""
        weights: Counter[str] = Counter()
        for layer in self.layers:
            weights[layer.precision] += layer.macs or 1
        return weights.most_common(1)[0][0] if weights else "fp32"

    @property
    def precision_text(self) -> str:
        """The arithmetic, and the weights' storage where it differs: "fp32 compute, fp16 weights"."""
        if not self.weight_storage:
            return self.precision
        return f"{self.precision} compute, {' and '.join(self.weight_storage)} weights"


def peak_live_bytes(
    steps: list[tuple[list[str], list[str]]], sizes: dict[str, int], graph_inputs: list[str],
    graph_outputs: list[str],
) -> int:
    """Largest sum of live activation tensors over an execution order.

    ``steps``: (activation inputs, outputs) per node in order. A tensor lives from the step that
    makes it (graph inputs from the start) to its last reader (graph outputs to the end); a node's
    inputs and outputs are live together. Constants must not be in ``sizes``. An estimate: real
    runtimes reuse buffers in place and some keep more alive.
    """
    last_use: dict[str, int] = {}
    for index, (inputs, _outputs) in enumerate(steps):
        for name in inputs:
            last_use[name] = index
    for name in graph_outputs:
        last_use[name] = len(steps)
    live = {name for name in graph_inputs if name in sizes}
    peak = sum(sizes[n] for n in live)
    for index, (_inputs, outputs) in enumerate(steps):
        live.update(n for n in outputs if n in sizes)
        peak = max(peak, sum(sizes[n] for n in live))
        live = {n for n in live if last_use.get(n, -1) > index}
    return peak
