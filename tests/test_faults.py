"""Faults inside a study: diverging and raising trials fail alone; parallel workers; stale trials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import mlflow
import optuna
import pytest

from mtl.__main__ import main
from tests.test_tune import STUDY

FAULTY = STUDY.replace("def search_space(trial, base):", '''def search_space(trial, base):
    if trial.number == 1:
        raise RuntimeError("boom in trial 1")
    if trial.number == 2:  # absurd learning rate: the loss leaves the finite numbers
        return base.replace(lr_backbone=1e30, lr_heads=1e30, weight_decay=0.0)''')


def journal(name):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(f"optuna/{name}.log"))
    return optuna.load_study(study_name=name, storage=storage)


def test_diverging_and_raising_trials_fail_and_study_goes_on(isolated_stores, fgo_small, capsys):
    (isolated_stores / "experiments").mkdir()
    (isolated_stores / "experiments" / "faulty.py").write_text(FAULTY.format(manifest=fgo_small))
    assert main(["tune", "faulty", "--trials", "4"]) == 0
    s = journal("faulty")
    states = {t.number: t.state.name for t in s.trials}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "FAIL", 3: "COMPLETE"}
    assert "diverged" in s.trials[2].user_attrs["fail_reason"]
    runs = {r.info.run_name: r for r in mlflow.search_runs(experiment_names=["faulty"], output_format="list")}
    assert runs["trial-2"].info.status == "FAILED" and "DivergedError" in runs["trial-2"].data.tags["mtl.failure"]
    assert runs["trial-0"].info.status == runs["trial-3"].info.status == "FINISHED"
    assert "trial-1" not in runs or runs["trial-1"].info.status == "FAILED"
    assert not any(r.info.status == "RUNNING" for r in runs.values())


def test_two_workers_exact_trials(isolated_stores, fgo_small):
    (isolated_stores / "experiments").mkdir()
    (isolated_stores / "experiments" / "par.py").write_text(STUDY.format(manifest=fgo_small))
    assert main(["tune", "par", "--trials", "3", "--workers", "2"]) == 0
    s = journal("par")
    assert sorted(t.number for t in s.trials) == [0, 1, 2]
    assert all(t.state.name == "COMPLETE" for t in s.trials)
    runs = mlflow.search_runs(experiment_names=["par"], filter_string="tags.`mtl.role` = 'trial'",
                              output_format="list")
    assert sorted(r.info.run_name for r in runs) == ["trial-0", "trial-1", "trial-2"]
    assert all(r.info.status == "FINISHED" for r in runs)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_interrupt_and_kill_then_resume(isolated_stores, fgo_small, sig):
    """Ctrl-C closes the running trial and run; kill -9 leaves a stale trial that the next start fails.
    Either way the next run resumes and no completed trial is lost."""
    (isolated_stores / "experiments").mkdir()
    slow = STUDY.replace("EPOCHS = 1", "EPOCHS = 30")
    (isolated_stores / "experiments" / "long.py").write_text(slow.format(manifest=fgo_small))
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    p = subprocess.Popen([sys.executable, "-m", "mtl", "tune", "long", "--trials", "1"], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 120
    while time.time() < deadline:
        runs = mlflow.search_runs(experiment_names=["long"], output_format="list") if \
            mlflow.MlflowClient().get_experiment_by_name("long") else []
        if any(r.info.run_name == "trial-0" and r.data.metrics for r in runs):
            break
        time.sleep(1)
    p.send_signal(sig)
    p.wait(60)
    assert main(["tune", "long", "--trials", "1", "--epochs", "1"]) == 0
    s = journal("long")
    assert [t.state.name for t in s.trials] == ["FAIL", "COMPLETE"]
    runs = mlflow.search_runs(experiment_names=["long"], output_format="list")
    assert not any(r.info.status == "RUNNING" for r in runs)
    status = {r.info.run_name: r.info.status for r in runs}
    assert status["trial-0"] == ("KILLED" if sig == signal.SIGINT else "FAILED")
