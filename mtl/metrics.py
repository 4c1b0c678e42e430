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


def majority_baseline(task: Task, train_targets: torch.Tensor, train_mask: torch.Tensor,
                      val_targets: torch.Tensor, val_mask: torch.Tensor) -> float:
    """Primary val metric of a constant predictor fitted on train: the majority class (acc), the labels
    present in at least half of train (or the most frequent one) for multilabel F1, the median for MAE."""
    tr = torch.as_tensor(train_targets)[torch.as_tensor(train_mask)]
    va = torch.as_tensor(val_targets)[torch.as_tensor(val_mask)]
    if len(va) == 0 or len(tr) == 0:
        return math.nan
    if task.kind == "regression":
        return float((va.float() - tr.float().median()).abs().mean())
    if task.kind == "multilabel":
        freq = tr.float().mean(0)
        pred = (freq >= 0.5).float() if (freq >= 0.5).any() else (freq == freq.max()).float()
        tp = (va * pred).sum()
        fp = ((1 - va) * pred).sum()
        fn = (va * (1 - pred)).sum()
        return float(2 * tp / (2 * tp + fp + fn))
    majority = torch.bincount(tr.long(), minlength=len(task.classes)).argmax()
    return float((va.long() == majority).float().mean())
