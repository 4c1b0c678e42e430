"""What runs inside a study: one trial (`Objective`: config, MLflow run, training, early stopping, scores),
the study's progress on its parent run after each trial (`Progress`), and one worker process (`worker`).

Every trial is one top-level MLflow run `trial-<n>` (or the round's name) in the study's experiment,
tagged with the study's parent run. A trial stops early on `patience` (its mean per-task val score has
not improved for that many epochs) or on EARLY_STOP (mtl/tune/early_stop.py: completed trials dominate it
at the same epoch); Optuna records an early-stopped trial as PRUNED, its run is FINISHED and tagged.
"""

from __future__ import annotations

import math
import os
import socket
import time
from dataclasses import dataclass

import optuna
import torch
from optuna.trial import TrialState

from mtl.bootstrap import GroupBootstrap, delta_m, sample_stats, split_intervals
from mtl.data.manifest import load_manifest
from mtl.methods import DivergedError
from mtl.model.metrics import constant_score
from mtl.quiet import quiet
from mtl.track import tracking
from mtl.train.loop import fit
from mtl.tune import optuna_adapter
from mtl.tune.early_stop import CURVE_ATTR, SCHEDULE_ATTR, completed_curves, curve_key, should_stop
from mtl.tune.front import hypervolume
from mtl.tune.runs import single_task_stats, trial_tags
from mtl.tune.storage import duplicate_of, open_study
from mtl.tune.studies import Study, load_study, trial_config


class EarlyStopped(Exception):
    """Raised from the epoch callback to end a trial that completed trials dominate."""


STOPPED_AT_ATTR = "stopped_at_epoch"  # an early-stopped trial's last epoch (what audit-pruning re-runs from)


def trial_run_config(study: Study, trial, epochs: int, pretrain: str | None):
    """The config trial `trial` trains (also for a FixedTrial replaying it): the study's search space, the
    trial's own seed (base seed + trial number), and the PRETRAIN warm start where the config has none."""
    cfg = trial_config(study, trial, epochs)
    cfg = cfg.replace(seed=cfg.seed + trial.number)
    return cfg.replace(init=pretrain) if pretrain and cfg.init is None else cfg


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
        cfg = trial_run_config(self.study, trial, self.epochs, self.pretrain)
        dup = duplicate_of(trial)
        if dup is not None:  # a sampler can repeat itself on a small space: never train the same config twice
            trial.set_user_attr("duplicate_of", dup)
            raise optuna.TrialPruned(f"same parameters as trial {dup}")
        trial.set_user_attr("epochs", cfg.epochs)
        trial.set_user_attr(SCHEDULE_ATTR, curve_key(cfg.epochs, cfg.scheduler))
        trial.set_user_attr("pid", os.getpid())
        trial.set_user_attr("host", socket.gethostname())
        # trials are the experiment's top-level rows (what the UI's runs table and charts compare); the
        # parent run holds the study's own runs (pretrain, single-task baselines, ensemble) as children
        tags = trial_tags(self.study, trial.number, optuna_adapter.trial_id(trial), self.parent_id)
        name = str(trial.params["round"]) if self.study.configs and "round" in trial.params else f"trial-{trial.number}"
        stopped = None  # set when early stopping ends the trial: Optuna records it as PRUNED
        with tracking.RunLogger(self.client, self.experiment_id, name, None, tags, system_metrics=True) as run:
            trial.set_user_attr("mlflow_run_id", run.run_id)
            run.log_params({**tracking.flatten_config(cfg), "manifest": self.study.manifest,
                            **{f"optuna.{k}": v for k, v in trial.params.items()}})
            run.log_dataset(self.manifest)
            t0 = time.perf_counter()
            with run.artifact_dir("checkpoints") as ckpt_dir:
                try:
                    result = fit(cfg, self.manifest, ckpt_dir, on_epoch=self.on_epoch(trial, run, cfg), half=True)
                except DivergedError as e:
                    trial.set_user_attr("fail_reason", f"diverged: {e}")
                    raise
                except EarlyStopped as e:  # dominated by completed trials: a finished run, tagged
                    stopped = optuna.TrialPruned(str(e))
                    run.set_tags({"pruned": "true"})
                    self.stopped_early += 1
                    if self.bar is not None:  # early stopping shows: how many so far, and this one's reason
                        self.bar.set_description(f"{self.study.name} ({self.stopped_early} stopped early)")
                        self.bar.write(f"trial {trial.number}: {e}")
                    run.log_metrics({"trial_seconds": time.perf_counter() - t0})
            if stopped is None:
                values = self.log_result(trial, run, result, time.perf_counter() - t0)
        if stopped is not None:
            raise stopped
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
            done = completed_curves(trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
                                    curve_key(cfg.epochs, cfg.scheduler), self.study.objectives)
            if should_stop(epoch, curve, done, self.directions, rule, self.scales, cfg.best_epoch == "per_task"):
                trial.set_user_attr(STOPPED_AT_ATTR, epoch)
                raise EarlyStopped(f"dominated at epoch {epoch} by {rule.k}+ completed trials")

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
                        | {"trial_seconds": seconds, "epochs_run": len(result.history),
                           "trainable_params": result.trainable_params})
        trial.set_user_attr("trainable_params", result.trainable_params)
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


def assign_gpu(worker_index: int) -> int | None:
    """With several visible GPUs, worker i trains on GPU i mod n (its current CUDA device); None without."""
    if not torch.cuda.is_available() or torch.cuda.device_count() < 2:
        return None
    gpu = worker_index % torch.cuda.device_count()
    torch.cuda.set_device(gpu)
    return gpu


def worker(launch: Launch, n_trials: int, worker_index: int) -> None:
    """One process: its own storage connection and sampler seed, `n_trials` trials, its own GPU if several."""
    quiet()
    assign_gpu(worker_index)
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
