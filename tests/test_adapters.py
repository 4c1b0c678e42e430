"""The private Optuna and MLflow calls mtl makes, each pinned here through its one adapter, so a library
upgrade that moves one fails in this file first."""

from __future__ import annotations

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest

from mtl.track import mlflow_adapter
from mtl.tune import optuna_adapter


def test_hypervolume_matches_inclusion_exclusion():
    pts = np.array([[1.0, 2.0], [2.0, 1.0]])
    # union of [1,3]x[2,3] and [2,3]x[1,3]: 2 + 2 - 1
    assert optuna_adapter.hypervolume(pts, np.array([3.0, 3.0])) == pytest.approx(3.0)


def test_user_attr_on_another_process_running_trial():
    s = optuna.create_study()
    s.ask()  # running, as a dead worker's trial is: here only its frozen copy is at hand
    frozen = s.get_trials(states=(optuna.trial.TrialState.RUNNING,))[0]
    optuna_adapter.set_user_attr(s, frozen, "fail_reason", "worker died")
    assert s.trials[0].user_attrs["fail_reason"] == "worker died"
    assert optuna_adapter.trial_id(frozen) != optuna_adapter.trial_id(s.ask())


@pytest.mark.filterwarnings("ignore::pandas.errors.Pandas4Warning")  # MLflow's dataset digest calls pandas so
def test_artifacts_deleted_and_dataset_inputs_logged(isolated_stores):
    client = mlflow.MlflowClient()
    exp = client.create_experiment("adapters", artifact_location=(isolated_stores / "arts").as_uri())
    run = client.create_run(exp)
    f = isolated_stores / "a.txt"
    f.write_text("x")
    client.log_artifact(run.info.run_id, str(f), "dir")
    client.log_artifact(run.info.run_id, str(f), "keep")
    mlflow_adapter.delete_artifacts(run.info.artifact_uri, "dir/a.txt")
    assert [a.path for a in client.list_artifacts(run.info.run_id, "dir")] == []
    assert [a.path for a in client.list_artifacts(run.info.run_id, "keep")] == ["keep/a.txt"]
    ds = mlflow.data.from_pandas(pd.DataFrame({"image": ["a.png", "b.png"], "split": ["train", "val"]}), source="m.csv", name="m")
    client.log_inputs(run.info.run_id, [mlflow_adapter.dataset_input(ds, "training")])
    inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.tags[0].value) for i in inputs] == [("m", "training")]
    mlflow_adapter.stop_system_metrics(None)  # nothing started: nothing to stop


@pytest.mark.filterwarnings("ignore:Starting with pandas version 4.0")  # MLflow's digest's own pandas call
def test_a_manifest_dataset_is_built_once_and_linked_to_every_run(isolated_stores, fgo_small, monkeypatch):
    """Each trial links the manifest as a dataset input; building it (schema, profile) happens once per
    loaded manifest, and a manifest whose table was replaced is built again."""
    from mtl.data.manifest import load_manifest
    from mtl.track import tracking
    client = mlflow.MlflowClient()
    exp = tracking.ensure_experiment(client, "datasets")
    built = []
    real = mlflow.data.from_pandas
    monkeypatch.setattr(mlflow.data, "from_pandas", lambda *a, **k: built.append(1) or real(*a, **k))
    m = load_manifest(fgo_small)
    runs = []
    for _ in range(3):
        with tracking.RunLogger(client, exp, "t") as run:
            run.log_dataset(m)
            runs.append(run.run_id)
    assert len(built) == 1
    digests = {client.get_run(r).inputs.dataset_inputs[0].dataset.digest for r in runs}
    assert len(digests) == 1
    m.table = m.table.iloc[:-1]  # another table: another digest
    with tracking.RunLogger(client, exp, "t") as run:
        run.log_dataset(m)
    assert len(built) == 2 and client.get_run(run.run_id).inputs.dataset_inputs[0].dataset.digest not in digests
