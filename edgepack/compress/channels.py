"""Structured pruning with Torch-Pruning: whole channels go, so the file, the RAM and the milliseconds
shrink, not only a MAC count.

The pruning is data: a history of (layer, output-or-input channels, indices) that rebuilds the pruned
model from the original (``replay``). ``prune_to_budget`` finds, by bisection, the smallest pruning
whose *real file* (exported, and quantized when asked) fits the budget.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepack.errors import EdgepackError, first_line

History = list[tuple[str, bool, list[int]]]


class PruningError(EdgepackError):
    """The model cannot be pruned as asked (an op Torch-Pruning cannot follow, or a budget out of reach)."""


@dataclass
class PrunedModel:
    module: Any
    ratio: float
    history: History
    protected: list[str] = field(default_factory=list)  # layers the sensitivity scan kept whole

    def history_json(self) -> list[list[Any]]:
        return [[name, bool(out), [int(i) for i in idx]] for name, out, idx in self.history]


def count_params(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def _output_layers(module: Any, example: tuple[Any, ...]) -> list[Any]:
    """Layers whose output channels are the model's contract: those writing its outputs (and, in a
    module built from ONNX, those read by a fixed-size Reshape, Slice or Split)."""
    import torch

    if hasattr(module, "head_layers"):
        return list(module.head_layers())
    outputs: dict[int, Any] = {}

    def record(layer: Any, _inputs: Any, output: Any) -> None:
        outputs[id(layer)] = output

    hooks = [m.register_forward_hook(record) for m in module.modules()
             if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)]
    with torch.no_grad():
        final = module(*example)
    for hook in hooks:
        hook.remove()
    finals = list(final) if isinstance(final, tuple | list) else [final]
    return [m for m in module.modules() if id(m) in outputs and any(outputs[id(m)] is f for f in finals)] or \
        [m for m in module.modules() if isinstance(m, torch.nn.Linear | torch.nn.Conv2d)][-1:]


def _importance(kind: str) -> Any:
    import torch_pruning as tp

    if kind == "taylor":
        return tp.importance.GroupTaylorImportance()
    if kind == "magnitude":
        return tp.importance.GroupMagnitudeImportance(p=2)
    raise PruningError(f"unknown importance '{kind}'", "use magnitude or taylor")


#: Channel counts are kept multiples of this: kernels block channels by 4-16 (NEON, AVX, ONNX Runtime's
#: NCHWc layouts); an odd count falls off the fast path, and fewer MACs can then cost more milliseconds.
ROUND_TO = 8


def prune(module: Any, example: tuple[Any, ...], ratio: float, *, importance: str = "magnitude",
          protected: list[str] | None = None, calib: np.ndarray | None = None,
          round_to: int | None = ROUND_TO) -> PrunedModel:
    """Remove ``ratio`` of the channels of every prunable group (the output layer and ``protected``
    layers keep theirs), keeping channel counts multiples of ``round_to``. Taylor importance needs
    ``calib`` (it back-propagates the outputs' norm)."""
    import torch
    import torch_pruning as tp

    model = copy.deepcopy(module).eval()
    names = {m: n for n, m in model.named_modules()}
    ignored = _output_layers(model, example) + [m for m, n in names.items() if n in (protected or [])]
    try:
        pruner = tp.pruner.MetaPruner(model, example, importance=_importance(importance), pruning_ratio=ratio,
                                      ignored_layers=ignored, round_to=round_to)
        if importance == "taylor":
            if calib is None:
                raise PruningError("Taylor importance needs calibration data", "pass --calib")
            model.zero_grad()
            batch = calib[:64]
            if batch.ndim == example[0].dim() + 1:  # samples that each keep their batch-1 axis
                batch = batch.reshape(-1, *batch.shape[2:])
            out = model(torch.from_numpy(batch))
            sum(o.float().pow(2).sum() for o in (out if isinstance(out, tuple | list) else [out])).backward()
        pruner.step()
    except PruningError:
        raise
    except Exception as exc:  # Torch-Pruning raises what the traced op raised
        raise PruningError(f"Torch-Pruning cannot prune this model: {first_line(exc, with_type=True)}",
                           "a layer or op it cannot follow; try --ratio 0 or another model") from None
    model.zero_grad(set_to_none=True)
    _same_outputs(module, model, example)
    history = pruner.pruning_history()
    return PrunedModel(model.eval(), ratio if history else 0.0, history, list(protected or []))


def _shapes(module: Any, example: tuple[Any, ...]) -> list[tuple[int, ...]]:
    import torch

    with torch.no_grad():
        out = module.eval()(*example)
    return [tuple(o.shape) for o in (out if isinstance(out, tuple | list) else [out])]


def _same_outputs(original: Any, pruned: Any, example: tuple[Any, ...]) -> None:
    """A pruned model must run and keep every output's shape (an op that fixes channel counts, which
    Torch-Pruning did not follow, breaks one or the other)."""
    try:
        got = _shapes(pruned, example)
    except Exception as exc:  # whatever the op with stale sizes raises
        raise PruningError(f"the pruned model no longer runs: {first_line(exc, with_type=True)}",
                           "an op fixes channel counts that pruning cannot follow; build without pruning") from None
    want = _shapes(original, example)
    if got != want:
        raise PruningError(f"pruning changed the output shapes {want} to {got}",
                           "an op fixes channel counts that pruning cannot follow; build without pruning")


def replay(module: Any, example: tuple[Any, ...], history: History) -> Any:
    """Rebuild the pruned model from the original and its pruning history."""
    import torch_pruning as tp

    model = copy.deepcopy(module).eval()
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example)
    graph.load_pruning_history([(name, out, list(idx)) for name, out, idx in history])
    return model


def sensitivity_scan(module: Any, example: tuple[Any, ...], ratio: float, score: Callable[[Any], float],
                     importance: str = "magnitude", time_budget_s: float = float("inf"),
                     ) -> tuple[list[tuple[str, float]], int]:
    """Each prunable layer pruned alone at ``ratio``: the score it loses (higher: more sensitive),
    most lossy first, and how many layers there were. Layers are scanned until the time budget is
    spent (a deep detector has hundreds); the unscanned ones are simply not protected."""
    import time

    import torch

    start = time.perf_counter()
    base = score(module)
    final = {id(m) for m in _output_layers(module, example)}
    layers = [n for n, m in module.named_modules()
              if isinstance(m, torch.nn.Conv2d | torch.nn.Linear) and id(m) not in final]
    costs = []
    for name in layers:
        if time.perf_counter() - start > time_budget_s:
            break
        others = [n for n in layers if n != name]
        try:
            solo = prune(module, example, ratio, importance="magnitude" if importance == "taylor" else importance,
                         protected=others)
        except PruningError:
            continue
        costs.append((name, base - score(solo.module)))
    return sorted(costs, key=lambda c: c[1], reverse=True), len(layers)


def prune_to_budget(module: Any, example: tuple[Any, ...], budget_bytes: int, size_of: Callable[[Any], int], *,
                    importance: str = "magnitude", protected: list[str] | None = None,
                    calib: np.ndarray | None = None, max_ratio: float = 0.95, steps: int = 12,
                    round_to: int | None = ROUND_TO) -> PrunedModel:
    """The smallest pruning ratio whose artifact (``size_of`` measures the real file) fits the budget."""
    if size_of(module) <= budget_bytes:
        return PrunedModel(copy.deepcopy(module).eval(), 0.0, [], list(protected or []))
    low, high = 0.0, max_ratio
    best = prune(module, example, high, importance=importance, protected=protected, calib=calib,
                 round_to=round_to)
    while not best.history and high > 0.1:  # rounding can make a very high ratio prune nothing at all
        high -= 0.05
        best = prune(module, example, high, importance=importance, protected=protected, calib=calib,
                     round_to=round_to)
    if size_of(best.module) > budget_bytes:
        raise PruningError(f"even {max_ratio:.0%} of the channels pruned, the model is "
                           f"{size_of(best.module) / 1e6:.2f} MB, over the {budget_bytes / 1e6:.2f} MB budget",
                           "quantize too (--precision int8) or raise the budget")
    for _ in range(steps):
        middle = (low + high) / 2
        candidate = prune(module, example, middle, importance=importance, protected=protected, calib=calib,
                          round_to=round_to)
        if size_of(candidate.module) <= budget_bytes:
            high, best = middle, candidate
        else:
            low = middle
    return best


def onnx_size(module: Any, example: tuple[Any, ...], input_names: list[str]) -> int:
    """Bytes of the module's ONNX export (weights inside the file)."""
    from edgepack.convert.torch_to_onnx import export_to_onnx

    with tempfile.TemporaryDirectory(prefix="edgepack-size-") as tmp:
        path = export_to_onnx(module, example, Path(tmp) / "m.onnx", input_names=input_names).path
        return path.stat().st_size
