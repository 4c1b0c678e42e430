"""Masked per-task losses (each kind's loss, mtl/kinds); the methods that combine them are in mtl/methods.

A sample without a label for a task contributes nothing to that task's loss; a batch with no label
for a task gives that task a loss of exactly 0 (never NaN) and no gradient.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from mtl.tasks import Task


def masked_loss(task: Task, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                regression_loss: str = "l1") -> torch.Tensor:
    """Mean of the kind's per-sample loss (mtl/kinds) over the labelled samples of the batch."""
    per = task.spec.loss(task, output, target, SimpleNamespace(regression_loss=regression_loss))
    m = mask.to(per.dtype)
    # where() rather than multiply: a placeholder target can never leak a NaN/inf into the sum
    return torch.where(mask, per, torch.zeros_like(per)).sum() / m.sum().clamp(min=1.0)


def task_losses(tasks: list[Task], outputs: dict, targets: dict, masks: dict,
                regression_loss: str = "l1") -> dict[str, torch.Tensor]:
    return {t.name: masked_loss(t, outputs[t.name], targets[t.name], masks[t.name], regression_loss)
            for t in tasks}
