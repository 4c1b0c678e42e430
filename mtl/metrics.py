"""Per-task validation metrics with torchmetrics; samples without a label are skipped.

binary/multiclass: `acc` (primary) and `macro_f1`; multilabel: `f1` (primary, micro-averaged over
labels) and `label_acc` (per-label accuracy, the seed's colour "acc"); regression: `mae` (primary).
"""

from __future__ import annotations

import math

import torch
import torchmetrics.classification as C
from torchmetrics.regression import MeanAbsoluteError

from mtl.tasks import Task


def _metrics_for(task: Task) -> dict:
    n = len(task.classes)
    if task.kind == "binary":
        return {"acc": C.BinaryAccuracy(), "macro_f1": C.MulticlassF1Score(2, average="macro")}
    if task.kind == "multiclass":
        return {"acc": C.MulticlassAccuracy(n, average="micro"), "macro_f1": C.MulticlassF1Score(n, average="macro")}
    if task.kind == "multilabel":
        return {"f1": C.MultilabelF1Score(n, average="micro"), "label_acc": C.MultilabelAccuracy(n, average="micro")}
    return {"mae": MeanAbsoluteError()}


class TaskMetrics:
    """Accumulates every task's metrics over batches; `compute()` -> {"<task>/<metric>": value}."""

    def __init__(self, tasks: list[Task]):
        self.tasks = tasks
        self.metrics = {t.name: _metrics_for(t) for t in tasks}
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
                if t.kind == "binary" and name == "macro_f1":
                    metric.update((out > 0).long(), tgt.long())
                elif t.kind in ("binary", "multilabel"):
                    metric.update(torch.sigmoid(out), tgt.long())
                else:
                    metric.update(out, tgt)

    def compute(self) -> dict[str, float]:
        """Task without a single labelled sample -> NaN (never a made-up 0)."""
        out = {}
        for t in self.tasks:
            for name, metric in self.metrics[t.name].items():
                out[f"{t.name}/{name}"] = float(metric.compute()) if self.counts[t.name] else math.nan
        return out


def best_constant(task: Task, targets, mask) -> torch.Tensor:
    """Head outputs (one row per sample) of the best constant predictor *on this split*, the baseline every
    table compares against: its most frequent class (acc), the label set with the best micro-F1
    (multilabel; searched exhaustively up to 16 labels, else over frequency-ranked prefixes), or its
    median (MAE). Chosen with the split's own labels, so it is an optimistic baseline."""
    y = torch.as_tensor(targets)
    m = torch.as_tensor(mask, dtype=torch.bool)
    n, lab = len(y), y[m]
    if task.kind == "regression":
        value = lab.float().median() if len(lab) else torch.tensor(task.center)
        return torch.full((n,), float(value))
    if task.kind == "multilabel":
        best = _best_label_set(lab.float())
        return (best * 20.0 - 10.0).expand(n, -1).clone()
    counts = torch.bincount(lab.long(), minlength=len(task.classes))
    top = int(counts.argmax())
    if task.kind == "binary":
        return torch.full((n,), 10.0 if top == 1 else -10.0)
    out = torch.full((n, len(task.classes)), -10.0)
    out[:, top] = 10.0
    return out


def _best_label_set(y: torch.Tensor) -> torch.Tensor:
    """The constant 0/1 label vector with the highest micro-F1 against the rows of y (n, C)."""
    n, c = y.shape
    pos = y.sum(0)  # positives per label
    if c <= 16:
        codes = torch.arange(1, 2 ** c)
        sets = ((codes[:, None] >> torch.arange(c)) & 1).float()  # every non-empty label set
    else:
        order = pos.argsort(descending=True)
        sets = torch.zeros(c, c)
        for k in range(c):
            sets[k, order[: k + 1]] = 1.0
    tp = sets @ pos
    fp = n * sets.sum(1) - tp
    fn = pos.sum() - tp
    f1 = 2 * tp / (2 * tp + fp + fn).clamp_min(1e-12)
    return sets[int(f1.argmax())]


def constant_score(task: Task, targets, mask) -> float:
    """The primary metric of `best_constant` on the same split."""
    m = TaskMetrics([task])
    m.update({task.name: best_constant(task, targets, mask)}, {task.name: torch.as_tensor(targets)},
             {task.name: torch.as_tensor(mask, dtype=torch.bool)})
    return m.compute()[task.metric_key]
