"""multilabel: any subset of C classes (cells like `Red|Gold`), C logits; per-label BCE averaged over
labels; micro F1 (primary) and per-label accuracy (the seed's colour "acc"); captions list the top k."""

from __future__ import annotations

from mtl.kinds.base import MULTILABEL_SEP, Kind, LabelError, register


class Multilabel(Kind):
    name = "multilabel"
    primary_metric = "f1"

    def cell_labels(self, cells):
        return [x.strip() for cell in cells for x in cell.split(MULTILABEL_SEP)]

    def encode(self, task, cell):
        cell = cell.strip()
        labels = [p.strip() for p in cell.split(MULTILABEL_SEP)]
        bad = [p for p in labels if p not in task.classes]
        if bad:
            raise LabelError(f"task '{task.name}': unknown label '{bad[0]}' in '{cell}' (known: {', '.join(task.classes)})")
        return [1.0 if c in labels else 0.0 for c in task.classes]

    def missing_target(self, task):
        return [0.0] * len(task.classes)

    def random_targets(self, task, n, generator):
        import torch
        return (torch.rand(n, len(task.classes), generator=generator) > 0.6).float()

    def loss(self, task, output, target, options):
        import torch.nn.functional as F
        return F.binary_cross_entropy_with_logits(output.float(), target.float(), reduction="none").mean(dim=-1)

    def metrics(self, task):
        import torchmetrics.classification as C
        n = len(task.classes)
        return {"f1": C.MultilabelF1Score(n, average="micro"), "label_acc": C.MultilabelAccuracy(n, average="micro")}

    def metric_inputs(self, metric_name, output, target):
        import torch
        return torch.sigmoid(output), target.long()

    def sample_stats(self, task, out, tgt, m):
        import numpy as np
        pred, pos = out > 0, tgt > 0.5
        tp = (pred & pos).sum(1) * m
        fp = (pred & ~pos).sum(1) * m
        fn = (~pred & pos).sum(1) * m
        return np.stack([tp, fp, fn], axis=1).astype(np.float64)

    def metric_from_sums(self, sums):
        import numpy as np
        with np.errstate(invalid="ignore", divide="ignore"):
            tp, fp, fn = sums[..., 0], sums[..., 1], sums[..., 2]
            denom = 2 * tp + fp + fn
            return np.where(denom > 0, 2 * tp / np.where(denom > 0, denom, 1), np.nan)

    def best_constant(self, task, labelled, n):
        return (best_label_set(labelled.float()) * 20.0 - 10.0).expand(n, -1).clone()

    def to_prob(self, output):
        import torch
        return torch.sigmoid(output)

    def from_prob(self, p):
        import torch
        return torch.logit(p.clamp(1e-6, 1 - 1e-6))

    def decode(self, task, output):
        """Every label over the threshold (probability 0.5, as F1 scores it), most probable first; the
        most probable alone when none is."""
        order = output.argsort(descending=True).tolist()
        return [task.classes[i] for i in order if float(output[i]) > 0] or [task.classes[order[0]]]

    def cell_value(self, cell):
        return [p.strip() for p in cell.split(MULTILABEL_SEP)]

    def to_cell(self, value):
        return MULTILABEL_SEP.join(value)

    def format(self, value):
        return "[" + ", ".join(f"'{v}'" for v in value) + "]"  # the write-up's caption form


def best_label_set(y):
    """The constant 0/1 label vector with the highest micro-F1 against the rows of y (n, C): searched
    exhaustively up to 16 labels, else over frequency-ranked prefixes."""
    import torch
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


register(Multilabel())
