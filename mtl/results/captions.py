"""Captions like the FGO write-up's: `Gender: Female, Region: Europe, Fighting Style: melee, Alignment: LG,
Main Colors: ['Silver', 'Gold', 'Blue']` (a multilabel task's labels over the threshold, most probable
first: what its F1 scores), and the per-task lines under each gallery image."""

from __future__ import annotations

import torch

from mtl.tasks import Task


def format_value(task: Task, value) -> str:
    return task.kind_impl.format(value)


def caption(tasks: list[Task], outputs: dict[str, torch.Tensor]) -> str:
    """One sample's outputs (task -> head output) -> `Gender: Female, ..., Main Colors: ['Silver', 'Gold']`
    (a multilabel task's labels over the threshold, most probable first: what its F1 scores)."""
    return ", ".join(f"{t.display_name}: {format_value(t, t.predict(outputs[t.name]))}" for t in tasks)


def truth_caption(tasks: list[Task], row) -> str:
    parts = []
    for t in tasks:
        cell = row[t.name].strip()
        parts.append(f"{t.display_name}: {format_value(t, t.kind_impl.cell_value(cell)) if cell else '?'}")
    return ", ".join(parts)


def task_lines(tasks: list[Task], outputs: dict[str, torch.Tensor], row=None) -> list:
    """(display name, prediction, truth or None) per task: the prediction the metrics score (a multilabel
    task's labels over the threshold, sorted), so a tick means the metric counts it right."""
    def show(v):
        return ", ".join(sorted(v)) if isinstance(v, list) else format_value(t, v)
    out = []
    for t in tasks:
        pred = show(t.predict(outputs[t.name]))
        truth = show(t.kind_impl.cell_value(row[t.name])) if row is not None and row[t.name].strip() else None
        out.append((t.display_name, pred, truth))
    return out
