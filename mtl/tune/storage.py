"""Optuna storage for studies: where a study lives (a journal file by default, any RDB URL), opening it
with its sampler, resuming it (stale trials of dead workers failed, queued entries not yet run), and
opening a study that has run for the commands that read it."""

from __future__ import annotations

import os
import socket
import zlib
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from mtl.errors import UserError
from mtl.track import tracking
from mtl.tune import optuna_adapter
from mtl.tune.studies import Study, load_study


def default_storage(name: str) -> str:
    return str(Path("optuna") / f"{name}.log")


def make_storage(url: str):
    """A journal file (the default: a local path, safe for several processes) or any RDB URL."""
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    if url.split("://")[0].split("+")[0] not in ("sqlite", "postgresql", "mysql"):
        raise UserError(f"STORAGE {tracking.redact(url)}: expected a file path, sqlite://, postgresql:// or mysql:// URL")
    try:
        # heartbeats let a resumed study fail the trials of a worker that was killed (kill -9)
        return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90,
                                          heartbeat_stale_trial_callback=close_stale_run,
                                          engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)
    except Exception as e:
        raise UserError(f"STORAGE {tracking.redact(url)}: cannot open ({type(e).__name__})") from None


def close_stale_run(study, trial) -> None:
    """Optuna's heartbeat failed a trial whose worker died: end its MLflow run FAILED too."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        tracking.RunLogger(tracking.get_client(), "", "", run_id=run_id).end("FAILED", "worker died (stale trial)")


def sampler_seed(base: int, worker_index: int, trials_so_far: int) -> int:
    """A resumed or parallel study must never replay the draws of an earlier start: the sampler seed
    mixes the base seed, the worker, the trials already stored and the host (workers on several
    machines), so a fresh single-machine study stays reproducible while no two starts share a seed."""
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
        optuna_adapter.set_user_attr(s, t, "fail_reason", "worker died (stale trial)")
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


def open_existing(name: str, storage: str | None):
    """(Study spec, Optuna study, completed trials); one clear line if there is no such study or no trial."""
    study = load_study(name)
    url = storage or default_storage(name)
    if "://" not in url and not Path(url).is_file():
        raise UserError(f"study '{name}' has not been run yet (no {url}); run: make tune STUDY={name}")
    try:
        s = optuna.load_study(study_name=name, storage=make_storage(url))
    except KeyError:
        raise UserError(f"no study '{name}' in {tracking.redact(url)}; run: make tune STUDY={name}") from None
    done = [t for t in s.trials if t.state == TrialState.COMPLETE and "mlflow_run_id" in t.user_attrs]
    if not done:
        raise UserError(f"study '{name}' has no completed trial yet; run: make tune STUDY={name}")
    return study, s, done


def directions_of(s) -> list[str]:
    return [d.name.lower() for d in s.directions]
