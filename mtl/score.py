"""The one score rule: how several tasks' scores become one higher-is-better number.

Each task's primary score is made higher-is-better (a lower-is-better one, e.g. MAE, counts as
-score / scale, the scale being the task's unit: `Task.score_scale`), then the mean is taken over the
tasks that have a score (NaN, a task with no labelled sample, is left out). Patience and each run's best
epoch (`best_epoch="mean"`), early stopping's comparison of curves, the served ensemble's search over
sets of trials and the pick among a method's repeats all use it (tests/test_layout.py: nowhere else
defines it).
"""

from __future__ import annotations

import math


def normalised(value: float, direction: str, scale: float = 1.0) -> float:
    """`value` made higher-is-better: as it is when maximised, -value / scale when minimised."""
    return -value / scale if direction == "minimize" else value


def mean_score(values, directions, scales=None) -> float:
    """The mean of the normalised scores, NaN ones left out; NaN when no score is finite."""
    scales = scales or [1.0] * len(directions)
    vals = [normalised(v, d, s) for v, d, s in zip(values, directions, scales) if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


def task_mean_score(tasks, metrics: dict) -> float:
    """`mean_score` of each task's primary metric in `metrics` (keyed `<task>/<metric>`; a missing key is NaN)."""
    return mean_score([metrics.get(t.metric_key, math.nan) for t in tasks], [t.direction for t in tasks],
                      [t.score_scale for t in tasks])
