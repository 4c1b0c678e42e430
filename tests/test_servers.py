"""Slow: a study read back through a real `mlflow server`'s REST API; two workers on PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys

import mlflow
import optuna
import pytest

from tests.servers import mlflow_server, postgres
from tests.test_tune import STUDY

pytestmark = pytest.mark.slow


def run_tune(cwd, env_extra, *args):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), **env_extra}
    return subprocess.run([sys.executable, "-m", "mtl", "tune", "tiny", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def write_study(root, manifest):
    (root / "experiments").mkdir(exist_ok=True)
    (root / "experiments" / "tiny.py").write_text(STUDY.format(manifest=manifest))


def test_study_through_mlflow_server_rest(tmp_path, fgo_small):
    write_study(tmp_path, fgo_small)
    with mlflow_server(f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts") as url:
        r = run_tune(tmp_path, {"MLFLOW_TRACKING_URI": url}, "--trials", "2")
        assert r.returncode == 0, r.stderr[-2000:]
        client = mlflow.MlflowClient(tracking_uri=url)  # REST, not the DB file
        exp = client.get_experiment_by_name("tiny")
        runs = client.search_runs([exp.experiment_id])
        assert runs, r.stdout[-2000:]
        trials = [x for x in runs if x.data.tags.get("mtl.role") == "trial"]
        assert len(trials) == 2 and all(x.info.status == "FINISHED" for x in trials)
        hist = client.get_metric_history(trials[0].info.run_id, "val/colors/f1")
        assert [m.step for m in hist] == [1]
        arts = [a.path for a in client.list_artifacts(trials[0].info.run_id, "checkpoints")]
        assert "checkpoints/index.json" in arts


def test_two_workers_on_postgresql(tmp_path, fgo_small):
    write_study(tmp_path, fgo_small)
    with postgres(tmp_path / "pg") as (hostport, sql):
        sql("CREATE DATABASE optuna")
        sql("CREATE DATABASE mlflow")
        secret = "s3cret-pw"
        optuna_url = f"postgresql://mtl:{secret}@{hostport}/optuna"
        with mlflow_server(f"postgresql://mtl:{secret}@{hostport}/mlflow", tmp_path / "artifacts") as url:
            r = run_tune(tmp_path, {"MLFLOW_TRACKING_URI": url}, "--trials", "4", "--workers", "2",
                         "--storage", optuna_url)
            assert r.returncode == 0, r.stderr[-3000:]
            assert secret not in r.stdout + r.stderr
            study = optuna.load_study(study_name="tiny", storage=optuna_url)
            numbers = sorted(t.number for t in study.trials)
            assert numbers == [0, 1, 2, 3] and all(t.state.name == "COMPLETE" for t in study.trials)
            client = mlflow.MlflowClient(tracking_uri=url)
            runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
            trials = [x for x in runs if x.data.tags.get("mtl.role") == "trial"]
            assert sorted(x.info.run_name for x in trials) == [f"trial-{i}" for i in range(4)]
            assert all(x.info.status == "FINISHED" for x in trials)
            for x in runs:  # the password never lands in params or tags
                assert not any(secret in str(v) for v in {**x.data.params, **x.data.tags}.values())
