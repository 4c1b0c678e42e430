"""Multi-objective early stopping across trials that is safe for the Pareto front (Optuna's pruners cannot
stop a multi-objective trial: `Trial.report` raises with several objectives, optuna #3450).

A running trial is stopped at epoch e only when at least `k` completed trials were *strictly* better on
*every* objective at the same epoch e, each by a margin: `ci_margin` times that completed trial's val
95 % half-width on the task (interval units: a gap the split's noise could not close), and at least
`margin` in score units (regression: in units of the task's scale). A trial that ties completed trials
is never stopped. Curves are compared only between trials run with the same epochs and schedule
(`curve_key`): the same epoch of another cosine schedule is another point of training.

Each trial's curve is its per-epoch val vector, kept as the trial's user attribute `val_curve`; its final
intervals are `ci.<task>`. Curves are compared as the objective is computed: with `best_epoch="per_task"`
each task's best score so far, with `best_epoch="mean"` the whole vector of the epoch with the best mean
score so far (the one network the trial would serve).
`make audit-pruning` (mtl/tune/audit.py) measures what the rule costs: it re-runs pruned trials to the end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from mtl.score import mean_score

CURVE_ATTR = "val_curve"
SCHEDULE_ATTR = "schedule"


@dataclass(frozen=True)
class EarlyStop:
    """Study-file setting, e.g. `EARLY_STOP = EarlyStop(k=2, margin=0.01, ci_margin=1.0, min_epoch=3)` (absent:
    off), the default study's: how it was chosen is in the README ("What early stopping costs")."""
    k: int = 2  # completed trials that must each strictly dominate the running one
    margin: float = 0.01  # at least this much better on every objective (score units; regression: task scales)
    min_epoch: int = 2  # never stop before this epoch
    ci_margin: float = 0.2  # and by this fraction of the completed trial's val 95 % half-width on each task

    def __post_init__(self):
        if self.k < 1 or self.margin < 0 or self.min_epoch < 1 or self.ci_margin < 0:
            raise ValueError("EarlyStop needs k >= 1, margin >= 0, ci_margin >= 0, min_epoch >= 1")


@dataclass(frozen=True)
class Curve:
    """A completed trial as early stopping sees it: its per-epoch val vectors and final val half-widths."""
    rows: list[list[float]]
    half_widths: list[float]


def curve_key(epochs: int, scheduler: str) -> str:
    """What makes two curves comparable epoch by epoch: the same number of epochs on the same schedule."""
    return f"{scheduler}/{epochs}"


def comparable(attrs: dict, key: str) -> bool:
    """Whether a trial's curve (its user attributes) was run on the schedule `key`; trials stored before
    the schedule was recorded are compared by their epochs alone."""
    if SCHEDULE_ATTR in attrs:
        return attrs[SCHEDULE_ATTR] == key
    return "epochs" in attrs and key.endswith(f"/{attrs['epochs']}")


def completed_curves(trials, key: str, objectives: list[str]) -> list[Curve]:
    """The curves of the completed trials (Optuna FrozenTrials) run on the schedule `key`."""
    out = []
    for t in trials:
        a = t.user_attrs
        if CURVE_ATTR not in a or not comparable(a, key):
            continue
        hw = [(lambda ci: (ci[1] - ci[0]) / 2 if ci and all(map(math.isfinite, ci)) else 0.0)(a.get(f"ci.{o}"))
              for o in objectives]
        out.append(Curve(a[CURVE_ATTR], hw))
    return out


def best_so_far(curve: list[list[float]], directions: list[str]) -> list[list[float]]:
    """Per epoch, each objective's best value up to that epoch (NaN never wins)."""
    out, best = [], [math.nan] * len(directions)
    for row in curve:
        best = [v if math.isnan(b) or (not math.isnan(v) and (v < b if d == "minimize" else v > b)) else b
                for v, b, d in zip(row, best, directions)]
        out.append(list(best))
    return out


def best_mean_so_far(curve: list[list[float]], directions: list[str],
                     scales: list[float] | None = None) -> list[list[float]]:
    """Per epoch, the val vector of the epoch with the best mean score so far (mtl.score's rule, as each run
    picks its best epoch: lower-is-better scores count as -score/scale, NaN left out; the earliest epoch wins ties)."""
    out, best, best_mean = [], None, -math.inf
    for row in curve:
        m = mean_score(row, directions, scales)
        if best is None or m > best_mean:  # the first epoch stands until one has a (finite) better mean
            best = row
        if m > best_mean:  # a NaN mean never becomes the mark to beat (BestStates keeps -inf there too)
            best_mean = m
        out.append(list(best))
    return out


def dominates_by(a: list[float], b: list[float], directions: list[str], margins: list[float]) -> bool:
    """a is strictly better than b by more than the margin on every objective (a tie never dominates)."""
    for x, y, d, m in zip(a, b, directions, margins):
        if math.isnan(x) or math.isnan(y):
            return False
        if not (y - x if d == "minimize" else x - y) > m:
            return False
    return True


def should_stop(epoch: int, curve: list[list[float]], completed: list[Curve], directions: list[str],
                rule: EarlyStop, scales: list[float] | None = None, per_task: bool = True) -> bool:
    """Stop the running trial at `epoch` (1-based; curve = its per-epoch val vectors so far) when at least
    `rule.k` comparable completed curves each dominate it at that epoch by their margins. `per_task=False`
    (best_epoch="mean"): curves are compared by the vector of their best-mean epoch so far."""
    if epoch < rule.min_epoch or len(curve) < epoch:
        return False
    scales = scales or [1.0] * len(directions)
    running = (lambda c: best_so_far(c, directions)) if per_task else (lambda c: best_mean_so_far(c, directions, scales))
    mine = running(curve)[epoch - 1]
    count = 0
    for other in completed:
        theirs = running(other.rows)
        margins = [max(rule.margin * s, rule.ci_margin * h) for s, h in zip(scales, other.half_widths)]
        if len(theirs) >= epoch and dominates_by(theirs[epoch - 1], mine, directions, margins):
            count += 1
    return count >= rule.k


def epoch_budget(trials) -> dict:
    """How much early stopping saved over a study's finished trials (Optuna FrozenTrials, COMPLETE or PRUNED,
    duplicates left out): epochs budgeted, epochs run, and the fraction not run (early stopping and patience)."""
    done = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED") and "epochs" in t.user_attrs]
    budget = sum(t.user_attrs["epochs"] for t in done)
    ran = sum(len(t.user_attrs.get(CURVE_ATTR, [])) for t in done)
    pruned = [t for t in done if t.state.name == "PRUNED"]
    return {"trials": len(done), "pruned": len(pruned), "epochs_budgeted": budget, "epochs_run": ran,
            "epochs_saved_by_early_stop": sum(t.user_attrs["epochs"] - len(t.user_attrs.get(CURVE_ATTR, []))
                                              for t in pruned),
            "fraction_not_run": (budget - ran) / budget if budget else None}
