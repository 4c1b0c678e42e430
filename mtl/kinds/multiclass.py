"""multiclass: one of C classes, C logits; cross-entropy; accuracy (primary) and macro F1."""

from __future__ import annotations

from mtl.kinds.base import Kind, register


class Multiclass(Kind):
    name = "multiclass"
    primary_metric = "acc"
    numpy_dtype = "int64"

    def random_targets(self, task, n, generator):
        import torch
        return torch.randint(0, len(task.classes), (n,), generator=generator)

    def loss(self, task, output, target, options):
        import torch.nn.functional as F
        return F.cross_entropy(output.float(), target.long(), reduction="none")

    def metrics(self, task):
        import torchmetrics.classification as C
        n = len(task.classes)
        return {"acc": C.MulticlassAccuracy(n, average="micro"), "macro_f1": C.MulticlassF1Score(n, average="macro")}

    def sample_stats(self, task, out, tgt, m):
        import numpy as np
        correct = (out.argmax(-1) == tgt.astype(np.int64)) & m
        return np.stack([correct, m], axis=1).astype(np.float64)

    def best_constant(self, task, labelled, n):
        import torch
        top = int(torch.bincount(labelled.long(), minlength=len(task.classes)).argmax())
        out = torch.full((n, len(task.classes)), -10.0)
        out[:, top] = 10.0
        return out

    def to_prob(self, output):
        import torch
        return torch.softmax(output, dim=-1)

    def from_prob(self, p):
        return p.clamp_min(1e-12).log()

    def decode(self, task, output):
        return task.classes[int(output.argmax())]


register(Multiclass())
