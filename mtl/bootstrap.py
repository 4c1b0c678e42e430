"""Group-bootstrap confidence intervals for per-task scores and for paired differences between models.

Renderings of one character (photos of one person) are not independent samples: resampling images
would give intervals that are too narrow. We resample *groups* with replacement (the cluster
bootstrap; Davison & Hinkley 1997, sec. 3.8; Field & Welsh 2007) and keep each group's images
together. Every primary metric is a ratio of sums of per-sample statistics (acc = correct / labelled,
micro-F1 = 2TP / (2TP + FP + FN), MAE = |error| / labelled), so a resample is a weighted sum of
per-group statistics: B resamples of G groups cost one (B x G) @ (G x k) matrix product.

A comparison is paired: both models are scored on the *same* resampled groups, and the interval is
the percentile interval of the difference. A difference is called a win only when its interval
excludes 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mtl.tasks import Task

N_RESAMPLES = 2000
LEVEL = 0.95


@dataclass(frozen=True)
class Score:
    """A point estimate with its percentile interval (a score, or a difference of two scores)."""
    value: float
    lo: float
    hi: float

    def __str__(self) -> str:
        return f"{self.value:.3f} [{self.lo:.3f}, {self.hi:.3f}]"

    def signed(self) -> str:
        return f"{self.value:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}]"

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2


def sample_stats(task: Task, outputs, targets, mask) -> np.ndarray:
    """Per-sample sufficient statistics of the task's primary metric, (N, k); unlabelled rows are 0.

    Predictions follow the metrics' thresholds: logit > 0 (binary, multilabel), argmax (multiclass)."""
    return task.kind_impl.sample_stats(task, np.asarray(outputs, dtype=np.float64), np.asarray(targets),
                                  np.asarray(mask, dtype=bool))


def metric_from_sums(task: Task, sums: np.ndarray) -> np.ndarray:
    """The primary metric from summed statistics (..., k); NaN where nothing was labelled."""
    return task.kind_impl.metric_from_sums(sums)


def point(task: Task, stats: np.ndarray) -> float:
    return float(metric_from_sums(task, stats.sum(0)))


class GroupBootstrap:
    """One set of group resamples of a split, shared by every model scored on it (so comparisons are paired)."""

    def __init__(self, groups, n_resamples: int = N_RESAMPLES, seed: int = 0, level: float = LEVEL):
        keys, self.inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        self.n_groups = len(keys)
        rng = np.random.default_rng(seed)
        # how often each group is drawn in each resample: G draws with replacement = multinomial counts
        self.weights = rng.multinomial(self.n_groups, np.full(self.n_groups, 1.0 / self.n_groups),
                                       size=n_resamples).astype(np.float64)
        self.level = level

    def _group_sums(self, stats: np.ndarray) -> np.ndarray:
        sums = np.zeros((self.n_groups, stats.shape[1]))
        np.add.at(sums, self.inverse, stats)
        return sums

    def replicates(self, task: Task, stats: np.ndarray) -> np.ndarray:
        """The metric on every resample, (B,)."""
        return metric_from_sums(task, self.weights @ self._group_sums(stats))

    def mean(self, values: np.ndarray, mask: np.ndarray) -> Score:
        """The mean of a per-sample value over the labelled samples (e.g. test cross-entropy), with its interval."""
        m = np.asarray(mask, dtype=np.float64)
        sums = self.weights @ self._group_sums(np.stack([np.where(m > 0, values, 0.0), m], axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            return self._interval(float((np.where(m > 0, values, 0.0)).sum() / m.sum()), sums[:, 0] / sums[:, 1])

    def _interval(self, value: float, reps: np.ndarray) -> Score:
        a = (1 - self.level) / 2
        reps = reps[np.isfinite(reps)]
        if not math.isfinite(value) or len(reps) == 0:
            return Score(value, math.nan, math.nan)
        lo, hi = np.quantile(reps, [a, 1 - a])
        return Score(value, float(lo), float(hi))

    def interval(self, task: Task, stats: np.ndarray) -> Score:
        return self._interval(point(task, stats), self.replicates(task, stats))

    def paired(self, task: Task, stats_a: np.ndarray, stats_b: np.ndarray) -> Score:
        """Score of a minus score of b, on the same resamples."""
        return self._interval(*self.paired_reps(task, stats_a, stats_b))

    def paired_reps(self, task: Task, stats_a: np.ndarray, stats_b: np.ndarray) -> tuple[float, np.ndarray]:
        """(score of a minus score of b, that difference on every resample)."""
        return (point(task, stats_a) - point(task, stats_b),
                self.replicates(task, stats_a) - self.replicates(task, stats_b))


def verdict(task: Task, diff: Score) -> str:
    """'better' / 'worse' when the paired interval of (a - b) excludes 0 (direction-aware), else 'no clear difference'."""
    if not (math.isfinite(diff.lo) and math.isfinite(diff.hi)) or diff.lo <= 0 <= diff.hi:
        return "no clear difference"
    a_higher = diff.lo > 0
    return "better" if a_higher == (task.direction == "maximize") else "worse"


def split_intervals(tasks: list[Task], outputs: dict, manifest, split: str, seed: int = 0) -> dict[str, Score]:
    """Each task's primary score on a split with its group-bootstrap interval (outputs in split order)."""
    targets, masks = manifest.targets(split)
    boot = GroupBootstrap(manifest.groups(split), seed=seed)
    return {t.name: boot.interval(t, sample_stats(t, outputs[t.name], targets[t.name], masks[t.name]))
            for t in tasks if t.name in outputs}


def delta_m(boot: GroupBootstrap, tasks: list[Task], stats: dict[str, np.ndarray],
            single: dict[str, np.ndarray]) -> Score:
    """Δm % with its paired interval (`delta_m_reps`)."""
    return boot._interval(*delta_m_reps(boot, tasks, stats, single))


def delta_m_reps(boot: GroupBootstrap, tasks: list[Task], stats: dict[str, np.ndarray],
                 single: dict[str, np.ndarray]) -> tuple[float, np.ndarray]:
    """Δm % (Maninis, Radosavovic & Kokkinos 2019; LibMTL's summary score): the mean relative gain of a
    multi-task model over single-task baselines, 100/T Σ_t s_t (M_t − B_t) / B_t with s_t = +1 where
    higher is better and −1 where lower is; positive is better. Its interval comes from the same group
    resamples for model and baselines (paired). A baseline that scores exactly 0 leaves it undefined (NaN)."""
    def rel(m, b):
        m, b = np.asarray(m, dtype=np.float64), np.asarray(b, dtype=np.float64)
        return np.where(b != 0, (m - b) / np.where(b != 0, b, 1.0), np.nan)

    def gain(values_m, values_b):
        return sum((1 if t.direction == "maximize" else -1) * rel(values_m[i], values_b[i])
                   for i, t in enumerate(tasks)) * 100 / len(tasks)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = gain([point(t, stats[t.name]) for t in tasks], [point(t, single[t.name]) for t in tasks])
        reps = gain([boot.replicates(t, stats[t.name]) for t in tasks], [boot.replicates(t, single[t.name]) for t in tasks])
    return float(value), reps


def p_value(reps: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a difference being 0: twice the smaller tail share of its replicates
    on either side of 0, counted with the +1 of Davison & Hinkley (1997, eq. 4.11) so it is never 0."""
    reps = np.asarray(reps, dtype=np.float64)
    reps = reps[np.isfinite(reps)]
    if len(reps) == 0:
        return math.nan
    tail = min((reps <= 0).sum(), (reps >= 0).sum())
    return float(min(1.0, 2 * (tail + 1) / (len(reps) + 1)))


def holm(p_values: list[float]) -> list[float]:
    """Holm's (1979) step-down adjusted p-values: sorted ascending, p_(i) times (m - i + 1), made monotone,
    capped at 1 (NaN stays NaN and does not count in m). Reject where the adjusted value is below alpha:
    the family-wise error rate stays at alpha for any dependence between the tests."""
    idx = [i for i, p in enumerate(p_values) if math.isfinite(p)]
    m = len(idx)
    out = [math.nan] * len(p_values)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: p_values[i])):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        out[i] = running
    return out


def resamples_for(m: int, level: float = LEVEL) -> int:
    """Resamples a family of m comparisons needs: a bootstrap p-value is at least 2 / (B + 1), and Holm's
    first step asks for p < alpha / m, so B must exceed 2 m / alpha; ten times that leaves room to reject."""
    return max(N_RESAMPLES, math.ceil(20 * m / (1 - level)))


@dataclass(frozen=True)
class Judged:
    """One comparison of a family, judged with Holm: the difference with its interval at the level Holm
    tested it at, the raw and adjusted p-values, and the verdict at the family-wise level."""
    diff: Score
    p: float
    p_adj: float
    verdict: str
    level: float  # the confidence level of `diff`'s interval


class Family:
    """Paired comparisons judged together (one table's or one report's verdicts): Holm over all of them at
    family-wise level 1 - LEVEL. Each comparison is (key, direction of the score, point difference a - b,
    its bootstrap replicates)."""

    def __init__(self, description: str, level: float = LEVEL):
        self.description, self.level = description, level
        self.items: list[tuple[object, str, float, np.ndarray]] = []

    def add(self, key, direction: str, value: float, reps: np.ndarray) -> None:
        self.items.append((key, direction, value, np.asarray(reps, dtype=np.float64)))

    def __len__(self) -> int:
        return len(self.items)

    def judge(self) -> dict:
        """key -> Judged. A verdict is 'better'/'worse' only where the Holm-adjusted p-value is below alpha."""
        alpha = 1 - self.level
        ps = [p_value(reps) for _, _, _, reps in self.items]
        too_few = [len(reps) for _, _, _, reps in self.items if 2 / (len(reps) + 1) >= alpha / len(self.items)]
        if too_few:  # no p-value could pass Holm's first step: every verdict would be "no clear difference"
            raise ValueError(f"{min(too_few)} resamples cannot reject anything in a family of {len(self.items)}; "
                             f"use resamples_for({len(self.items)}) = {resamples_for(len(self.items), self.level)}")
        adj = holm(ps)
        order = sorted((i for i, p in enumerate(ps) if math.isfinite(p)), key=lambda i: ps[i])
        m = len(order)
        step = {i: m - rank for rank, i in enumerate(order)}  # Holm tests the r-th smallest at alpha / (m - r + 1)
        out = {}
        for i, (key, direction, value, reps) in enumerate(self.items):
            lvl = 1 - alpha / step[i] if i in step else self.level
            finite = reps[np.isfinite(reps)]
            lo, hi = (np.quantile(finite, [(1 - lvl) / 2, 1 - (1 - lvl) / 2]) if len(finite) and math.isfinite(value)
                      else (math.nan, math.nan))
            diff = Score(float(value), float(lo), float(hi))
            v = "no clear difference"
            if math.isfinite(adj[i]) and adj[i] < alpha:
                v = "better" if (value > 0) == (direction == "maximize") else "worse"
            out[key] = Judged(diff, ps[i], adj[i], v, lvl)
        return out

    def statement(self) -> str:
        return (f"Family: {self.description} ({len(self)} paired comparisons); Holm (1979) step-down at family-wise "
                f"{100 * (1 - self.level):g} %: a difference is a win only when its adjusted p-value is below "
                f"{1 - self.level:g}; each interval is shown at the level Holm tested it at.")
