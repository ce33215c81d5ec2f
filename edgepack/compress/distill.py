"""Knowledge distillation: the unpruned model teaches the pruned one on the user's (unlabelled) data.

Every output of the model is taught, each by its kind (:mod:`edgepack.fidelity`): class scores and
sequences by the KL divergence of temperature-softened distributions (times T^2), maps and values by
the squared error relative to the teacher's mean square (so that pixel-scale boxes do not drown
0-1 scores); plus cross-entropy on the first scores output when labels are given. Stops at
``epochs``, at the time budget, or when the held-out loss has not improved for ``patience`` epochs;
the student with the lowest held-out loss is returned. (Agreement is reported, but it is too coarse
to stop on: it can sit at 100% while the outputs drift.)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgepack.fidelity import OutputDrift, drift, infer_kind
from edgepack.progress import verbose

#: epochs at most. Measured (benchmarks/pruning_axis.py): a digits CNN pruned to 40% of its size on 240
#: unlabelled samples lost 1.7 points at 10 epochs, 0.6 at 30 with mixup; it stops early when the
#: held-out loss stalls, and at the time budget
DISTILL_EPOCHS = 30


@dataclass
class DistillReport:
    epochs_run: int
    seconds: float
    agreement_by_epoch: list[float] = field(default_factory=list)  # closeness(), see there
    held_out_loss_by_epoch: list[float] = field(default_factory=list)
    stopped_because: str = ""


def outputs_of(module: Any, x: Any) -> list[Any]:
    """The module's outputs on a tensor (or array) batch, always as a list."""
    import torch

    out = module(torch.from_numpy(x) if isinstance(x, np.ndarray) else x)
    return list(out) if isinstance(out, tuple | list) else [out]


def output_names(module: Any, count: int) -> list[str]:
    names = list(getattr(module, "output_names", []) or [])
    return names if len(names) == count else [f"output{i}" for i in range(count)]


def output_drifts(teacher: Any, student: Any, x: np.ndarray, kinds: dict[str, str] | None = None) -> list[OutputDrift]:
    """Each output of the student against the teacher's on ``x``, by the output's kind."""
    import torch

    with torch.no_grad():
        ref = [o.double().numpy() for o in outputs_of(teacher, x)]
        got = [o.double().numpy() for o in outputs_of(student, x)]
    names = output_names(teacher, len(ref))
    return [drift(n, r, g, (kinds or {}).get(n)) for n, r, g in zip(names, ref, got, strict=True)]


def closeness(drifts: list[OutputDrift]) -> float:
    """One figure in [0, 1] for the worst output: its agreement (scores, sequences, maps) or one minus
    its relative error on strong values (values)."""
    return min((o.agreement if o.agreement is not None else max(0.0, 1.0 - o.channel_error_rel))
               for o in drifts) if drifts else 1.0


def worst(drifts: list[OutputDrift]) -> OutputDrift | None:
    return min(drifts, key=lambda o: closeness([o]), default=None)


def agreement(teacher: Any, student: Any, x: np.ndarray) -> float:
    """:func:`closeness` of the student to the teacher on ``x`` (top-1 agreement for a classifier)."""
    return closeness(output_drifts(teacher, student, x))


def _kinds(teacher: Any, x: np.ndarray) -> list[str]:
    import torch

    with torch.no_grad():
        ref = [o.double().numpy() for o in outputs_of(teacher, x)]
    return [infer_kind(n, r) for n, r in zip(output_names(teacher, len(ref)), ref, strict=True)]


def _loss(student_out: list[Any], teacher_out: list[Any], kinds: list[str], temperature: float) -> Any:
    import torch
    import torch.nn.functional as F

    total = 0.0
    for s, t, kind in zip(student_out, teacher_out, kinds, strict=True):
        if kind in ("scores", "sequence"):
            classes = t.shape[-1] if t.shape[-1] > 1 else t[0].numel()
            s2, t2 = s.reshape(-1, classes), t.reshape(-1, classes)
            if bool((t2 >= 0).all()) and bool(torch.allclose(t2.sum(1), torch.ones(1), atol=1e-3)):
                s2, t2 = s2.clamp_min(1e-8).log(), t2.clamp_min(1e-8).log()  # probabilities: back to logits
            total = total + F.kl_div(F.log_softmax(s2 / temperature, 1), F.softmax(t2 / temperature, 1),
                                     reduction="batchmean") * temperature ** 2
        else:
            total = total + F.mse_loss(s, t) / (t.pow(2).mean() + 1e-12)
    return total


def _mixed(x: Any, generator: Any) -> Any:
    """Each sample blended with another of the batch (weights uniform in [0, 1]): inputs near the data
    that the student has not seen, for the teacher to answer (mixup, without labels)."""
    import torch

    weight = torch.rand(len(x), *([1] * (x.dim() - 1)), generator=generator)
    return weight * x + (1 - weight) * x[torch.randperm(len(x), generator=generator)]


def held_out_loss(teacher: Any, student: Any, x: np.ndarray, temperature: float,
                  kinds: list[str] | None = None) -> float:
    import torch

    with torch.no_grad():
        t, s = outputs_of(teacher, x), outputs_of(student, x)
        return float(_loss(s, t, kinds or _kinds(teacher, x), temperature))


def distill(teacher: Any, student: Any, x: np.ndarray, *, labels: np.ndarray | None = None,
            held_out: np.ndarray | None = None, epochs: int = 20, temperature: float = 4.0,
            time_budget_s: float = 300.0, patience: int = 4, lr: float = 1e-3, batch: int = 64,
            say: Callable[[str], None] | None = None, mixup: bool = True) -> tuple[Any, DistillReport]:
    """``x``: samples stacked on the first axis, in the model's input layout (no batch-1 axis). ``say``
    gets a line per epoch when detail is wanted (``-v``)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(0)
    if held_out is None or not len(held_out):  # never judge on samples the student trains on
        cut = max(1, len(x) - max(1, len(x) // 5))
        x, held_out = x[:cut], x[cut:]
        labels = labels[:cut] if labels is not None else None
    check = held_out
    student = copy.deepcopy(student)
    teacher = teacher.eval()
    kinds = _kinds(teacher, check)
    labelled = kinds.index("scores") if labels is not None and "scores" in kinds else None
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    inputs = torch.from_numpy(x)
    targets = torch.from_numpy(labels) if labelled is not None and labels is not None else None
    with torch.no_grad():
        soft = outputs_of(teacher, inputs)
    best, best_state, since = held_out_loss(teacher, student.eval(), check, temperature, kinds), \
        copy.deepcopy(student.state_dict()), 0
    report = DistillReport(0, 0.0, [agreement(teacher, student, check)], [best])
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    for epoch in range(1, epochs + 1):
        student.train()
        for idx in torch.randperm(len(inputs), generator=generator).split(batch):
            optimizer.zero_grad()
            out = outputs_of(student, inputs[idx])
            loss = _loss(out, [t[idx] for t in soft], kinds, temperature)
            if mixup and inputs.is_floating_point():  # more data the teacher labels: blends of two samples
                mixed = _mixed(inputs[idx], generator)
                with torch.no_grad():
                    taught = outputs_of(teacher, mixed)
                loss = loss + _loss(outputs_of(student, mixed), taught, kinds, temperature)
            if targets is not None and labelled is not None:
                loss = loss + F.cross_entropy(out[labelled].reshape(len(idx), -1), targets[idx])
            loss.backward()
            optimizer.step()
        score = held_out_loss(teacher, student.eval(), check, temperature, kinds)
        report.agreement_by_epoch.append(agreement(teacher, student, check))
        report.held_out_loss_by_epoch.append(score)
        report.epochs_run = epoch
        if say is not None and verbose():
            say(f"distill epoch {epoch}/{epochs}: held-out loss {score:.4f}, closeness to the original "
                f"{report.agreement_by_epoch[-1]:.2%}")
        if score < best:
            best, best_state, since = score, copy.deepcopy(student.state_dict()), 0
        else:
            since += 1
        if since >= patience:
            report.stopped_because = f"held-out loss did not improve for {patience} epochs"
            break
        if time.perf_counter() - start > time_budget_s:
            report.stopped_because = f"time budget of {time_budget_s:g} s spent"
            break
    else:
        report.stopped_because = f"{epochs} epochs done"
    student.load_state_dict(best_state)
    report.seconds = time.perf_counter() - start
    return student.eval(), report
