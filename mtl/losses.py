"""Masked per-task losses and the loss-weighting strategies (fixed, uncertainty, DWA).

A sample without a label for a task contributes nothing to that task's loss; a batch with no label
for a task gives that task a loss of exactly 0 (never NaN) and no gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mtl.tasks import Task

REGRESSION_LOSSES = {"l1": F.l1_loss, "mse": F.mse_loss, "smooth_l1": F.smooth_l1_loss}


def masked_loss(task: Task, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                regression_loss: str = "l1") -> torch.Tensor:
    """Mean loss over the labelled samples of the batch: BCE-with-logits (binary, multilabel), CE
    (multiclass), L1/MSE/smooth-L1 (regression)."""
    if task.kind == "multiclass":
        per = F.cross_entropy(output.float(), target.long(), reduction="none")
    elif task.kind in ("binary", "multilabel"):
        per = F.binary_cross_entropy_with_logits(output.float(), target.float(), reduction="none")
        if task.kind == "multilabel":
            per = per.mean(dim=-1)
    else:
        per = REGRESSION_LOSSES[regression_loss](output.float(), target.float(), reduction="none")
    m = mask.to(per.dtype)
    # where() rather than multiply: a placeholder target can never leak a NaN/inf into the sum
    return torch.where(mask, per, torch.zeros_like(per)).sum() / m.sum().clamp(min=1.0)


def task_losses(tasks: list[Task], outputs: dict, targets: dict, masks: dict,
                regression_loss: str = "l1") -> dict[str, torch.Tensor]:
    return {t.name: masked_loss(t, outputs[t.name], targets[t.name], masks[t.name], regression_loss)
            for t in tasks}


class Weighting(nn.Module):
    """Turns per-task losses into one total. `weights()` reports the weights in force."""

    def __init__(self, tasks: list[Task]):
        super().__init__()
        self.task_names = [t.name for t in tasks]

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        w = self.weights()
        return sum(w[k] * losses[k] for k in self.task_names)

    def weights(self) -> dict[str, float]:
        raise NotImplementedError

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """Called with each epoch's mean *unweighted* train loss per task."""


class FixedWeighting(Weighting):
    """Per-task constant weights from config (default 1: the seeds' plain sum)."""

    def __init__(self, tasks: list[Task], weights: dict[str, float] | None = None):
        super().__init__(tasks)
        weights = weights or {}
        unknown = set(weights) - set(self.task_names)
        if unknown:
            raise ValueError(f"loss weights for unknown task(s): {', '.join(sorted(unknown))}")
        self._w = {k: float(weights.get(k, 1.0)) for k in self.task_names}

    def weights(self) -> dict[str, float]:
        return dict(self._w)


class UncertaintyWeighting(Weighting):
    """Kendall, Gal & Cipolla 2018, "Multi-Task Learning Using Uncertainty to Weigh Losses".

    One learnable s_k = log sigma_k^2 per task (put it in the optimizer). With sigma^2 = exp(s):
      regression      L / (2 sigma^2) + log sigma  = 0.5 exp(-s) L + 0.5 s   (paper eq. 5/7)
      classification  L / sigma^2     + log sigma  = exp(-s) L + 0.5 s       (paper eq. 10, using the
                                                                            approximation of eq. 12)
    """

    def __init__(self, tasks: list[Task], init_log_var: float = 0.0):
        super().__init__(tasks)
        self.regression = {t.name: t.kind == "regression" for t in tasks}
        self.log_var = nn.Parameter(torch.full((len(tasks),), float(init_log_var)))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for i, k in enumerate(self.task_names):
            s = self.log_var[i]
            factor = 0.5 if self.regression[k] else 1.0
            total = total + factor * torch.exp(-s) * losses[k] + 0.5 * s
        return total

    def weights(self) -> dict[str, float]:
        s = self.log_var.detach()
        return {k: (0.5 if self.regression[k] else 1.0) * math.exp(-float(s[i]))
                for i, k in enumerate(self.task_names)}


class DWAWeighting(Weighting):
    """Dynamic Weight Average, Liu, Johns & Davison 2019 (End-to-End Multi-Task Learning with Attention), eq. 7.

    lambda_k(t) = K exp(w_k(t-1)/T) / sum_i exp(w_i(t-1)/T),  w_k(t-1) = L_k(t-1) / L_k(t-2),
    with L_k the epoch's mean unweighted train loss; lambda_k = 1 for the first two epochs.
    """

    def __init__(self, tasks: list[Task], temperature: float = 2.0):
        super().__init__(tasks)
        self.temperature = float(temperature)
        self.history: list[dict[str, float]] = []
        self._w = {k: 1.0 for k in self.task_names}

    def weights(self) -> dict[str, float]:
        return dict(self._w)

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        self.history.append(dict(mean_losses))
        if len(self.history) < 2:
            return
        prev, prev2 = self.history[-1], self.history[-2]
        # a task with no labelled batch has loss 0: treat its ratio as 1 (no change)
        ratios = torch.tensor([prev[k] / prev2[k] if prev2[k] > 0 else 1.0 for k in self.task_names])
        lam = len(self.task_names) * torch.softmax(ratios / self.temperature, dim=0)
        self._w = {k: float(lam[i]) for i, k in enumerate(self.task_names)}


def make_weighting(kind: str, tasks: list[Task], loss_weights: dict | None = None,
                   temperature: float = 2.0) -> Weighting:
    if kind == "fixed":
        return FixedWeighting(tasks, loss_weights)
    if kind == "uncertainty":
        return UncertaintyWeighting(tasks)
    if kind == "dwa":
        return DWAWeighting(tasks, temperature)
    raise ValueError(f"unknown weighting '{kind}' (fixed, uncertainty, dwa)")
