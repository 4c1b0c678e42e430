"""Pareto dominance, the front, each objective's best row and the hypervolume of a front.

Values are rows of objective values with one direction per objective ("maximize" | "minimize").
"""

from __future__ import annotations

import numpy as np

from mtl.tune import optuna_adapter


def dominates(a, b, directions) -> bool:
    """a is no worse than b on every objective and better on one."""
    better = False
    for x, y, d in zip(a, b, directions):
        if (x < y if d == "maximize" else x > y):
            return False
        if x != y:
            better = True
    return better


def pareto_front(values: list[list[float]], directions: list[str]) -> list[int]:
    """Indices of the non-dominated rows (brute force, O(n^2): a reference for Optuna's best_trials)."""
    return [i for i, v in enumerate(values)
            if not any(dominates(w, v, directions) for j, w in enumerate(values) if j != i)]


def best_per_task(values: list[list[float]], directions: list[str]) -> list[int]:
    """For each objective, the index of the best row; ties go to the first row (the earliest trial):
    the one rule the tune summary, pareto's table and the registry aliases share."""
    out = []
    for k, d in enumerate(directions):
        col = [v[k] for v in values]
        out.append(col.index(min(col) if d == "minimize" else max(col)))
    return out


def hypervolume(values: list[list[float]], directions: list[str], reference: list[float],
                scales: list[float] | None = None) -> float:
    """Hypervolume of the points' front above the reference point (the best constant predictor per task),
    each axis divided by its scale (1 for scores in [0, 1]; the task's scale for MAE)."""
    if not values:
        return 0.0
    sign = np.array([1.0 if d == "minimize" else -1.0 for d in directions])
    s = np.array(scales or [1.0] * len(directions))
    loss = np.asarray(values, dtype=float) * sign / s
    ref = np.asarray(reference, dtype=float) * sign / s
    loss = loss[np.isfinite(loss).all(1)]
    loss = np.minimum(loss, ref)  # a point worse than the reference on one axis adds no volume
    if len(loss) == 0:
        return 0.0
    return float(optuna_adapter.hypervolume(loss, ref))
