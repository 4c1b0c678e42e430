"""Pareto selection, registry aliases, ensembles and captions, on random tables and a real tiny study."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import torch

from mtl.__main__ import main
from mtl.results.captions import caption
from mtl.results.combine import average
from mtl.results.selection import select
from mtl.serve.registry import load_best
from mtl.tasks import Task
from mtl.tune.front import best_per_task, dominates, pareto_front
from tests.test_tune import STUDY


@pytest.mark.parametrize("seed", range(5))
def test_front_matches_brute_force_and_optuna(seed):
    rng = random.Random(seed)
    directions = ["maximize", "maximize", "minimize"]
    values = [[rng.choice([0.1, 0.5, 0.9, rng.random()]), rng.random(), rng.choice([1.0, 2.0, rng.random()])]
              for _ in range(30)]
    front = set(pareto_front(values, directions))
    brute = {i for i, v in enumerate(values)
             if not any(all((w[k] >= v[k]) if d == "maximize" else (w[k] <= v[k]) for k, d in enumerate(directions))
                        and w != v for w in values)}
    assert front == brute
    study = optuna.create_study(directions=directions)
    for v in values:
        study.add_trial(optuna.trial.create_trial(values=v, params={}, distributions={}))
    assert front == {t.number for t in study.best_trials}
    for k, i in enumerate(best_per_task(values, directions)):
        col = [v[k] for v in values]
        assert values[i][k] == (max(col) if directions[k] == "maximize" else min(col))
        assert i in front or any(values[j][k] == values[i][k] for j in front)


def test_dominates():
    assert dominates([1, 1], [0, 1], ["maximize", "maximize"])
    assert not dominates([1, 1], [1, 1], ["maximize", "maximize"])
    assert dominates([1, 0], [1, 1], ["maximize", "minimize"])


TASKS = [Task("gender", "binary", ("Female", "Male")), Task("region", "multiclass", ("Asia", "Egypt", "Europe")),
         Task("colors", "multilabel", ("White", "Red", "Gold", "Silver", "Blue"), title="Main Colors"), Task("age", "regression")]


def test_ensemble_of_one_equals_the_model():
    g = torch.Generator().manual_seed(0)
    out = {"gender": torch.randn(6, generator=g), "region": torch.randn(6, 3, generator=g),
           "colors": torch.randn(6, 5, generator=g), "age": torch.rand(6, generator=g) * 80}
    for t in TASKS:
        avg = average(t, [out[t.name]])
        if t.kind == "multiclass":  # log-softmax of the logits: same argmax, same probabilities
            assert torch.allclose(torch.softmax(avg, -1), torch.softmax(out[t.name], -1), atol=1e-5)
        else:
            assert torch.allclose(avg, out[t.name], atol=1e-4)


def test_averaging_means_probabilities():
    t = TASKS[0]
    a, b = torch.logit(torch.tensor([0.9])), torch.logit(torch.tensor([0.3]))
    assert torch.allclose(torch.sigmoid(average(t, [a, b])), torch.tensor([0.6]), atol=1e-5)
    r = TASKS[3]
    assert torch.allclose(average(r, [torch.tensor([10.0]), torch.tensor([30.0])]), torch.tensor([20.0]))


def test_caption_in_writeup_form():
    out = {"gender": torch.tensor(-2.0), "region": torch.tensor([0.1, 0.2, 3.0]),
           "colors": torch.tensor([-1.0, -3.0, 2.0, 3.0, 1.0]), "age": torch.tensor(34.24)}
    assert caption(TASKS, out) == ("Gender: Female, Region: Europe, Main Colors: ['Silver', 'Gold', 'Blue'], "
                                   "Age: 34.2")


@pytest.fixture(scope="module")
def tiny_study_pristine(tmp_path_factory, fgo_small):
    """A real 3-trial, 1-epoch study in its own stores, trained once per module; tests take it through `tiny_study`."""
    root = tmp_path_factory.mktemp("study")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root / 'mlflow.db'}")
        mp.chdir(root)
        (root / "experiments").mkdir()
        (root / "experiments" / "tiny.py").write_text(STUDY.format(manifest=fgo_small))
        assert main(["tune", "tiny", "--trials", "3"]) == 0
        yield root


@pytest.fixture
def tiny_study(tiny_study_pristine):
    """The tiny study's stores as trained, put back before each test (pareto deletes checkpoints, tests register
    and re-register models), so no test sees another's changes. Restored at the same path: the MLflow DB's
    artifact locations stay valid, and so does MLflow's per-run artifact-repository cache."""
    import sqlite3
    root = tiny_study_pristine
    snapshot = root.with_name(root.name + "-snapshot")
    if not snapshot.exists():
        shutil.copytree(root, snapshot)
    for entry in root.iterdir():
        if entry.name != "mlflow.db":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    for entry in snapshot.iterdir():
        if entry.name != "mlflow.db":
            (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, root / entry.name)
    # the DB is overwritten in place (SQLite's backup API): a connection MLflow keeps open reads the new rows
    with sqlite3.connect(snapshot / "mlflow.db") as src, sqlite3.connect(root / "mlflow.db") as dst:
        src.backup(dst)
    return root


def test_pareto_ensemble_predict_commands(tiny_study, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_study / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tiny_study / 'mlflow.db'}")
    monkeypatch.chdir(tiny_study)
    assert main(["pareto", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "Pareto member(s) of 3 completed trial(s)" in out
    assert "Tied with the task's best on val" in out and "Best trial vs runner-up per task" in out
    client = mlflow.MlflowClient()
    runs = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`mtl.role` = 'trial'",
                              output_format="list")
    for task in ("gender", "colors"):  # each task's best is among the trials tied with it
        best_run = next(r for r in runs if task in r.data.tags["best_for"].split(","))
        assert task in best_run.data.tags["tied_best_for"].split(",")
    assert all(r.data.metrics["trainable_params"] > 0 for r in runs)
    assert {r.data.tags["pareto"] for r in runs} <= {"true", "false"} and any(r.data.tags["pareto"] == "true"
                                                                             for r in runs)
    best_for = ",".join(r.data.tags["best_for"] for r in runs)
    for r in runs:  # dominated trials lose their checkpoint files (never needed again); front members keep them
        files = [a.path for a in client.list_artifacts(r.info.run_id, "checkpoints")]
        assert "checkpoints/index.json" in files and "checkpoints/val_outputs.pt" in files
        has_epochs = any("epoch-" in f for f in files)
        assert has_epochs == (r.data.tags["pareto"] == "true"), (r.info.run_name, r.data.tags, files)
    for task in ("gender", "region", "fighting_style", "alignment", "colors"):
        assert task in best_for
        mv = client.get_model_version_by_alias("tiny", f"best-{task}")
        assert task in mv.tags["task"].split(",") and mv.source.startswith("models:/m-")
        ck = load_best("tiny", task)
        run = client.get_run(mv.run_id)
        assert float(mv.tags[f"val_score.{task}"]) == pytest.approx(
            run.data.metrics[f"best_val/{task}/{'f1' if task == 'colors' else 'acc'}"], rel=1e-5)
        assert ck["epoch"] == 1
        lm = mlflow.get_logged_model(mv.source.split("/")[-1])  # a logged model of the trial run, with its val metrics
        assert lm.source_run_id == mv.run_id and any(m.key.startswith(f"val/{task}/") for m in lm.metrics)
    # one model for every task's best answers each task exactly as that task's own best model does
    composite = mlflow.pyfunc.load_model("models:/tiny@best")
    imgs = pd.DataFrame({"image": [str(p) for p in sorted(Path(str(tiny_study)).parent.rglob("*.png"))[:4]]})
    together = composite.predict(imgs)
    for task in ("gender", "region", "fighting_style", "alignment", "colors"):
        alone = mlflow.pyfunc.load_model(f"models:/tiny@best-{task}").predict(imgs)
        cols = [c for c in alone.columns if c == task or c.startswith(f"{task}.")]
        pd.testing.assert_frame_equal(together[cols], alone[cols])
    versions = {client.get_model_version_by_alias("tiny", f"best-{t}").version for t in ("gender", "colors")}
    assert main(["pareto", "tiny"]) == 0  # unchanged study: the same versions, no new ones
    assert versions == {client.get_model_version_by_alias("tiny", f"best-{t}").version for t in ("gender", "colors")}
    capsys.readouterr()
    assert (tiny_study / "reports/tiny/pareto_front.png").stat().st_size > 1000
    assert (tiny_study / "reports/tiny/hypervolume.png").stat().st_size > 1000
    assert (tiny_study / "reports/tiny/importances.png").stat().st_size > 1000
    parent = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`mtl.role` = 'parent'",
                                output_format="list")[0]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "pareto")}
    assert {"pareto/hypervolume.png", "pareto/importances.png", "pareto/pareto_front.png", "pareto/front.json",
            "pareto/val_curves.png"} <= logged
    import json
    table = json.loads(Path(client.download_artifacts(parent.info.run_id, "pareto/front.json", str(tiny_study))).read_text())
    front = pd.DataFrame(table["data"], columns=table["columns"])
    assert {"trial", "gender", "gender_lo", "gender_hi", "best_for"} <= set(front.columns) and len(front) >= 1

    assert main(["ensemble", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "| routing |" in out and "averaging" in out and "trial-" in out
    report = (tiny_study / "reports/tiny/report.md").read_text()
    curse = report.split("## Selection on val and what it cost (winner's curse)")[1]
    assert "tied with the tuned best on val" in curse and "→" in curse and " of 3 |" in curse
    assert (tiny_study / "reports/tiny/ensemble_test.csv").is_file()
    ens = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`mtl.role` = 'ensemble'",
                             output_format="list")
    assert ens and "test/alignment/acc" in ens[0].data.metrics
    from mtl.serve.registry import model_id_of
    first = client.get_logged_model(model_id_of(client.get_model_version_by_alias("tiny", "ensemble")))
    first_files = Path(first.artifact_location.removeprefix("file://"))
    assert (first_files / "MLmodel").is_file()
    assert main(["ensemble", "tiny"]) == 0  # again: still one ensemble run
    ens = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`mtl.role` = 'ensemble'",
                             output_format="list")
    assert len(ens) == 1
    # the registry keeps what its aliases name: the replaced ensemble version is gone, with its files
    aliased = {str(v) for v in client.get_registered_model("tiny").aliases.values()}
    assert {str(v.version) for v in client.search_model_versions("name = 'tiny'")} == aliased
    assert not (first_files / "MLmodel").exists()
    model = mlflow.pyfunc.load_model("models:/tiny@ensemble")
    imgs = [str(p) for p in sorted((Path(str(tiny_study)).parent).rglob("*.png"))[:3]]
    got = model.predict(pd.DataFrame({"image": imgs}))
    assert len(got) == 3 and {"gender", "region", "fighting_style", "alignment", "colors"} <= set(got.columns)
    capsys.readouterr()

    assert main(["predict", "tiny", "-n", "3"]) == 0
    out = capsys.readouterr().out
    assert out.count("Gender: ") >= 6 and "Main Colors: [" in out and "true:" in out
    assert (tiny_study / "reports/tiny/gallery.png").is_file()
    on_parent = {a.path for a in client.list_artifacts(parent.info.run_id, "predict")} | \
        {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"predict/gallery.png", "report/report.md", "report/ensemble_test.json"} <= on_parent
    img = next((Path(str(tiny_study)).parent).rglob("*.png"))
    assert main(["predict", "tiny", str(img), "--model", "best-colors"]) == 0


def test_best_models_load_and_predict_as_mlflow_pyfunc(tiny_study, monkeypatch):
    """`models:/<study>@best-<task>` loads with mlflow.pyfunc and predicts what `make predict` predicts."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_study / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tiny_study / 'mlflow.db'}")
    monkeypatch.chdir(tiny_study)
    assert main(["pareto", "tiny"]) == 0
    from mtl.commands.predict import run_models
    from mtl.data.manifest import load_manifest
    from mtl.train.checkpoints import model_from_checkpoint
    from mtl.tune.studies import load_study
    m = load_manifest(load_study("tiny").manifest)
    paths = [m.root / p for p in m.rows("test")["image"].iloc[:3]]
    for task in ("gender", "colors"):
        model = mlflow.pyfunc.load_model(f"models:/tiny@best-{task}")
        assert model.metadata.signature is not None and "image" in model.metadata.signature.inputs.input_names()
        got = model.predict(pd.DataFrame({"image": [str(p) for p in paths]}))
        assert len(got) == 3
        empty = model.predict(pd.DataFrame({"image": pd.Series([], dtype=str)}))  # no rows, the same columns
        assert len(empty) == 0 and list(empty.columns) == list(got.columns)
        net, cfg, tasks = model_from_checkpoint(load_best("tiny", task))
        ours = run_models({t.name: (net, cfg) for t in tasks}, paths)
        for i, out in enumerate(ours):
            assert got.loc[i, "gender"] == tasks[0].predict(out["gender"])
            assert got.loc[i, "colors"] == "|".join(m.task("colors").predict(out["colors"]))
            assert got.loc[i, "region"] == m.task("region").predict(out["region"])
        probs = got[[f"region.{c}" for c in m.task("region").classes]].to_numpy()
        assert probs.sum(1) == pytest.approx(1.0) and ((probs >= 0) & (probs <= 1)).all()
        assert got[[f"gender.{c}" for c in m.task("gender").classes]].to_numpy().sum(1) == pytest.approx(1.0)
    # logging a model does not change the trial run it is logged on
    mv = mlflow.MlflowClient().get_model_version_by_alias("tiny", "best-gender")
    run = mlflow.MlflowClient().get_run(mv.run_id)
    assert run.info.status == "FINISHED" and run.info.end_time - run.info.start_time < 60_000
    # a registered best model is a warm start like a checkpoint
    assert main(["train", "--manifest", str(m.path), "--epochs", "1", "--set", "image_size=32", "--set",
                 "init=models:/tiny@best-gender", "--no-track", "--out", str(tiny_study / "ws")]) == 0
    from mtl.train.artifacts import load_checkpoint
    ws = load_checkpoint(next((tiny_study / "ws").rglob("epoch-1.pt")))
    assert ws["config"]["init"] == f"models:/tiny/{mv.version}"  # the alias pinned to the version it named
    # stored whole: a registry version can be replaced and deleted, so none is a base to leave weights out against
    assert sum(k.startswith("backbone.") for k in ws["model"]) == sum(k.startswith("backbone.") for k in net.state_dict())


@pytest.mark.parametrize("cmd", ["pareto", "ensemble", "predict"])
def test_commands_on_missing_or_empty_study(isolated_stores, fgo_small, capsys, cmd):
    assert main([cmd, "nosuch"]) != 0
    assert "no study 'nosuch'" in capsys.readouterr().err
    (isolated_stores / "experiments").mkdir()
    (isolated_stores / "experiments" / "fresh.py").write_text(STUDY.format(manifest=fgo_small))
    assert main([cmd, "fresh"]) != 0
    err = capsys.readouterr().err
    assert ("has not been run yet" in err or "no registered model" in err) and "Traceback" not in err


def test_tampered_checkpoints_give_one_line(tiny_study, capsys, monkeypatch):
    """predict and ensemble on checkpoints that were overwritten: one line, exit 2 (then restored)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_study / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tiny_study / 'mlflow.db'}")
    monkeypatch.chdir(tiny_study)
    if main(["pareto", "tiny"]) != 0:
        pytest.fail("pareto failed")
    arts = tiny_study / "mlartifacts"  # the trials' checkpoints and the registered models' copies
    files = list(arts.rglob("epoch-*.pt")) + list(arts.rglob("m[0-9]*.pt"))
    saved = {f: f.read_bytes() for f in files}
    try:
        for f in files:
            f.write_bytes(b"tampered")
        capsys.readouterr()
        for cmd in (["predict", "tiny", "-n", "2"], ["ensemble", "tiny"]):
            assert main(cmd) == 2, cmd
            err = capsys.readouterr().err
            assert "not a readable checkpoint" in err and "Traceback" not in err
            assert len(err.strip().splitlines()) == 1
    finally:
        for f, data in saved.items():
            f.write_bytes(data)


def test_no_test_label_is_read_before_the_final_scoring(tiny_study, capsys, monkeypatch):
    """Every label read of `make ensemble`, in order: val for selection, then test exactly once, last."""
    from mtl.data.manifest import Manifest
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_study / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tiny_study / 'mlflow.db'}")
    monkeypatch.chdir(tiny_study)
    assert main(["pareto", "tiny"]) == 0
    reads = []
    real = Manifest.targets

    def spy(self, split):
        reads.append(split)
        return real(self, split)

    monkeypatch.setattr(Manifest, "targets", spy)
    assert main(["ensemble", "tiny"]) == 0
    assert reads.count("test") == 1 and reads[-1] == "test", reads
    assert "val" in reads
    report = (tiny_study / "reports/tiny/report.md").read_text()
    assert "tuned best - best constant" in report and "chosen ensemble - tuned best" in report
    assert "[" in report.split("| gender (acc) |")[1].splitlines()[0]  # scores carry intervals
    client = mlflow.MlflowClient()
    parent = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`mtl.role` = 'parent'",
                                output_format="list")[0]
    assert "report/report.md" in [a.path for a in client.list_artifacts(parent.info.run_id, "report")]


def test_confirm_logs_seeds_runs_per_config(tiny_study, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_study / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tiny_study / 'mlflow.db'}")
    monkeypatch.chdir(tiny_study)
    assert main(["confirm", "tiny", "--seeds", "2", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    runs = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`mtl.role` = 'confirm'",
                              output_format="list")
    configs = {r.data.tags["mtl.confirm_of"] for r in runs}
    assert configs and all(c.startswith("trial-") for c in configs)
    best = select("tiny").best
    keys = {"gender": "gender/acc", "region": "region/acc", "fighting_style": "fighting_style/acc",
            "alignment": "alignment/acc", "colors": "colors/f1"}
    for c in configs:
        mine = [r for r in runs if r.data.tags["mtl.confirm_of"] == c]
        assert sorted(r.data.tags["seed"] for r in mine) == ["10000", "10001"]
        selected = {t for t, m in best.items() if f"trial-{m.number}" == c}
        # test is read only for the tasks val selected this config for
        assert all(r.info.status == "FINISHED" and {k for k in r.data.metrics if k.startswith("test/")}
                   == {f"test/{keys[t]}" for t in selected} for r in mine)
    table = (tiny_study / "reports/tiny/confirm.md").read_text()
    test_rows = [line for line in table.splitlines() if "| test |" in line]
    assert "±" in out and test_rows and sum(line.count("±") for line in test_rows) == len(best)
    assert sum(line.count("·") for line in test_rows) == len(test_rows) * 5 - len(best)
    assert main(["confirm", "tiny", "--seeds", "2", "--epochs", "1"]) == 0  # resumes: nothing re-trained
    again = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`mtl.role` = 'confirm'",
                               output_format="list")
    assert len(again) == len(runs)


@pytest.mark.slow
def test_best_model_served_over_rest(tiny_study, monkeypatch):
    """`mlflow models serve` on a free loopback port answers /invocations with the pyfunc's predictions."""
    import json
    import urllib.request

    from tests.servers import model_server
    uri = f"sqlite:///{tiny_study / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    monkeypatch.chdir(tiny_study)
    assert main(["pareto", "tiny"]) == 0
    from mtl.data.manifest import load_manifest
    from mtl.tune.studies import load_study
    m = load_manifest(load_study("tiny").manifest)
    imgs = [str(m.root / p) for p in m.rows("test")["image"].iloc[:2]]
    local = mlflow.pyfunc.load_model("models:/tiny@best-gender").predict(pd.DataFrame({"image": imgs}))
    with model_server("models:/tiny@best-gender", uri, tiny_study) as url:
        body = json.dumps({"dataframe_split": {"columns": ["image"], "data": [[p] for p in imgs]}}).encode()
        req = urllib.request.Request(f"{url}/invocations", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=120) as r:
            served = pd.DataFrame(json.loads(r.read())["predictions"])
    assert list(served["gender"]) == list(local["gender"]) and list(served["colors"]) == list(local["colors"])
    assert served["region." + "Asia"].to_numpy() == pytest.approx(local["region.Asia"].to_numpy(), rel=1e-5)


def test_prune_dominated_removes_only_checkpoint_files(isolated_stores, fgo_small):
    from mtl.results.selection import Member
    from mtl.serve.registry import remove_dominated_checkpoints
    (isolated_stores / "experiments").mkdir()
    (isolated_stores / "experiments" / "tiny.py").write_text(STUDY.format(manifest=fgo_small))
    assert main(["tune", "tiny", "--trials", "2"]) == 0
    client = mlflow.MlflowClient()
    runs = sorted(mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`mtl.role` = 'trial'",
                                     output_format="list"), key=lambda r: r.info.run_name)
    members = [Member(i, r.info.run_id, [0.0]) for i, r in enumerate(runs)]
    n, freed = remove_dominated_checkpoints(client, members, front=members[:1])  # as if trial 1 were dominated
    assert n == 1 and freed > 0
    kept = [a.path for a in client.list_artifacts(runs[0].info.run_id, "checkpoints")]
    gone = [a.path for a in client.list_artifacts(runs[1].info.run_id, "checkpoints")]
    assert any("epoch-" in f for f in kept) and not any("epoch-" in f for f in gone)
    assert {"checkpoints/index.json", "checkpoints/val_outputs.pt"} <= set(gone)
    assert client.get_run(runs[1].info.run_id).data.tags["checkpoints"].startswith("removed")
    assert remove_dominated_checkpoints(client, members, front=members[:1]) == (0, 0)  # idempotent


def test_prefer_simplest_registers_the_smallest_tied_front_member(tiny_study, capsys, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_study / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tiny_study / 'mlflow.db'}")
    monkeypatch.chdir(tiny_study)
    assert main(["pareto", "tiny", "--prefer", "simplest"]) == 0
    client = mlflow.MlflowClient()
    runs = {r.info.run_id: r for r in mlflow.search_runs(experiment_names=["tiny"],
                                                         filter_string="tags.`mtl.role` = 'trial'", output_format="list")}
    for task in ("gender", "region", "fighting_style", "alignment", "colors"):
        chosen = runs[client.get_model_version_by_alias("tiny", f"best-{task}").run_id]
        tied = [r for r in runs.values() if task in r.data.tags["tied_best_for"].split(",")
                and r.data.tags["pareto"] == "true"]
        assert chosen.info.run_id in {r.info.run_id for r in tied} and chosen.data.metrics["trainable_params"] == min(
            r.data.metrics["trainable_params"] for r in tied)
    assert main(["pareto", "tiny"]) == 0  # back to the nominal best


def test_prefer_shared_answers_every_task_with_the_fewest_tied_trials(tiny_study, capsys, monkeypatch):
    """--prefer shared: each task's alias goes to a tied front member, as few distinct trials as the ties
    allow."""
    from mtl.results.selection import Member, fewest_models
    # constructed: nominal bests 0, 1, 2; trial 1 is tied with the best on x and z too: one network answers all
    m = [Member(0, "r0", [0.9, 0.1, 0.1]), Member(1, "r1", [0.88, 0.5, 0.58]), Member(2, "r2", [0.1, 0.49, 0.6]),
         Member(3, "r3", [0.89, 0.2, 0.59])]
    tied = {"x": [m[0], m[1], m[3]], "y": [m[1]], "z": [m[1], m[2], m[3]]}
    nominal = {"x": m[0], "y": m[1], "z": m[2]}
    got = fewest_models(tied, nominal, m, ["maximize"] * 3, ["x", "y", "z"])
    assert {t: g.number for t, g in got.items()} == {"x": 1, "y": 1, "z": 1}
    # a trial answers each task from that task's best epoch: trial 1's best epoch for z differs from its x and
    # y one, so one network cannot answer all three; {1 at epoch 8, 2 at epoch 8} keeps y and z nominal
    epochs = {0: {"x": 5}, 1: {"x": 8, "y": 8, "z": 6}, 2: {"z": 8}, 3: {"x": 8, "z": 8}}
    got = fewest_models(tied, nominal, m, ["maximize"] * 3, ["x", "y", "z"], epochs)
    assert {t: g.number for t, g in got.items()} == {"x": 1, "y": 1, "z": 2}
    # without y's tie to 1 alone, two trials are needed; {0, 2} keeps x and z on their nominal bests
    tied["y"] = [m[1], m[2]]
    tied["x"], tied["z"] = [m[0]], [m[2]]
    got = fewest_models(tied, nominal, m, ["maximize"] * 3, ["x", "y", "z"])
    assert {t: g.number for t, g in got.items()} == {"x": 0, "y": 2, "z": 2}

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_study / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tiny_study / 'mlflow.db'}")
    monkeypatch.chdir(tiny_study)
    assert main(["pareto", "tiny", "--prefer", "shared"]) == 0
    out = capsys.readouterr().out
    client = mlflow.MlflowClient()
    runs = {r.info.run_id: r for r in mlflow.search_runs(experiment_names=["tiny"],
                                                         filter_string="tags.`mtl.role` = 'trial'", output_format="list")}
    chosen = {task: runs[client.get_model_version_by_alias("tiny", f"best-{task}").run_id]
              for task in ("gender", "region", "fighting_style", "alignment", "colors")}
    for task, r in chosen.items():
        assert task in r.data.tags["tied_best_for"].split(",") and r.data.tags["pareto"] == "true"
    n = len({r.info.run_id for r in chosen.values()})
    assert f"from {n} trial(s) answer every task" in out
    composite = client.get_model_version_by_alias("tiny", "best")
    nets = {(r.info.run_id, int(r.data.metrics[f"best_epoch/{t}"])) for t, r in chosen.items()}
    assert composite.tags["members"] == str(len(nets))  # one member per distinct (trial, epoch) checkpoint
    assert f"--prefer shared: {len(nets)} network(s)" in out
    assert main(["pareto", "tiny"]) == 0  # back to the nominal best


def test_max_trials_keeps_the_served_ensemble_within_its_budget(tiny_study, capsys, monkeypatch):
    from mtl.results.selection import Member, network_pool
    # constructed: 0 is best on x, 2 on y, 1 second on both: one trial -> {1}; two -> {0, 2} (ranks, not scores)
    m = [Member(0, "r0", [0.9, 0.1]), Member(1, "r1", [0.8, 0.8]), Member(2, "r2", [0.1, 0.9]),
         Member(3, "r3", [0.2, 0.2])]
    assert [p.number for p in network_pool(m, ["maximize", "maximize"], 1)] == [1]
    assert [p.number for p in network_pool(m, ["maximize", "maximize"], 2)] == [0, 2]
    assert network_pool(m, ["maximize", "minimize"], 5) == m

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_study / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tiny_study / 'mlflow.db'}")
    monkeypatch.chdir(tiny_study)
    assert main(["pareto", "tiny"]) == 0
    front = [r for r in mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`mtl.role` = 'trial'",
                                           output_format="list") if r.data.tags.get("pareto") == "true"]
    assert main(["ensemble", "tiny"]) == 0  # no budget: @ensemble is the chosen ensemble
    unbounded = (tiny_study / "reports" / "tiny" / "report.md").read_text()
    assert "served ensemble" not in unbounded
    assert main(["ensemble", "tiny", "--max-trials", "1"]) == 0
    run = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`mtl.role` = 'ensemble'",
                             output_format="list")[0]
    assert run.data.params["max_trials"] == "1" and "," not in run.data.params["members"]
    version = mlflow.MlflowClient().get_model_version_by_alias("tiny", "ensemble")
    assert version.run_id == run.info.run_id and version.tags["members"] == "1"  # one trial: one network
    report = (tiny_study / "reports" / "tiny" / "report.md").read_text()
    assert f"among trials {run.data.params['members']} only" in report
    if len(front) > 1:  # one trial served alone: the front trial with the best mean val score, all sets tried
        assert f"all {len(front)} sets of 1 tried" in report
        scores = {r.data.tags["mlflow.runName"].split("-")[-1]: [
            v for k, v in r.data.metrics.items() if k.startswith("best_val/") and k.count("/") == 2
            and not k.endswith(("_lo", "_hi"))] for r in front}
        mean_val = {n: sum(v) / len(v) for n, v in scores.items()}
        assert run.data.params["members"] == max(mean_val, key=lambda n: (mean_val[n], -int(n)))
    # the budget binds only the served model: the tuned best and the chosen ensemble stay as without it
    def points(text, task):  # the row's point estimates (intervals differ: a larger family, more resamples)
        line = next(line for line in text.splitlines() if line.startswith(f"| {task} ("))
        return [c.split()[0] for c in line.strip("|").split("|")[1:]]
    if len(front) > 1:
        assert "served ensemble (budget, on val)" in report and "served ensemble - tuned best" in report
        assert "| served ensemble val → test (optimism) |" in report  # its winner's curse, beside the others'
        for task in ("gender", "colors"):
            assert points(report, task)[:-1] == points(unbounded, task)
    # the study file's SERVE_MAX_TRIALS is the default budget; --max-trials 0 lifts it
    study_file = tiny_study / "experiments" / "tiny.py"
    text = study_file.read_text()
    try:
        study_file.write_text(text + "\nSERVE_MAX_TRIALS = 1\n")
        capsys.readouterr()
        assert main(["ensemble", "tiny"]) == 0
        assert ("study's SERVE_MAX_TRIALS" in capsys.readouterr().out) == (len(front) > 1)
        run = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`mtl.role` = 'ensemble'",
                                 output_format="list")[0]
        assert run.data.params["max_trials"] == "1"
        assert main(["ensemble", "tiny", "--max-trials", "0"]) == 0
        run = mlflow.search_runs(experiment_names=["tiny"], filter_string="tags.`mtl.role` = 'ensemble'",
                                 output_format="list")[0]
        assert run.data.params["max_trials"] == "all"
        study_file.write_text(text + "\nSERVE_MAX_TRIALS = -2\n")
        capsys.readouterr()
        assert main(["ensemble", "tiny"]) == 2
        err = capsys.readouterr().err.strip()
        assert "tiny.py: SERVE_MAX_TRIALS = -2" in err and len(err.splitlines()) == 1
    finally:
        study_file.write_text(text)
    capsys.readouterr()
    assert main(["ensemble", "tiny", "--max-trials", "-1"]) == 2
    assert "--max-trials -1" in capsys.readouterr().err


def test_pareto_ensemble_predict_leave_no_temporary_files(tiny_study, monkeypatch, tmp_path):
    """Every download these commands make (checkpoints, val outputs, indexes, registry models) goes into a
    temporary directory that is removed: the temp dir holds nothing afterwards."""
    import tempfile
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_study / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tiny_study / 'mlflow.db'}")
    monkeypatch.chdir(tiny_study)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    for argv in (["pareto", "tiny"], ["ensemble", "tiny"], ["predict", "tiny", "-n", "2"],
                 ["predict", "tiny", "-n", "2", "--model", "best-gender"]):
        assert main(argv) == 0
        left = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*"))
        assert left == [], (argv, left[:5])


def test_shared_backbone_is_computed_once_and_outputs_stay_exact():
    """Three members: two hold the same backbone weights (a frozen pretrained one), one fine-tuned its last
    stage. Each stage the first two share runs once; the third shares all stages before layer4. Every
    member's outputs equal its own forward."""
    from mtl.model.hydranet import HydraNet
    from mtl.model.prefix import member_digests, shared_forward
    tasks = [Task("g", "binary", ("a", "b")), Task("r", "multiclass", ("x", "y", "z"))]
    torch.manual_seed(0)
    a = HydraNet(tasks, "resnet18", trunk_dims=[8]).eval()
    b = HydraNet(tasks, "resnet18", head_dims=[4]).eval()
    b.backbone.load_state_dict(a.backbone.state_dict())
    c = HydraNet(tasks, "resnet18").eval()
    c.backbone.load_state_dict(a.backbone.state_dict())
    with torch.no_grad():
        c.backbone.layer4[0].conv1.weight.mul_(1.1)
    class Cfg:
        image_size = 32
    members = {"a": (a, Cfg), "b": (b, Cfg), "c": (c, Cfg)}
    digests = {n: member_digests(m) for n, (m, _) in members.items()}
    assert digests["a"] == digests["b"] and digests["a"][:-3] == digests["c"][:-3] and digests["a"][-1] != digests["c"][-1]
    calls = {"conv1": 0, "layer4": 0}
    for m in (a, b, c):
        m.backbone.conv1.register_forward_hook(lambda *_: calls.__setitem__("conv1", calls["conv1"] + 1))
        m.backbone.layer4.register_forward_hook(lambda *_: calls.__setitem__("layer4", calls["layer4"] + 1))
    images = {32: torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)}
    with torch.no_grad():
        got = shared_forward(members, digests, images)
    assert calls == {"conv1": 1, "layer4": 2}  # once for a and b, once for c's own layer4
    from mtl.data.batches import normalize
    for name, (model, _) in members.items():
        with torch.no_grad():
            want = model(normalize(images[32]))
        for k in want:
            assert torch.equal(got[name][k], want[k]), (name, k)


def test_a_registered_model_is_portable(tiny_study, monkeypatch, tmp_path):
    """The model's directory copied elsewhere predicts through `mlflow models predict --env-manager local` from
    another working directory: its input example embeds a small image (no path of this machine) and its
    requirements are the project's declared ranges, not this venv's builds."""
    import base64
    import json
    import subprocess
    import sys

    from mtl.serve.pyfunc import example_image
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_study / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tiny_study / 'mlflow.db'}")
    monkeypatch.chdir(tiny_study)
    assert main(["pareto", "tiny"]) == 0
    copy = Path(mlflow.artifacts.download_artifacts("models:/tiny@best-gender", dst_path=str(tmp_path / "elsewhere")))
    example = (copy / "input_example.json").read_text()
    assert "data:image/png;base64," in example and str(tiny_study) not in example and "/tmp" not in example
    reqs = (copy / "requirements.txt").read_text()
    assert "mlflow<4" in reqs and "+cpu" not in reqs
    image = sorted(Path(str(tiny_study)).parent.rglob("*.png"))[0]
    uri = example_image(image, size=64)
    assert base64.b64decode(uri.split(",", 1)[1])[:4] == b"\x89PNG"
    (tmp_path / "in.json").write_text(json.dumps({"dataframe_split": {"columns": ["image"], "data": [[uri]]}}))
    work = tmp_path / "another_dir"
    work.mkdir()
    env = {k: v for k, v in __import__("os").environ.items() if k != "MLFLOW_TRACKING_URI"}
    res = subprocess.run([sys.executable, "-m", "mlflow", "models", "predict", "-m", str(copy), "-i",
                          str(tmp_path / "in.json"), "-t", "json", "--env-manager", "local", "-o",
                          str(tmp_path / "out.json")], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    got = json.loads((tmp_path / "out.json").read_text())["predictions"][0]
    want = mlflow.pyfunc.load_model("models:/tiny@best-gender").predict(pd.DataFrame({"image": [uri]})).iloc[0]
    assert got["gender"] == want["gender"] and got["gender.Female"] == pytest.approx(want["gender.Female"], abs=1e-6)


def test_serving_ratios_of_the_registered_models(tiny_study, monkeypatch):
    """make bench's ensemble_vs_single and composite_vs_single: medians of alternating rounds, with spreads."""
    from mtl.bench.serving import alternating, ratio, serving_ratios
    times = alternating({"a": lambda: None, "b": lambda: sum(range(20000))}, repeats=5)
    assert all(len(v) == 5 for v in times.values())
    r = ratio({"x": [1.0, 2.0, 4.0], "y": [2.0, 2.0, 2.0]}, "x", "y")
    assert r == {"median": 1.0, "min": 0.5, "max": 2.0}
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tiny_study / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tiny_study / 'mlflow.db'}")
    monkeypatch.chdir(tiny_study)
    from mtl.serve.registry import alias_version
    if alias_version(mlflow.MlflowClient(), "tiny", "ensemble") is None:  # when this test runs alone
        assert main(["pareto", "tiny"]) == 0 and main(["ensemble", "tiny"]) == 0
    res = serving_ratios("tiny", n_images=4, repeats=5)
    for key in ("ensemble_vs_single", "composite_vs_single"):
        lo, hi = res["raw_serving"][f"{key}_spread"]
        assert 0 < lo <= res[key] <= hi
    assert serving_ratios("no_such_study") == {"ensemble_vs_single": None, "composite_vs_single": None}
