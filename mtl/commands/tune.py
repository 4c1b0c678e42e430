"""`python -m mtl tune <study>` (`make tune STUDY=...`): run or resume a tracked multi-objective Optuna study.

A study is `experiments/<study>.py` (mtl/tune/studies.py): MANIFEST, OBJECTIVES (tasks whose primary val
metrics are the objectives), BASE, TRIALS, EPOCHS and `search_space(trial, base)`, or CONFIGS for fixed
rounds. This command checks the study before any training, creates the stores, the parent run, the
PRETRAIN stage and single-task baselines (mtl/tune/runs.py), runs the trials in WORKERS processes
(mtl/tune/objective.py) and prints every trial's per-task val score with its interval.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import time

import optuna
from optuna.trial import TrialState

from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.results.selection import select, tied_with_best
from mtl.serve.inference import CheckpointCache
from mtl.track import tracking
from mtl.tune.front import best_per_task
from mtl.tune.objective import Launch, worker
from mtl.tune.runs import ensure_pretrain, ensure_single_task, parent_run
from mtl.tune.storage import default_storage, fail_stale_trials, open_study, pending_entries
from mtl.tune.studies import check_search_space, load_study


def _parse_knobs(args) -> None:
    """TRIALS/EPOCHS/WORKERS arrive as strings (make passes them through): one clear line if not positive ints."""
    for knob, attr in (("TRIALS", "trials"), ("EPOCHS", "epochs"), ("WORKERS", "workers")):
        v = getattr(args, attr)
        if v is None:
            continue
        try:
            n = int(v)
        except ValueError:
            n = 0
        if n < 1:
            raise UserError(f"{knob}={v}: must be a positive integer")
        setattr(args, attr, n)


def main(args) -> int:
    _parse_knobs(args)
    study = load_study(args.study)
    manifest = load_manifest(study.manifest, check_images=True)  # a corrupt image stops us before any trial
    missing = [o for o in study.objectives if o not in {t.name for t in manifest.tasks}]
    if missing:
        raise UserError(f"{study.path}: objective task(s) {', '.join(missing)} not in {manifest.path}")
    _, val_masks = manifest.targets("val")
    unlabelled = [o for o in study.objectives if not val_masks[o].any()]
    if unlabelled:
        raise UserError(f"{manifest.path}: objective task(s) {', '.join(unlabelled)} have no label in the val split")
    check_search_space(study, manifest.tasks)
    storage_url = args.storage or default_storage(study.name)
    trials = args.trials or study.trials
    epochs = args.epochs or study.epochs
    workers = args.workers or 1
    tasks = [manifest.task(n) for n in study.objectives]

    # stores, study and experiment are created once, here, before any worker starts (first-use races)
    client = tracking.get_client()
    experiment_id = tracking.ensure_experiment(client, study.name)
    s = open_study(study, storage_url, [t.direction for t in tasks], [f"val/{t.metric_key}" for t in tasks],
                   seed=args.seed)
    stale = fail_stale_trials(s)
    if stale:
        print(f"marked stale trial(s) {stale} of a dead worker FAILED")
    if study.configs:  # fixed rounds: queue the ones not yet done, once each
        done = {t.params.get("round") for t in s.get_trials(deepcopy=False)
                if t.state in (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)}
        todo = [r for r in study.configs if r not in done]
        for r in todo:
            s.enqueue_trial({"round": r})
        trials = min(trials, len(todo)) if not args.trials else trials
        if not todo:
            print(f"all {len(study.configs)} rounds of '{study.name}' are done")
    if study.enqueue:  # queued entries no trial has run (or is running / waiting for) yet; a failed one again
        todo = pending_entries(study.enqueue, s.get_trials(deepcopy=False))
        for params in todo:
            s.enqueue_trial(params)
        if todo and not args.trials and len(study.enqueue) >= study.trials:  # the queue is the whole study
            trials = min(trials, len(todo))
    parent_id = parent_run(client, experiment_id, study, storage_url, manifest)
    client.update_run(parent_id, status="RUNNING")
    status = "FINISHED"
    t0 = time.perf_counter()
    try:
        pretrain = ensure_pretrain(study, manifest, client, experiment_id, parent_id)
        single = ensure_single_task(study, manifest, client, experiment_id, parent_id, pretrain, epochs)
        if single:
            s.set_user_attr("single_task_runs", single)
        launch = Launch(study.name, storage_url, epochs, parent_id, experiment_id, args.seed, workers, pretrain,
                        tuple(single.items()))
        before = len(s.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)))
        print(f"study '{study.name}': {before} trial(s) so far, running {trials} more ({epochs} epochs each, "
              f"{workers} worker(s)); Optuna {tracking.redact(storage_url)}, MLflow {tracking.redact(tracking.tracking_uri())}")
        t0 = time.perf_counter()
        if trials > 0:
            shares = [trials // workers + (1 if i < trials % workers else 0) for i in range(workers)]
            if workers == 1:
                worker(launch, trials, 0)
            else:
                ctx = mp.get_context("spawn")
                procs = [ctx.Process(target=worker, args=(launch, n, i)) for i, n in enumerate(shares) if n > 0]
                for p in procs:
                    p.start()
                for p in procs:
                    p.join()
                if any(p.exitcode != 0 for p in procs):
                    status = "FAILED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        client.set_terminated(parent_id, status)
    wall = time.perf_counter() - t0
    s = open_study(study, storage_url, [t.direction for t in tasks], [f"val/{t.metric_key}" for t in tasks])
    client.log_metric(parent_id, "wall_seconds", wall, step=len(s.trials))
    print(summary_table(s, tasks))
    if any(t.state == TrialState.COMPLETE for t in s.trials):
        try:
            picked = select(study.name, storage_url)
        except UserError as e:  # e.g. a completed trial without its MLflow run: the table above still stands
            print(f"(no tied counts: {e})")
        else:
            tied = tied_with_best(tasks, manifest, picked.members, picked.best,
                                  CheckpointCache(client, manifest, "val").task_output)
            print(f"tied with the task's best on val (paired 95 % interval contains 0), of {len(picked.members)} completed: "
                  + ", ".join(f"{t} {len(ms)}" for t, ms in tied.items()))
    print(f"\nwall time {wall:.0f}s.  Compare runs: make ui, then open http://127.0.0.1:5000/#/experiments/"
          f"{experiment_id}/runs?workflowType=machine_learning ;  next: make pareto STUDY={study.name}")
    return 0 if status == "FINISHED" else 1


def summary_table(s: optuna.Study, tasks) -> str:
    """Every trial's per-task val score with its 95 % group-bootstrap interval; Pareto members and each
    task's best marked."""
    complete = [t for t in s.trials if t.state == TrialState.COMPLETE]
    pareto = {t.number for t in s.best_trials} if complete else set()
    width = 24
    head = f"{'trial':>6} {'state':<9}" + "".join(f"{t.name[:width - 2]:>{width}}" for t in tasks) + "  pareto"
    lines = [head]
    best = {}  # each task's best Pareto member, ties to the earliest: the rule pareto and its aliases use
    if complete:
        front = sorted((t for t in complete if t.number in pareto), key=lambda t: t.number)
        rows = best_per_task([list(t.values) for t in front], [t.direction for t in tasks])
        best = {task.name: front[i].number for task, i in zip(tasks, rows)}
    for t in s.trials:
        cells = ""
        for i, task in enumerate(tasks):
            if not t.values:
                cells += f"{'-':>{width}}"
                continue
            lo, hi = t.user_attrs.get(f"ci.{task.name}", (math.nan, math.nan))
            mark = "^" if best.get(task.name) == t.number else " "
            cells += f"{t.values[i]:.3f} [{lo:.2f},{hi:.2f}]{mark}".rjust(width)
        lines.append(f"{t.number:>6} {t.state.name:<9}{cells}  {'*' if t.number in pareto else ''}")
    lines.append("(val score [95 % group-bootstrap interval]; * Pareto member, ^ best for that task)")
    return "\n".join(lines)
