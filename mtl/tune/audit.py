"""Pruning regret: what early stopping across trials cost a finished study.

A seeded sample of the early-stopped (PRUNED) trials is re-run to completion with exactly the config
and seed each ran with (training is deterministic here, so the replay first repeats the epochs the trial
did run, which is checked). Each re-run's final val vector is compared with the study's completed
trials: a re-run that no completed trial dominates would have joined the Pareto front, and the
hypervolume it would have added (the same reference point and scales as the study's progress metric)
is the hypervolume lost. Next to it, the fraction of the budgeted epochs early stopping saved.
Re-runs are not trials: the study, its front and its aliases are left as they are.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from mtl.model.metrics import constant_score
from mtl.train.loop import fit
from mtl.tune.early_stop import CURVE_ATTR, epoch_budget
from mtl.tune.front import dominates, hypervolume
from mtl.tune.objective import STOPPED_AT_ATTR, trial_run_config


@dataclass
class Replay:
    number: int
    stopped_at: int  # the epoch early stopping ended it
    epochs: int
    values: list[float]  # its final best val score per objective, run to the end
    joined: bool  # no completed trial dominates it: it would have been on the front
    replay_matches: bool  # the re-run's first epochs repeat the curve the trial logged
    curve: list[list[float]] = field(default_factory=list)  # the re-run's val vector per epoch


@dataclass
class Audit:
    study: str
    pruned: int  # early-stopped trials in the study
    replays: list[Replay]
    hv_front: float
    hv_with_replays: float
    budget: dict = field(default_factory=dict)  # mtl.tune.early_stop.epoch_budget of the study

    @property
    def joined(self) -> int:
        return sum(r.joined for r in self.replays)

    @property
    def hv_lost(self) -> float:
        return self.hv_with_replays - self.hv_front

    @property
    def hv_lost_pct(self) -> float:
        return 100 * self.hv_lost / self.hv_with_replays if self.hv_with_replays else 0.0

    def metrics(self) -> dict[str, float]:
        return {"audit/pruned": self.pruned, "audit/replayed": len(self.replays), "audit/would_have_joined": self.joined,
                "audit/hypervolume_lost": self.hv_lost, "audit/hypervolume_lost_pct": self.hv_lost_pct,
                "audit/pruned_epoch_fraction": self.budget.get("fraction_not_run") or 0.0}

    def to_markdown(self, objectives: list[str]) -> str:
        frac = self.budget.get("fraction_not_run")
        lines = [f"# {self.study}: pruning regret", "",
                 f"{len(self.replays)} of {self.pruned} early-stopped trial(s) re-run to the end with their own config "
                 f"and seed; {self.joined} would have joined the Pareto front of the "
                 f"{self.budget.get('trials', 0) - self.pruned} completed trial(s). Hypervolume of the val front "
                 f"{self.hv_front:.5f}, with the re-runs {self.hv_with_replays:.5f}: lost {self.hv_lost:.5f} "
                 f"({self.hv_lost_pct:.2f} %). Early stopping saved {self.budget.get('epochs_saved_by_early_stop', 0)} "
                 f"of {self.budget.get('epochs_budgeted', 0)} budgeted epochs; epochs not run (early stopping and "
                 f"patience): " + (f"{frac:.3f}" if frac is not None else "n/a") + ".", "",
                 "| trial | stopped at epoch | " + " | ".join(objectives) + " | would have joined | replay repeats its curve |",
                 "|---:|---:|" + "---:|" * len(objectives) + "---|---|"]
        for r in self.replays:
            lines.append(f"| {r.number} | {r.stopped_at}/{r.epochs} | " + " | ".join(f"{v:.3f}" for v in r.values)
                         + f" | {'yes' if r.joined else 'no'} | {'yes' if r.replay_matches else 'NO'} |")
        return "\n".join(lines) + "\n"


def early_stopped(s: optuna.Study) -> list:
    """The trials early stopping ended (PRUNED with a curve; a sampler's duplicates ran nothing)."""
    return [t for t in s.trials if t.state == TrialState.PRUNED and t.user_attrs.get(CURVE_ATTR)
            and "duplicate_of" not in t.user_attrs]


def sample_trials(trials: list, n: int, seed: int) -> list:
    """A seeded sample of n trials (all of them when n is 0 or at least their number), in trial order."""
    if n <= 0 or n >= len(trials):
        return list(trials)
    return sorted(random.Random(seed).sample(list(trials), n), key=lambda t: t.number)


def _same_curve(logged: list[list[float]], rerun: list[list[float]]) -> bool:
    return len(rerun) >= len(logged) and all(
        (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
        for x, y in zip(logged, rerun) for a, b in zip(x, y))


def audit_pruning(study, s: optuna.Study, manifest, pretrain: str | None, sample: int = 0, seed: int = 0,
                  log=print) -> Audit:
    """Re-run a sample of the study's early-stopped trials to completion and measure the pruning regret."""
    tasks = [manifest.task(n) for n in study.objectives]
    dirs = [t.direction for t in tasks]
    complete = [list(t.values) for t in s.trials if t.state == TrialState.COMPLETE]
    pruned = early_stopped(s)
    replays = []
    for t in sample_trials(pruned, sample, seed):
        epochs = t.user_attrs.get("epochs", study.epochs)
        cfg = trial_run_config(study, optuna.trial.FixedTrial(t.params, t.number), epochs, pretrain)
        log(f"replaying trial {t.number} ({epochs} epochs; stopped at epoch "
            f"{t.user_attrs.get(STOPPED_AT_ATTR, len(t.user_attrs[CURVE_ATTR]))})")
        rerun = []
        result = fit(cfg, manifest, on_epoch=lambda e, row, rerun=rerun: rerun.append(
            [row.get("val/" + task.metric_key, math.nan) for task in tasks]))
        values = [result.best[task.name]["score"] for task in tasks]
        replays.append(Replay(t.number, t.user_attrs.get(STOPPED_AT_ATTR, len(t.user_attrs[CURVE_ATTR])), epochs,
                              values, not any(dominates(c, values, dirs) for c in complete),
                              _same_curve(t.user_attrs[CURVE_ATTR], rerun), rerun))
    targets, masks = manifest.targets("val")
    reference = [constant_score(task, targets[task.name], masks[task.name]) for task in tasks]
    scales = [task.score_scale for task in tasks]
    front = [list(t.values) for t in s.best_trials] if complete else []
    hv_front = hypervolume(front, dirs, reference, scales)
    hv_with = hypervolume(front + [r.values for r in replays], dirs, reference, scales)
    return Audit(study.name, len(pruned), replays, hv_front, hv_with, epoch_budget(s.trials))
