"""What a finished study selects, read from Optuna and cross-checked with MLflow: its completed trials,
the Pareto front, each task's best front member, and the runs of the study it is compared with.
Selection reads val scores only."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from mtl.bootstrap import GroupBootstrap, sample_stats
from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.score import mean_score
from mtl.track import tracking
from mtl.tune.front import best_per_task, pareto_front
from mtl.tune.storage import directions_of, open_existing


@dataclass
class Member:
    number: int
    run_id: str
    values: list[float]


class Selected(NamedTuple):
    """What `select` finds: the study file, its Optuna study, the Pareto front, each task's best front member
    and every completed, tracked trial."""
    study: object
    optuna_study: object
    front: list[Member]
    best: dict[str, Member]
    members: list[Member]


def select(name: str, storage: str | None = None) -> Selected:
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
    return Selected(study, s, front, best, members)


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


def objective_scales(study) -> list[float]:
    """Each objective's unit (`Task.score_scale`), from the study's manifest (its task spec; no image read)."""
    manifest = load_manifest(study.manifest, check_images=False)
    return [manifest.task(o).score_scale for o in study.objectives]


def selected_per_method(study, s, members: list[Member]) -> dict[str, Member]:
    """For a study that searches `method`: each method's val-selected trial, the one with the best mean val
    objective among its trials (its repeats: the method's whole budget), earliest on ties."""
    from mtl.results.tables import method_of
    dirs, scales = directions_of(s), objective_scales(study)
    params = {t.number: t.params for t in s.trials}
    out: dict[str, Member] = {}
    for m in members:
        method = method_of(params.get(m.number, {}))
        if method is not None and (method not in out or mean_score(m.values, dirs, scales)
                                   > mean_score(out[method].values, dirs, scales)):
            out[method] = m
    return out


def tuned_fixed_member(study, storage: str | None = None) -> tuple[Member, int] | None:
    """The val-selected trial of the study's TUNED_FIXED study (the fixed weights tuned with one method's
    budget) and how many trials it ran, when it has run on the same manifest and objectives."""
    if not study.tuned_fixed:
        return None
    try:
        base, s, done = open_existing(study.tuned_fixed, storage if storage and "://" in storage else None)
    except UserError:
        return None
    if Path(base.manifest).resolve() != Path(study.manifest).resolve() or list(base.objectives) != list(study.objectives):
        return None
    if not done:
        return None
    dirs, scales = directions_of(s), objective_scales(base)
    pick = max(done, key=lambda t: (mean_score(list(t.values), dirs, scales), -t.number))
    return Member(pick.number, pick.user_attrs["mlflow_run_id"], list(pick.values)), len(done)


def tied_with_best(tasks, manifest, members: list[Member], best: dict[str, Member], task_output) -> dict[str, list[Member]]:
    """Per task, the completed trials whose paired val difference from that task's best has a 95 % interval
    containing 0 (the best itself included): the trials the val split cannot tell apart from the best.
    `task_output(run_id, task)` gives a trial's val outputs for the task (its best epoch's)."""
    targets, masks = manifest.targets("val")
    boot = GroupBootstrap(manifest.groups("val"))
    out = {}
    for t in tasks:
        top = best[t.name]
        ref = sample_stats(t, task_output(top.run_id, t.name), targets[t.name], masks[t.name])
        out[t.name] = [m for m in members if m.number == top.number or _contains_zero(boot.paired(
            t, sample_stats(t, task_output(m.run_id, t.name), targets[t.name], masks[t.name]), ref))]
    return out


def _contains_zero(d) -> bool:
    return not (math.isfinite(d.lo) and math.isfinite(d.hi)) or d.lo <= 0 <= d.hi


def fewest_models(tied: dict[str, list[Member]], nominal: dict[str, Member], front: list[Member],
                  dirs: list[str], objectives: list[str], epochs: dict[int, dict[str, int]] | None = None
                  ) -> dict[str, Member]:
    """`--prefer shared`: per task a front trial tied with that task's best on val, chosen so that as few
    distinct networks as possible answer every task. A trial answers a task with that task's best-epoch
    checkpoint (`epochs`: trial -> task -> epoch; without it, one network per trial), so two tasks share a
    network when one trial serves both from the same epoch. The smallest such set is found exactly; among
    equally small sets, the one that keeps the most tasks on their nominal best, then the earliest trials.
    A task goes to its nominal best when that is in the set, else to the set's member with the best val
    score on it."""
    import itertools
    on_front = {m.number: m for m in front}

    def unit(number: int, task: str) -> tuple:
        e = (epochs or {}).get(number, {}).get(task) if epochs is not None else 0
        return (number, e if e is not None else f"?{task}")  # an unknown epoch shares with nothing
    cand = {task: {unit(m.number, task) for m in ms if m.number in on_front} | {unit(nominal[task].number, task)}
            for task, ms in tied.items()}
    pool = sorted(set().union(*cand.values()), key=str)
    for k in range(1, len(cand) + 1):
        covers = [c for c in itertools.combinations(pool, k) if all(set(c) & cand[t] for t in cand)]
        if covers:
            break
    pick = max(covers, key=lambda c: (sum(unit(nominal[t].number, t) in c for t in cand), [-u[0] for u in c]))

    def score(m: Member, task: str) -> float:
        i = objectives.index(task)
        return m.values[i] if dirs[i] == "maximize" else -m.values[i]
    out = {}
    for task in cand:
        if unit(nominal[task].number, task) in pick:
            out[task] = nominal[task]
        else:
            out[task] = max((on_front[u[0]] for u in pick if u in cand[task]), key=lambda m: (score(m, task), -m.number))
    return out


def network_pool(front: list[Member], dirs: list[str], k: int) -> list[Member]:
    """The rank rule for a serving budget of k trials (`make ensemble MAX_TRIALS=k` breaks ties of its val search
    with it, and uses it alone where there are too many sets to try): the k front trials an ensemble may draw on (a served ensemble runs one
    network per distinct (trial, best-epoch) checkpoint), chosen on val: the set whose best member per task has the smallest sum of
    ranks among the front (ranks: scale-free across tasks), earliest trials on ties. Exact over every
    k-subset while there are at most 200,000 of them, else greedy."""
    import itertools
    if k >= len(front):
        return list(front)
    rank = []
    for i, d in enumerate(dirs):
        order = sorted(front, key=lambda m: (-m.values[i] if d == "maximize" else m.values[i], m.number))
        rank.append({m.number: r for r, m in enumerate(order)})

    def cost(c) -> tuple:
        return sum(min(r[m.number] for m in c) for r in rank), sorted(m.number for m in c)
    if math.comb(len(front), k) <= 200_000:
        return sorted(min(itertools.combinations(front, k), key=cost), key=lambda m: m.number)
    pool: list[Member] = []
    while len(pool) < k:
        pool.append(min((m for m in front if m not in pool), key=lambda m: cost(pool + [m])))
    return sorted(pool, key=lambda m: m.number)


def simplest(tied: list[Member], trainable: dict[int, int], front: list[Member]) -> Member:
    """`--prefer simplest`: among the tied trials still on the front (dominated ones lose their checkpoints),
    the one with the fewest trainable parameters; ties to the earliest trial."""
    on_front = {m.number for m in front}
    candidates = [m for m in tied if m.number in on_front]
    return min(candidates, key=lambda m: (trainable.get(m.number, math.inf), m.number))
