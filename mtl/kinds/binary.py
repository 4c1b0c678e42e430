"""binary: two classes, one logit (class 1 when > 0); BCE-with-logits; accuracy (primary) and macro F1."""

from __future__ import annotations

from mtl.kinds.base import Kind, register


class Binary(Kind):
    name = "binary"
    primary_metric = "acc"
    min_classes = max_classes = 2

    def random_targets(self, task, n, generator):
        import torch
        return (torch.rand(n, generator=generator) > 0.5).float()

    def out_dim(self, task):
        return 1

    def head_output(self, task, y):
        return y.squeeze(-1)

    def loss(self, task, output, target, options):
        import torch.nn.functional as F
        return F.binary_cross_entropy_with_logits(output.float(), target.float(), reduction="none")

    def metrics(self, task):
        import torchmetrics.classification as C
        return {"acc": C.BinaryAccuracy(), "macro_f1": C.MulticlassF1Score(2, average="macro")}

    def metric_inputs(self, metric_name, output, target):
        import torch
        if metric_name == "macro_f1":
            return (output > 0).long(), target.long()
        return torch.sigmoid(output), target.long()

    def sample_stats(self, task, out, tgt, m):
        import numpy as np
        correct = ((out > 0).astype(np.int64) == tgt.astype(np.int64)) & m
        return np.stack([correct, m], axis=1).astype(np.float64)

    def best_constant(self, task, labelled, n):
        import torch
        top = int(torch.bincount(labelled.long(), minlength=2).argmax())
        return torch.full((n,), 10.0 if top == 1 else -10.0)

    def to_prob(self, output):
        import torch
        return torch.sigmoid(output)

    def class_probs(self, task, output):
        import torch
        p = torch.sigmoid(output.reshape(-1))  # the head's one logit is the second class's
        return torch.stack([1 - p, p], dim=1)

    def from_prob(self, p):
        import torch
        return torch.logit(p.clamp(1e-6, 1 - 1e-6))

    def decode(self, task, output):
        return task.classes[int(output.reshape(()) > 0)]


register(Binary())
