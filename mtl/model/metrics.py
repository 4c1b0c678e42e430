"""Per-task validation metrics with torchmetrics; samples without a label are skipped.

binary/multiclass: `acc` (primary) and `macro_f1`; multilabel: `f1` (primary, micro-averaged over
labels) and `label_acc` (per-label accuracy, the seed's colour "acc"); regression: `mae` (primary).
"""

from __future__ import annotations

import math

import torch

from mtl.tasks import Task


class TaskMetrics:
    """Accumulates every task's metrics over batches; `compute()` -> {"<task>/<metric>": value}."""

    def __init__(self, tasks: list[Task]):
        self.tasks = tasks
        self.metrics = {t.name: t.kind_impl.metrics(t) for t in tasks}
        self.counts = {t.name: 0 for t in tasks}

    @torch.no_grad()
    def update(self, outputs: dict, targets: dict, masks: dict) -> None:
        for t in self.tasks:
            m = masks[t.name].bool().cpu()
            if not m.any():
                continue
            out = outputs[t.name].detach().float().cpu()[m]
            tgt = targets[t.name].cpu()[m]
            self.counts[t.name] += int(m.sum())
            for name, metric in self.metrics[t.name].items():
                metric.update(*t.kind_impl.metric_inputs(name, out, tgt))

    def compute(self) -> dict[str, float]:
        """Task without a single labelled sample -> NaN (never a made-up 0)."""
        out = {}
        for t in self.tasks:
            for name, metric in self.metrics[t.name].items():
                out[f"{t.name}/{name}"] = float(metric.compute()) if self.counts[t.name] else math.nan
        return out


def best_constant(task: Task, targets, mask) -> torch.Tensor:
    """Head outputs (one row per sample) of the best constant predictor *on this split*, the baseline every
    table compares against (the kind decides: most frequent class, best label set, median). Chosen with
    the split's own labels, so it is an optimistic baseline."""
    y = torch.as_tensor(targets)
    m = torch.as_tensor(mask, dtype=torch.bool)
    return task.kind_impl.best_constant(task, y[m], len(y))


def constant_score(task: Task, targets, mask) -> float:
    """The primary metric of `best_constant` on the same split."""
    m = TaskMetrics([task])
    m.update({task.name: best_constant(task, targets, mask)}, {task.name: torch.as_tensor(targets)},
             {task.name: torch.as_tensor(mask, dtype=torch.bool)})
    return m.compute()[task.metric_key]
