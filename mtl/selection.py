"""What a finished study selects, read from Optuna and cross-checked with MLflow: its completed trials,
the Pareto front, each task's best front member, and the runs of the study it is compared with.
Selection reads val scores only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mtl import tracking
from mtl.errors import UserError
from mtl.front import best_per_task, pareto_front
from mtl.storage import directions_of, open_existing


@dataclass
class Member:
    number: int
    run_id: str
    values: list[float]


def select(name: str, storage: str | None = None):
    """Front members and best member per task (task name -> Member), cross-checked with MLflow."""
    study, s, done = open_existing(name, storage)
    dirs = directions_of(s)
    values = [list(t.values) for t in done]
    front_idx = pareto_front(values, dirs)
    optuna_front = {t.number for t in s.best_trials}
    if {done[i].number for i in front_idx} != optuna_front:
        raise UserError(f"study '{name}': the Pareto front of its completed, tracked trials differs from Optuna's "
                        f"best_trials {sorted(optuna_front)} (a completed trial without an MLflow run?)")
    members = [Member(t.number, t.user_attrs["mlflow_run_id"], list(t.values)) for t in done]
    client = tracking.get_client()
    for m in members:  # the scores Optuna holds are the ones MLflow shows
        logged = client.get_run(m.run_id).data.metrics
        for task, name, v in zip(study.objectives, s.metric_names, m.values):
            key = f"best_{name}"  # val/<task>/<metric> -> best_val/<task>/<metric>
            if key not in logged or not math.isclose(logged[key], v, rel_tol=1e-6, abs_tol=1e-9):
                raise UserError(f"trial {m.number}: MLflow run {m.run_id} does not hold the score Optuna has "
                                f"for '{task}' ({v}); is MLFLOW_TRACKING_URI the store the study used?")
    front = [members[i] for i in front_idx]
    # each task's best among the front (a tie with a dominated trial goes to the front member, ties within
    # the front to the earliest trial: best_per_task's rule)
    best = {task: front[i] for task, i in zip(study.objectives, best_per_task([m.values for m in front], dirs))}
    return study, s, front, best, members


def compared_members(study, storage: str | None = None) -> list[tuple[str, str]]:
    """(round name, run id) of the trials of the study's COMPARE_WITH study, when that one has run on the same
    manifest with the same objectives (in the same Optuna storage when an RDB URL is given)."""
    if not study.compare_with or study.compare_with == study.name:
        return []
    try:
        base, _, done = open_existing(study.compare_with, storage if storage and "://" in storage else None)
    except UserError:
        return []
    if Path(base.manifest).resolve() != Path(study.manifest).resolve() or set(base.objectives) != set(study.objectives):
        return []
    return [(str(t.params.get("round", f"trial-{t.number}")), t.user_attrs["mlflow_run_id"]) for t in done]
