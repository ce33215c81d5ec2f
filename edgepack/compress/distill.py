"""Knowledge distillation: the unpruned model teaches the pruned one on the user's (unlabelled) data.

Loss: KL divergence between temperature-softened outputs (times T^2), plus cross-entropy when labels
are given. Stops at ``epochs``, at the time budget, or when the held-out distillation loss has not
improved for ``patience`` epochs; the student with the lowest held-out loss is returned. (Top-1
agreement is reported, but it is too coarse to stop on: it can sit at 100% while the outputs drift.)
"""

from __future__ import annotations

import copy
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class DistillReport:
    epochs_run: int
    seconds: float
    agreement_by_epoch: list[float] = field(default_factory=list)
    held_out_loss_by_epoch: list[float] = field(default_factory=list)
    stopped_because: str = ""


def agreement(teacher: Any, student: Any, x: np.ndarray) -> float:
    import torch

    with torch.no_grad():
        t = teacher(torch.from_numpy(x)).argmax(1)
        s = student(torch.from_numpy(x)).argmax(1)
    return float((t == s).float().mean())


def held_out_loss(teacher: Any, student: Any, x: np.ndarray, temperature: float) -> float:
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        t = teacher(torch.from_numpy(x))
        s = student(torch.from_numpy(x))
        return float(F.kl_div(F.log_softmax(s / temperature, 1), F.softmax(t / temperature, 1),
                              reduction="batchmean")) * temperature ** 2


def distill(teacher: Any, student: Any, x: np.ndarray, *, labels: np.ndarray | None = None,
            held_out: np.ndarray | None = None, epochs: int = 20, temperature: float = 4.0,
            time_budget_s: float = 300.0, patience: int = 4, lr: float = 1e-3, batch: int = 64,
            progress: bool = True) -> tuple[Any, DistillReport]:
    """``x``: samples stacked on the first axis, in the model's input layout (no batch-1 axis)."""
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
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    inputs = torch.from_numpy(x)
    targets = torch.from_numpy(labels) if labels is not None else None
    with torch.no_grad():
        soft = teacher(inputs)
    best, best_state, since = held_out_loss(teacher, student.eval(), check, temperature), \
        copy.deepcopy(student.state_dict()), 0
    report = DistillReport(0, 0.0, [agreement(teacher, student, check)], [best])
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    for epoch in range(1, epochs + 1):
        student.train()
        for idx in torch.randperm(len(inputs), generator=generator).split(batch):
            optimizer.zero_grad()
            out = student(inputs[idx])
            loss = F.kl_div(F.log_softmax(out / temperature, 1), F.softmax(soft[idx] / temperature, 1),
                            reduction="batchmean") * temperature ** 2
            if targets is not None:
                loss = loss + F.cross_entropy(out, targets[idx])
            loss.backward()
            optimizer.step()
        score = held_out_loss(teacher, student.eval(), check, temperature)
        report.agreement_by_epoch.append(agreement(teacher, student, check))
        report.held_out_loss_by_epoch.append(score)
        report.epochs_run = epoch
        if progress:
            print(f"  distill epoch {epoch}/{epochs}: held-out loss {score:.4f}, agreement with the original "
                  f"{report.agreement_by_epoch[-1]:.2%}", file=sys.stderr)
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
