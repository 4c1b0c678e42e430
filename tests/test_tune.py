"""A tiny end-to-end study through the real entry point, checked through MLflow and Optuna; resume; bad input."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest

from mtl.__main__ import main

STUDY = '''
"""Tiny study for tests."""
from mtl.train.config import TrainConfig
MANIFEST = "{manifest}"
OBJECTIVES = ["gender", "region", "fighting_style", "alignment", "colors"]
TRIALS = 2
EPOCHS = 1
BASE = TrainConfig(image_size=32, batch_size=16)


def search_space(trial, base):
    return base.replace(head_dims=[trial.suggest_categorical("head_size", [8, 16])],
                        bn_momentum=trial.suggest_float("bn_momentum", 0.01, 0.5, log=True),
                        loss_weights={{"alignment": trial.suggest_float("loss_weight.alignment", 0.5, 2, log=True)}})
'''


@pytest.fixture
def study_dir(isolated_stores, fgo_small):
    exp = isolated_stores / "experiments"
    exp.mkdir()
    (exp / "tiny.py").write_text(STUDY.format(manifest=fgo_small))
    return isolated_stores


def test_tiny_study_end_to_end_and_resume(study_dir, capsys):
    assert main(["tune", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "pareto" in out and "make ui" in out

    runs = mlflow.search_runs(experiment_names=["tiny"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("mtl.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mtl.role") == "trial"]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    client = mlflow.MlflowClient()
    for r in children:
        assert r.info.status == "FINISHED"
        assert r.data.tags["mtl.parent_run"] == parent.info.run_id and "mlflow.parentRunId" not in r.data.tags
        assert r.info.run_name == f"trial-{r.data.tags['optuna.trial_number']}"
        assert {"head.dims", "bn.momentum", "loss_weight.alignment", "backbone"} <= set(r.data.params)
        for key in ("val/gender/acc", "val/colors/f1", "val/alignment/acc", "train/region/loss", "weight/colors"):
            hist = client.get_metric_history(r.info.run_id, key)
            assert [m.step for m in hist] == [1], key
        assert "best_val/alignment/acc" in r.data.metrics
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(r.data.metrics)
        arts = [a.path for a in client.list_artifacts(r.info.run_id, "checkpoints")]
        assert "checkpoints/index.json" in arts and any(a.endswith(".pt") for a in arts)
        assert r.inputs.dataset_inputs[0].dataset.name == "fgo"

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend("optuna/tiny.log"))
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert study.metric_names == ["val/gender/acc", "val/region/acc", "val/fighting_style/acc",
                                  "val/alignment/acc", "val/colors/f1"]
    by_number = {t.number: t for t in study.trials}
    for r in children:  # run <-> trial both ways
        t = by_number[int(r.data.tags["optuna.trial_number"])]
        assert t.user_attrs["mlflow_run_id"] == r.info.run_id
        assert r.data.metrics["best_val/gender/acc"] == pytest.approx(t.values[0])

    # resume: two more trials join the same study, parent and experiment
    assert main(["tune", "tiny", "--trials", "2"]) == 0
    study = optuna.load_study(study_name="tiny", storage=storage)
    numbers = [t.number for t in study.trials]
    assert len(numbers) == 4 and len(set(numbers)) == 4
    runs = mlflow.search_runs(experiment_names=["tiny"], output_format="list")
    assert len([r for r in runs if r.data.tags.get("mtl.role") == "parent"]) == 1
    assert len([r for r in runs if r.data.tags.get("mtl.role") == "trial"]) == 4


def test_unknown_study_lists_existing(study_dir, capsys):
    assert main(["tune", "nonexistent"]) != 0
    err = capsys.readouterr().err
    assert "no study 'nonexistent'" in err and "tiny" in err and "Traceback" not in err


@pytest.mark.parametrize("args,needle", [(["--trials", "0"], "TRIALS=0"), (["--epochs", "-1"], "EPOCHS=-1"),
                                         (["--workers", "0"], "WORKERS=0"),
                                         (["--trials", "abc"], "TRIALS=abc: must be a positive integer"),
                                         (["--storage", "ftp://u:secret@h/x"], "STORAGE ftp://u:***@h/x")])
def test_bad_knobs_one_line(study_dir, capsys, args, needle):
    assert main(["tune", "tiny", *args]) != 0
    err = capsys.readouterr().err
    assert needle in err and "secret" not in err and "Traceback" not in err


def test_broken_search_space_names_file(study_dir, capsys):
    p = Path("experiments/broken.py")
    p.write_text(STUDY.format(manifest=Path("experiments/tiny.py").read_text().split('"')[7])
                 .replace('[8, 16]', '[]'))
    assert main(["tune", "broken"]) != 0
    err = capsys.readouterr().err
    assert "experiments/broken.py: search space fails" in err and "Traceback" not in err


def test_corrupt_image_rejected_before_any_trial(study_dir, tmp_path, capsys, fgo_small):
    import shutil
    dst = tmp_path / "copy"
    shutil.copytree(fgo_small.parent, dst)
    img = next((dst / "images").rglob("*.png"))
    img.write_bytes(b"garbage")
    Path("experiments/corrupt.py").write_text(STUDY.format(manifest=dst / fgo_small.name))
    assert main(["tune", "corrupt"]) != 0
    err = capsys.readouterr().err
    assert "cannot decode image" in err
    assert mlflow.MlflowClient().get_experiment_by_name("corrupt") is None  # nothing half-written


def test_every_committed_study_loads_and_samples(tmp_path, monkeypatch):
    from mtl.data.manifest import read_manifest
    from mtl.tune.studies import available_studies, check_search_space, load_study

    # the studies' ImageNet files, as `make weights` or a user without a network would place them
    from tests.test_studies_run import place_weights
    place_weights(tmp_path, monkeypatch)
    names = available_studies()
    assert {"fgo_regularization", "utk_weighting", "fgo_rounds"} <= set(names)
    for n in names:
        s = load_study(n)
        m, _ = read_manifest(s.manifest)
        if m is None and "multimnist" in s.manifest:  # generated data (make data-multimnist): a tiny one here
            from mtl.data import multimnist
            from tests.test_multimnist import tiny_mnist
            (tmp_path / "idx").mkdir(exist_ok=True)
            csv = multimnist.make_multimnist(tiny_mnist(tmp_path / "idx"), tmp_path / "mm" / "multimnist.csv",
                                             {"train": 12, "val": 4, "test": 4})
            m, _ = read_manifest(multimnist.two_task_path(csv))
        check_search_space(s, m.tasks)  # also builds each config's model: backbone, init, freeze
        assert s.doc and "make tune STUDY=" in s.doc



def test_dashboard_shows_the_study_with_its_objectives_by_name(study_dir):
    """`make dashboard`'s command over a real study's journal: optuna-dashboard lists the study, its trials
    and the objectives under their metric names."""
    import json
    import subprocess
    import sys
    import time
    import urllib.request
    from pathlib import Path

    from tests.servers import free_port
    assert main(["tune", "tiny"]) == 0
    port = free_port()
    exe = Path(sys.executable).with_name("optuna-dashboard")
    proc = subprocess.Popen([str(exe), "optuna/tiny.log", "--host", "127.0.0.1", "--port", str(port), "--server",
                             "wsgiref", "--quiet"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        study = None
        for _ in range(60):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/0?after=0", timeout=2) as r:
                    study = json.loads(r.read())
                break
            except OSError:
                time.sleep(0.5)
        assert study is not None, "the dashboard did not answer"
        assert study["name"] == "tiny" and len(study["trials"]) == 2
        assert study["objective_names"] == ["val/gender/acc", "val/region/acc", "val/fighting_style/acc",
                                            "val/alignment/acc", "val/colors/f1"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)
