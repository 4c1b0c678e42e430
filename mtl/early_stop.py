"""Multi-objective early stopping across trials (not Optuna's pruning, which cannot stop a multi-objective trial).

Optuna cannot prune a multi-objective trial (`Trial.report` raises with several objectives; optuna
#3450). Here a trial is stopped at epoch e when at least `k` completed trials were already better
by `margin` on *every* objective at the same epoch e — so it is dominated with room to spare, not
merely behind on one task. Each trial's curve is its best-so-far val vector per epoch (the objective
is the best score over epochs), stored as the trial's user attribute `val_curve`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

CURVE_ATTR = "val_curve"


@dataclass(frozen=True)
class EarlyStop:
    """Study-file setting `EARLY_STOP = EarlyStop(k=3, margin=0.02, min_epoch=3)` (absent: off)."""
    k: int = 3  # completed trials that must dominate the running one
    margin: float = 0.02  # by this much on every objective (regression: in units of the task's scale)
    min_epoch: int = 3  # never stop before this epoch

    def __post_init__(self):
        if self.k < 1 or self.margin < 0 or self.min_epoch < 1:
            raise ValueError("EarlyStop needs k >= 1, margin >= 0, min_epoch >= 1")


def best_so_far(curve: list[list[float]], directions: list[str]) -> list[list[float]]:
    """Per epoch, each objective's best value up to that epoch (NaN never wins)."""
    out, best = [], [math.nan] * len(directions)
    for row in curve:
        best = [v if math.isnan(b) or (not math.isnan(v) and (v < b if d == "minimize" else v > b)) else b
                for v, b, d in zip(row, best, directions)]
        out.append(list(best))
    return out


def dominates_by(a: list[float], b: list[float], directions: list[str], margins: list[float]) -> bool:
    """a is better than b by at least the margin on every objective."""
    for x, y, d, m in zip(a, b, directions, margins):
        if math.isnan(x) or math.isnan(y):
            return False
        if (y - x if d == "minimize" else x - y) < m:
            return False
    return True


def should_stop(epoch: int, curve: list[list[float]], completed: list[list[list[float]]], directions: list[str],
                rule: EarlyStop, scales: list[float] | None = None) -> bool:
    """Stop the running trial at `epoch` (1-based; curve = its per-epoch val vectors so far) when at least
    `rule.k` completed trials' curves dominate it at that epoch by the margin."""
    if epoch < rule.min_epoch or len(curve) < epoch:
        return False
    margins = [rule.margin * s for s in (scales or [1.0] * len(directions))]
    mine = best_so_far(curve, directions)[epoch - 1]
    count = 0
    for other in completed:
        theirs = best_so_far(other, directions)
        if len(theirs) >= epoch and dominates_by(theirs[epoch - 1], mine, directions, margins):
            count += 1
    return count >= rule.k
