"""Run or resume a tracked multi-objective Optuna study: `python -m mtl tune <study>` (`make tune STUDY=...`).

A study is `experiments/<study>.py`: MANIFEST, OBJECTIVES (tasks whose primary val metrics are the
objectives), BASE (a TrainConfig), TRIALS, EPOCHS and `search_space(trial, base) -> TrainConfig`,
or CONFIGS (name -> TrainConfig) for fixed, hand-tuned rounds. One objective per task, each in its
own direction; the sampler (SAMPLER) seeded per worker and per start (a resumed study never replays
its draws); the study is stored persistently and resumed by name.

A trial stops early on `patience` (its mean per-task val score has not improved for that many epochs)
or on EARLY_STOP (mtl/pruning.py: completed trials dominate it at the same epoch).

Every trial is one top-level MLflow run `trial-<n>` (or the round's name) in the study's experiment,
tagged with the study's parent run; the pretrain stage, single-task baselines and ensemble runs are
the parent's children, out of the trials' comparison (see mtl/tracking.py).
"""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing as mp
import os
import socket
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from mtl import tracking
from mtl.bootstrap import GroupBootstrap, delta_m, sample_stats, split_intervals
from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.methods.base import DivergedError
from mtl.metrics import constant_score
from mtl.pruning import CURVE_ATTR, hypervolume, should_stop
from mtl.studies import (
    PARENT_TAG,
    ROLE_TAG,
    STUDY_TAG,
    Study,
    close_stale_run,
    default_storage,
    load_study,
    make_storage,
    trial_config,
)
from mtl.train import check_config, fit


def check_search_space(study: Study, tasks, draws: int = 16) -> None:
    """Sample on a throwaway in-memory study — every ENQUEUE entry and `draws` random draws — and check each
    config's method settings; build the first config's model (backbone, weights, init, freeze) and the
    PRETRAIN stage's, so a broken study fails in one line before any training."""
    from mtl import methods
    task_names = [t.name for t in tasks]
    probe = optuna.create_study(directions=["maximize"] * len(study.objectives),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for params in study.enqueue:
        probe.enqueue_trial(params)
    cfgs, n_q = [], len(study.enqueue)
    for i in range(n_q + 1 + (draws if not study.configs else len(study.configs))):
        queued = study.enqueue[i] if i < n_q else None
        trial = probe.ask()
        try:
            cfgs.append(trial_config(study, trial, study.epochs))
        except UserError as e:  # a setting mtl rejects (an unknown method, say): never right in any trial
            raise e if str(study.path) in str(e) else UserError(f"{study.path}: search space: {e}") from None
        except Exception as e:  # every queued draw and the first sampled one must work; later ones may fail alone
            if i <= n_q:
                what = f"ENQUEUE entry {queued}" if queued is not None else "search space"
                raise UserError(f"{study.path}: {what} fails ({type(e).__name__}: {e})") from None
        if queued is not None and set(queued) - set(trial.params):
            raise UserError(f"{study.path}: ENQUEUE entry {queued}: the search space has no parameter(s) "
                            f"{', '.join(sorted(set(queued) - set(trial.params)))}")
        probe.tell(trial, [0.0] * len(study.objectives))
    for cfg in cfgs:
        bad = set(cfg.loss_weights) - set(task_names)
        if bad:
            raise UserError(f"{study.path}: loss weights for unknown task(s) {', '.join(sorted(bad))}")
        try:
            methods.make_criterion(cfg, tasks)
        except UserError as e:
            raise UserError(f"{study.path}: search space: {e}") from None
    for what, c in (("search space", cfgs[0]), ("PRETRAIN", study.pretrain)):
        if c is not None:
            try:
                check_config(c, tasks)
            except UserError as e:
                raise UserError(f"{study.path}: {what}: {e}") from None


def sampler_seed(base: int, worker_index: int, trials_so_far: int) -> int:
    """A resumed or parallel study must never replay the draws of an earlier start: the sampler seed
    mixes the base seed, the worker, the trials already stored and the host (workers on several
    machines), so a fresh single-machine study stays reproducible while no two starts share a seed."""
    import numpy as np
    host = zlib.crc32(socket.gethostname().encode())
    return int(np.random.SeedSequence([base, worker_index, trials_so_far, host]).generate_state(1)[0])


def open_study(study: Study, storage_url: str, directions: list[str], metric_names: list[str], seed: int = 0,
               worker_index: int = 0):
    s = optuna.create_study(study_name=study.name, storage=make_storage(storage_url), directions=directions,
                            load_if_exists=True)
    if s.directions != [optuna.study.StudyDirection[d.upper()] for d in directions]:
        raise UserError(f"study '{study.name}' in {tracking.redact(storage_url)} has other objectives; "
                        f"use another STORAGE or remove it")
    if s.metric_names != metric_names:
        s.set_metric_names(metric_names)
    s.sampler = make_sampler(study, sampler_seed(seed, worker_index, len(s.get_trials(deepcopy=False))))
    return s


def make_sampler(study: Study, seed: int) -> optuna.samplers.BaseSampler:
    """The study's SAMPLER with Optuna's own defaults (TPE stays univariate: the spaces are conditional)."""
    if study.configs or study.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if study.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if study.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def duplicate_of(trial: optuna.Trial) -> int | None:
    """The number of an earlier trial (complete, running or pruned) with exactly these parameters."""
    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.PRUNED)
    for t in trial.study.get_trials(deepcopy=False, states=states):
        if t.number < trial.number and t.params == trial.params and "duplicate_of" not in t.user_attrs:
            return t.number
    return None


def fail_stale_trials(s: optuna.Study) -> list[int]:
    """Trials left RUNNING by a worker that died (kill -9) on this host: mark them FAILED, and their runs.

    RDB storages also detect them through heartbeats; a journal file has none, so we look at the pid
    each trial recorded when it started.
    """
    stale = []
    host = socket.gethostname()
    for t in s.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        pid, thost = t.user_attrs.get("pid"), t.user_attrs.get("host")
        if thost != host or pid is None or _alive(int(pid)):
            continue
        s._storage.set_trial_user_attr(t._trial_id, "fail_reason", "worker died (stale trial)")
        s.tell(t.number, state=TrialState.FAIL)
        close_stale_run(s, t)
        stale.append(t.number)
    return stale


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ------------------------------------------------------------------------------------------------
# one trial
# ------------------------------------------------------------------------------------------------
class Objective:
    def __init__(self, study: Study, manifest, parent_id: str, experiment_id: str, epochs: int, bar=None,
                 pretrain: str | None = None, single_task: dict | None = None):
        self.study, self.manifest, self.parent_id, self.experiment_id = study, manifest, parent_id, experiment_id
        self.epochs, self.bar, self.pretrain = epochs, bar, pretrain
        self.tasks = [manifest.task(n) for n in study.objectives]
        self.directions = [t.direction for t in self.tasks]
        self.scales = [t.score_scale for t in self.tasks]
        self.client = tracking.get_client()
        self.single_stats = single_task_stats(self.tasks, manifest, single_task) if single_task else None
        self.stopped_early = 0

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        cfg = trial_config(self.study, trial, self.epochs)
        dup = duplicate_of(trial)
        if dup is not None:  # a sampler can repeat itself on a small space: never train the same config twice
            trial.set_user_attr("duplicate_of", dup)
            raise optuna.TrialPruned(f"same parameters as trial {dup}")
        cfg = cfg.replace(seed=cfg.seed + trial.number)
        if self.pretrain and cfg.init is None:
            cfg = cfg.replace(init=self.pretrain)
        trial.set_user_attr("epochs", cfg.epochs)
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", socket.gethostname())
        # trials are the experiment's top-level rows (what the UI's runs table and charts compare); the
        # parent run holds the study's own runs (pretrain, single-task baselines, ensemble) as children
        tags = {STUDY_TAG: self.study.name, ROLE_TAG: "trial", "optuna.study": self.study.name,
                "optuna.trial_number": trial.number, "optuna.trial_id": trial._trial_id, PARENT_TAG: self.parent_id}
        name = str(trial.params["round"]) if self.study.configs and "round" in trial.params else f"trial-{trial.number}"
        pruned = None
        with tracking.RunLogger(self.client, self.experiment_id, name, None, tags, system_metrics=True) as run:
            trial.set_user_attr("mlflow_run_id", run.run_id)
            run.log_params({**tracking.flatten_config(cfg), "manifest": self.study.manifest,
                            **{f"optuna.{k}": v for k, v in trial.params.items()}})
            run.log_dataset(self.manifest)
            t0 = time.perf_counter()
            with run.artifact_dir("checkpoints") as ckpt_dir:
                try:
                    result = fit(cfg, self.manifest, ckpt_dir, on_epoch=self.on_epoch(trial, run, cfg))
                except DivergedError as e:
                    trial.set_user_attr("fail_reason", f"diverged: {e}")
                    raise
                except optuna.TrialPruned as e:  # dominated by completed trials: a finished run, tagged
                    pruned = e
                    run.set_tags({"pruned": "true"})
                    self.stopped_early += 1
                    if self.bar is not None:  # early stopping shows: how many so far, and this one's reason
                        self.bar.set_description(f"{self.study.name} ({self.stopped_early} stopped early)")
                        self.bar.write(f"trial {trial.number}: {e}")
                    run.log_metrics({"trial_seconds": time.perf_counter() - t0})
            if pruned is None:
                values = self.log_result(trial, run, result, time.perf_counter() - t0)
        if pruned is not None:
            raise pruned
        if any(math.isnan(v) for v in values):
            raise ValueError("a task has no labelled val sample: its score is NaN")
        return values

    def on_epoch(self, trial, run, cfg):
        """Per epoch: log, show progress, keep the val curve on the trial, stop a dominated trial."""
        curve = []

        def callback(epoch, row):
            run.log_epoch(epoch, row)
            curve.append([row.get("val/" + t.metric_key, math.nan) for t in self.tasks])
            trial.set_user_attr(CURVE_ATTR, curve)
            if self.bar is not None:
                self.bar.set_postfix_str(f"trial {trial.number} epoch {epoch}/{cfg.epochs} " + " ".join(
                    f"{t.name} {row.get('val/' + t.metric_key, math.nan):.2f}" for t in self.tasks))
            rule = self.study.early_stop
            if rule is None or epoch < rule.min_epoch:
                return
            done = [t.user_attrs[CURVE_ATTR] for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if CURVE_ATTR in t.user_attrs]
            if should_stop(epoch, curve, done, self.directions, rule, self.scales):
                raise optuna.TrialPruned(f"dominated at epoch {epoch} by {rule.k}+ completed trials")

        return callback

    def log_result(self, trial, run, result, seconds: float) -> tuple[float, ...]:
        values = tuple(result.best[t.name]["score"] for t in self.tasks)
        ci = split_intervals(self.tasks, result.val_outputs, self.manifest, "val")
        for name, score in ci.items():
            trial.set_user_attr(f"ci.{name}", [score.lo, score.hi])
        run.log_metrics({f"best_val/{t.metric_key}": v for t, v in zip(self.tasks, values)}
                        | {f"best_val/{t.metric_key}_{e}": getattr(ci[t.name], e) for t in self.tasks
                           for e in ("lo", "hi")}
                        | {f"best_epoch/{t.name}": result.best[t.name]["epoch"] for t in self.tasks}
                        | {"trial_seconds": seconds, "epochs_run": len(result.history)})
        if self.single_stats:
            targets, masks = self.manifest.targets("val")
            stats = {t.name: sample_stats(t, result.val_outputs[t.name], targets[t.name], masks[t.name])
                     for t in self.tasks}
            dm = delta_m(GroupBootstrap(self.manifest.groups("val"), seed=0), self.tasks, stats, self.single_stats)
            trial.set_user_attr("delta_m", [dm.value, dm.lo, dm.hi])
            run.log_metrics({"best_val/delta_m": dm.value, "best_val/delta_m_lo": dm.lo, "best_val/delta_m_hi": dm.hi})
        run.set_tags({"stopped_early": str(result.stopped_early).lower(), "pruned": "false"})
        return values


class Progress:
    """After every trial, on the parent run: the hypervolume of the val front (reference point: the best
    constant predictor per task; regression axes in units of the task's scale), the front size, and the
    completed and pruned counts; step = trials finished."""

    def __init__(self, client, parent_id: str, manifest, tasks):
        self.client, self.parent_id, self.tasks = client, parent_id, tasks
        targets, masks = manifest.targets("val")
        self.reference = [constant_score(t, targets[t.name], masks[t.name]) for t in tasks]
        self.scales = [t.score_scale for t in tasks]

    def __call__(self, study: optuna.Study, trial) -> None:
        trials = study.get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        finished = [t for t in trials if t.state.is_finished()]
        front = study.best_trials if complete else []
        hv = hypervolume([list(t.values) for t in front], [t.direction for t in self.tasks], self.reference, self.scales)
        metrics = {"study/hypervolume": hv, "study/front_size": len(front), "study/completed": len(complete),
                   "study/pruned": sum(t.state == TrialState.PRUNED for t in trials)}
        tracking.RunLogger(self.client, "", "", run_id=self.parent_id).log_metrics(metrics, step=len(finished))


# ------------------------------------------------------------------------------------------------
# runner
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Launch:
    """What every worker of one `tune` invocation shares (picklable for spawned processes)."""
    study: str
    storage_url: str
    epochs: int
    parent_id: str
    experiment_id: str
    seed: int
    n_workers: int
    pretrain: str | None = None  # local checkpoint of the PRETRAIN stage, if the study has one
    single_task: tuple = ()  # ((task, run id), ...): the single-task baselines' runs, for Δm %


def worker(launch: Launch, n_trials: int, worker_index: int) -> None:
    """One process: its own storage connection and sampler seed, `n_trials` trials."""
    import torch

    from mtl.quiet import quiet
    quiet()
    if launch.n_workers > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // launch.n_workers))
    study = load_study(launch.study)
    manifest = load_manifest(study.manifest)
    tasks = [manifest.task(n) for n in study.objectives]
    s = open_study(study, launch.storage_url, [t.direction for t in tasks], [f"val/{t.metric_key}" for t in tasks],
                   seed=launch.seed, worker_index=worker_index)
    bar = None
    if worker_index == 0:
        from tqdm.auto import tqdm
        total = n_trials * launch.n_workers if launch.n_workers > 1 else n_trials
        bar = tqdm(total=total, desc=launch.study, unit="trial")
    objective = Objective(study, manifest, launch.parent_id, launch.experiment_id, launch.epochs, bar, launch.pretrain,
                          dict(launch.single_task))
    callbacks = [Progress(objective.client, launch.parent_id, manifest, tasks)]
    if bar is not None:
        callbacks.append(lambda st, ft: bar.update(1))
    try:
        s.optimize(objective, n_trials=n_trials, catch=(Exception,), callbacks=callbacks, gc_after_trial=True)
    finally:
        if bar is not None:
            bar.close()


def ensure_pretrain(study: Study, manifest, client, experiment_id: str, parent_id: str) -> str | None:
    """The study's PRETRAIN stage: trained once (a run with role `pretrain` under the parent), then reused by
    every trial, worker, resume and any study with the same stage — found again by a key of its config and
    the manifest's content. Returns its checkpoint as a `runs:/` URI, which every machine can resolve."""
    if study.pretrain is None:
        return None
    digest = hashlib.sha1(json.dumps(study.pretrain.to_dict(), sort_keys=True).encode())
    for f in (manifest.path, manifest.spec_path):
        digest.update(Path(f).read_bytes())
    key = digest.hexdigest()[:16]
    where = [e.experiment_id for e in client.search_experiments()]
    found = client.search_runs(where, f"tags.`{ROLE_TAG}` = 'pretrain' and tags.`mtl.pretrain_key` = '{key}' "
                                      f"and attributes.status = 'FINISHED'", max_results=1)
    if found:
        run_id, ckpt = found[0].info.run_id, found[0].data.tags["checkpoint"]
    else:
        print(f"pretrain stage ({study.pretrain.epochs} epochs, {study.pretrain.backbone}): training it once")
        tags = {STUDY_TAG: study.name, ROLE_TAG: "pretrain", "mtl.pretrain_key": key}
        with tracking.RunLogger(client, experiment_id, "pretrain", parent_id, tags) as run:
            run.log_params({**tracking.flatten_config(study.pretrain), "manifest": study.manifest})
            with tempfile.TemporaryDirectory(prefix="mtl-pretrain-") as tmp:
                result = fit(study.pretrain, manifest, Path(tmp) / "checkpoints", on_epoch=run.log_epoch)
                ckpt = f"epoch-{result.history[-1]['epoch']}.pt"
                run.log_artifact(result.checkpoint_dir / ckpt, "checkpoints")
                run.set_tags({"checkpoint": ckpt})
        run_id = run.run_id
    return f"runs:/{run_id}/checkpoints/{ckpt}"


def pending_entries(entries, trials) -> list[dict]:
    """ENQUEUE entries without a trial that ran or will run them: each trial whose parameters contain an
    entry (complete, pruned, running or waiting) accounts for one occurrence of it; failed ones do not."""
    alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
    unused = [t for t in trials if t.state in alive]
    todo = []
    for entry in entries:
        match = next((t for t in unused if all(t.params.get(k, t.system_attrs.get("fixed_params", {}).get(k)) == v
                                                for k, v in entry.items())), None)
        if match is None:
            todo.append(entry)
        else:
            unused.remove(match)
    return todo


def ensure_single_task(study: Study, manifest, client, experiment_id: str, parent_id: str, pretrain: str | None,
                       epochs: int) -> dict[str, str]:
    """SINGLE_TASK_BASELINES: for each objective, BASE with that head alone, the same epochs and warm start
    (runs `single-<task>`, role `single-task`), trained once and found again by a key of config, task and
    manifest content like the pretrain stage. Returns task -> run id; their val outputs give Δm %."""
    if not study.single_task:
        return {}
    # the plain loss of one task: no weighting method, no weights for tasks the model does not have
    cfg = study.base.replace(epochs=epochs, init=pretrain or study.base.init, weighting="fixed", weighting_args={},
                             loss_weights={})
    where = [e.experiment_id for e in client.search_experiments()]
    runs = {}
    for task in study.objectives:
        digest = hashlib.sha1(json.dumps({"cfg": cfg.to_dict(), "task": task}, sort_keys=True).encode())
        for f in (manifest.path, manifest.spec_path):
            digest.update(Path(f).read_bytes())
        key = digest.hexdigest()[:16]
        found = client.search_runs(where, f"tags.`{ROLE_TAG}` = 'single-task' and tags.`mtl.single_key` = '{key}' "
                                          f"and attributes.status = 'FINISHED'", max_results=1)
        if found:
            runs[task] = found[0].info.run_id
            continue
        print(f"single-task baseline '{task}' ({epochs} epochs): training it once")
        tags = {STUDY_TAG: study.name, ROLE_TAG: "single-task", "mtl.task": task, "mtl.single_key": key}
        with tracking.RunLogger(client, experiment_id, f"single-{task}", parent_id, tags) as run:
            run.log_params({**tracking.flatten_config(cfg), "manifest": study.manifest, "single_task": task})
            with run.artifact_dir("checkpoints") as ckpt_dir:
                result = fit(cfg, manifest, ckpt_dir, on_epoch=run.log_epoch, only=[task])
            t = manifest.task(task)
            ci = split_intervals([t], result.val_outputs, manifest, "val")[task]
            run.log_metrics({f"best_val/{t.metric_key}": ci.value, f"best_val/{t.metric_key}_lo": ci.lo,
                             f"best_val/{t.metric_key}_hi": ci.hi})
        runs[task] = run.run_id
    return runs


def single_task_stats(tasks, manifest, runs: dict[str, str]) -> dict:
    """Each single-task baseline's val statistics (its best epoch's outputs, from its run's artifacts)."""
    import mlflow
    import torch
    targets, masks = manifest.targets("val")
    out = {}
    for t in tasks:
        path = mlflow.artifacts.download_artifacts(run_id=runs[t.name], artifact_path="checkpoints/val_outputs.pt")
        outputs = torch.load(path, map_location="cpu", weights_only=True)["outputs"][t.name]
        out[t.name] = sample_stats(t, outputs, targets[t.name], masks[t.name])
    return out


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


def parent_run(client, experiment_id: str, study: Study, storage_url: str, manifest) -> str:
    """The study's parent run, created once and reused on resume."""
    found = client.search_runs([experiment_id], f"tags.`{ROLE_TAG}` = 'parent'", max_results=1)
    if found:
        return found[0].info.run_id
    run = tracking.RunLogger(client, experiment_id, study.name, tags={STUDY_TAG: study.name, ROLE_TAG: "parent",
                                                                     "mlflow.note.content": study.doc})
    run.log_params({"manifest": study.manifest, "objectives": ",".join(study.objectives),
                    "storage": tracking.redact(storage_url)})
    run.log_dataset(manifest)  # creates the experiment's dataset row once, before workers race for it
    return run.run_id


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
        trials = min(trials, len(todo)) if todo and not args.trials else trials
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
    best = {}
    for i, task in enumerate(tasks):
        vals = [(t.values[i], t.number) for t in complete]
        if vals:
            best[task.name] = (min if task.direction == "minimize" else max)(vals)[1]
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
