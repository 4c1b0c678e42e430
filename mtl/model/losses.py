"""Masked per-task losses (each kind's loss, mtl/kinds); the methods that combine them are in mtl/methods.

A sample without a label for a task contributes nothing to that task's loss; a batch with no label
for a task gives that task a loss of exactly 0 (never NaN) and no gradient.
"""

from __future__ import annotations

import torch

from mtl.tasks import Task


def per_sample_loss(task: Task, output: torch.Tensor, target: torch.Tensor, kind_options: dict | None = None):
    """The kind's loss of each sample (mtl/kinds); placeholder targets of unlabelled samples give values
    to be masked out."""
    return task.kind_impl.loss(task, output, target, task.kind_impl.resolve_options((kind_options or {}).get(task.kind)))


def masked_loss(task: Task, output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                kind_options: dict | None = None) -> torch.Tensor:
    """Mean of the kind's per-sample loss (mtl/kinds) over the labelled samples of the batch;
    `kind_options` maps a kind's name to its options (`TrainConfig.kind_options`)."""
    per = per_sample_loss(task, output, target, kind_options)
    m = mask.to(per.dtype)
    # where() rather than multiply: a placeholder target can never leak a NaN/inf into the sum
    return torch.where(mask, per, torch.zeros_like(per)).sum() / m.sum().clamp(min=1.0)


def task_losses(tasks: list[Task], outputs: dict, targets: dict, masks: dict,
                kind_options: dict | None = None) -> dict[str, torch.Tensor]:
    return {t.name: masked_loss(t, outputs[t.name], targets[t.name], masks[t.name], kind_options)
            for t in tasks}
