"""Every committed study trains: 1 trial x 1 epoch on a shrunk manifest through the real `tune` command
(the lightning-hydra-template habit), so a study file that only loads but cannot train fails here."""

from __future__ import annotations

import re
from pathlib import Path

import optuna
import pytest

from mtl.__main__ import main
from mtl.tune.storage import default_storage, make_storage

EXPERIMENTS = Path(__file__).parents[1] / "experiments"
# what shrinks a study: its images, and its PRETRAIN stage's epochs (rounds and trials take --epochs 1)
SHRINK = '''
BASE = BASE.replace(image_size=32) if BASE.backbone != "multi_lenet" else BASE  # LeNet's input is 36 px
if globals().get("PRETRAIN") is not None:
    PRETRAIN = PRETRAIN.replace(image_size=32, epochs=1)
if globals().get("CONFIGS"):
    CONFIGS = {{k: v.replace(image_size=32) if v.backbone != "multi_lenet" else v for k, v in CONFIGS.items()}}
'''


@pytest.mark.parametrize("name", sorted(p.stem for p in EXPERIMENTS.glob("*.py") if not p.name.startswith("_")))
def test_every_committed_study_trains_one_trial(name, isolated_stores, fgo_small, utk_small, capsys, monkeypatch):
    text = (EXPERIMENTS / f"{name}.py").read_text()
    if 'weights="DEFAULT"' in text:  # offline: the weights file a user would copy into the torch hub cache
        import torch
        import torchvision
        monkeypatch.setenv("TORCH_HOME", str(isolated_stores / "torch"))
        cached = isolated_stores / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
        cached.parent.mkdir(parents=True)
        torch.save(torchvision.models.resnet18().state_dict(), cached)
    small = utk_small if "utk_synth" in text else fgo_small
    mm = re.search(r"data/multimnist\w*/multimnist_lr\.csv", text)
    mm = mm.group(0) if mm else "data/multimnist/multimnist_lr.csv"
    if "multimnist" in name:  # a tiny MultiMNIST composed from idx files the test writes
        from mtl.data import multimnist
        from tests.test_multimnist import tiny_mnist
        (isolated_stores / "idx").mkdir()
        files = tiny_mnist(isolated_stores / "idx")
        multimnist.make_multimnist(files, isolated_stores / "mm" / "multimnist.csv", {"train": 12, "val": 4, "test": 4})
    swap = {"data_manifests/utk_synth.csv" if "utk_synth" in text else "data_manifests/fgo_synth.csv": str(small),
            mm: str(isolated_stores / "mm" / "multimnist_lr.csv")}
    exp = isolated_stores / "experiments"
    exp.mkdir()
    for other in EXPERIMENTS.glob("*.py"):  # COMPARE_WITH / TUNED_FIXED name another study: it must exist
        (exp / other.name).write_text(re.sub(r"data/multimnist\w*/multimnist_lr\.csv", swap[mm], other.read_text()))
    for old, new in swap.items():
        text = text.replace(old, new)
    (exp / f"{name}.py").write_text(text + SHRINK.format())
    assert main(["tune", name, "--trials", "1", "--epochs", "1"]) == 0, capsys.readouterr().err
    s = optuna.load_study(study_name=name, storage=make_storage(default_storage(name)))
    finished = [t for t in s.trials if t.state.is_finished()]  # queued rounds/entries wait for later runs
    assert [t.state for t in finished] == [optuna.trial.TrialState.COMPLETE]
    assert len(finished[0].user_attrs["val_curve"]) == 1


def test_the_rounds_fine_tune_the_pretrained_backbone(isolated_stores, fgo_small):
    """fgo_rounds runs as the seed did: the label-free pretrained backbone, trained end to end. The round's
    checkpoint holds backbone weights that moved away from the pretrain stage's."""
    import mlflow
    import torch

    from mtl.train.artifacts import load_checkpoint
    exp = isolated_stores / "experiments"
    exp.mkdir()
    text = (EXPERIMENTS / "fgo_rounds.py").read_text().replace("data_manifests/fgo_synth.csv", str(fgo_small))
    (exp / "fgo_rounds.py").write_text(text + SHRINK.format())
    assert main(["tune", "fgo_rounds", "--trials", "1", "--epochs", "1"]) == 0
    runs = mlflow.search_runs(experiment_names=["fgo_rounds"], output_format="list")
    pre = next(r for r in runs if r.data.tags.get("mtl.role") == "pretrain")
    trial = next(r for r in runs if r.data.tags.get("mtl.role") == "trial")
    assert trial.data.params["freeze"] == "none" and trial.data.params["init"].startswith("runs:/")
    client = mlflow.MlflowClient()
    base = load_checkpoint(client.download_artifacts(pre.info.run_id, f"checkpoints/{pre.data.tags['checkpoint']}",
                                                 str(isolated_stores)))
    ck = load_checkpoint(client.download_artifacts(trial.info.run_id, "checkpoints/epoch-1.pt", str(isolated_stores)))
    moved = [k for k, v in ck["model"].items() if k.startswith("backbone.") and v.is_floating_point()
             and not torch.equal(v.float(), base["model"][k])]
    assert any(k.startswith("backbone.layer1.") for k in moved) and any(k.startswith("backbone.conv1.") for k in moved)
    # a study trial stores its parameters in float16 (half the bytes), its BatchNorm statistics in float32;
    # the pretrain stage, every trial's base, stays float32
    assert ck["model"]["backbone.conv1.weight"].dtype == torch.float16
    assert ck["model"]["backbone.bn1.running_var"].dtype == torch.float32
    assert base["model"]["backbone.conv1.weight"].dtype == torch.float32
