"""regression: one number (age in years). The head predicts center + scale * z, starting at the train
mean (z = 0), so loss and metric stay in the target's unit. Loss: the kind's option `loss` (l1, mse,
smooth_l1; `--set kind_options.regression.loss=smooth_l1`); metric: MAE (primary, lower is better)."""

from __future__ import annotations

import math

from mtl.kinds.base import Kind, LabelError, register
from mtl.params import Param

REGRESSION_LOSSES = ("l1", "mse", "smooth_l1")


class Regression(Kind):
    name = "regression"
    primary_metric = "mae"
    direction = "minimize"
    has_classes = False
    uncertainty_factor = 0.5
    options = {"loss": Param("l1", choices=REGRESSION_LOSSES)}

    def fit(self, task, train_cells):
        """center/scale from the train split (mean, std) unless the spec sets them."""
        import numpy as np
        if task.center != 0.0 or task.scale != 1.0:
            return task
        values = []
        for c in train_cells:
            try:
                v = float(c)
            except ValueError:
                continue
            if math.isfinite(v):
                values.append(v)
        if len(values) < 2:
            return task
        return task.replace(center=float(np.mean(values)), scale=float(np.std(values)) or 1.0)

    def describe(self, task, cells):
        vals = [float(c) for c in cells]
        if not vals:
            return "no values"
        return f"min {min(vals):.3g}, mean {sum(vals) / len(vals):.3g}, max {max(vals):.3g}"

    def encode(self, task, cell):
        cell = cell.strip()
        try:
            value = float(cell)
        except ValueError:
            raise LabelError(f"task '{task.name}': '{cell}' is not a number") from None
        if not math.isfinite(value):
            raise LabelError(f"task '{task.name}': value '{cell}' is not finite")
        return value

    def random_targets(self, task, n, generator):
        import torch
        return task.center + task.scale * torch.randn(n, generator=generator)

    def out_dim(self, task):
        return 1

    def init_head(self, task, linear):
        import torch.nn as nn
        nn.init.zeros_(linear.weight)  # start exactly at the train mean: z = 0
        nn.init.zeros_(linear.bias)

    def head_output(self, task, y):
        return task.center + task.scale * y.squeeze(-1)

    def loss(self, task, output, target, options):
        import torch.nn.functional as F
        fn = {"l1": F.l1_loss, "mse": F.mse_loss, "smooth_l1": F.smooth_l1_loss}[options["loss"]]
        return fn(output.float(), target.float(), reduction="none")

    def metrics(self, task):
        from torchmetrics.regression import MeanAbsoluteError
        return {"mae": MeanAbsoluteError()}

    def sample_stats(self, task, out, tgt, m):
        import numpy as np
        return np.stack([np.where(m, np.abs(out - tgt), 0.0), m.astype(np.float64)], axis=1)

    def score_scale(self, task):
        return task.scale

    def best_constant(self, task, labelled, n):
        import torch
        value = labelled.float().median() if len(labelled) else torch.tensor(task.center)
        return torch.full((n,), float(value))

    def decode(self, task, output):
        return float(output.reshape(()))

    def cell_value(self, cell):
        return float(cell)

    def format(self, value):
        return f"{value:.1f}"


register(Regression())
