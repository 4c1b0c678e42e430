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


def place_weights(torch_home: Path, monkeypatch) -> None:
    """The ImageNet files the studies name, as `make weights` (MobileNetV2) or a user with no network
    (resnet18) would place them, in a private torch hub cache; random weights: what loads is under test."""
    import torch
    import torchvision

    from mtl.model.weights import weights_cache_path
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    for build, w in ((torchvision.models.resnet18, torchvision.models.ResNet18_Weights.DEFAULT),
                     (torchvision.models.mobilenet_v2, torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1)):
        weights_cache_path(w).parent.mkdir(parents=True, exist_ok=True)
        torch.save(build().state_dict(), weights_cache_path(w))


@pytest.mark.parametrize("name", sorted(p.stem for p in EXPERIMENTS.glob("*.py") if not p.name.startswith("_")))
def test_every_committed_study_trains_one_trial(name, isolated_stores, fgo_small, utk_small, capsys, monkeypatch):
    text = (EXPERIMENTS / f"{name}.py").read_text()
    place_weights(isolated_stores / "torch", monkeypatch)
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


def test_the_rounds_fine_tune_the_imagenet_backbone(isolated_stores, fgo_small, monkeypatch):
    """fgo_rounds runs as the seed did: the ImageNet backbone (here the file `make weights` would place, random
    for the test), trained end to end. The round's checkpoint holds backbone weights that moved away from it,
    in float16 (a study trial), its BatchNorm statistics in float32."""
    import mlflow
    import torch

    from mtl.model.weights import target
    from mtl.train.artifacts import load_checkpoint
    place_weights(isolated_stores / "torch", monkeypatch)
    base = torch.load(target(), weights_only=True)
    exp = isolated_stores / "experiments"
    exp.mkdir()
    text = (EXPERIMENTS / "fgo_rounds.py").read_text().replace("data_manifests/fgo_synth.csv", str(fgo_small))
    (exp / "fgo_rounds.py").write_text(text + SHRINK.format())
    assert main(["tune", "fgo_rounds", "--trials", "1", "--epochs", "1"]) == 0
    runs = mlflow.search_runs(experiment_names=["fgo_rounds"], output_format="list")
    trial = next(r for r in runs if r.data.tags.get("mtl.role") == "trial")
    assert trial.data.params["freeze"] == "none" and trial.data.params["weights"] == "IMAGENET1K_V1"
    client = mlflow.MlflowClient()
    ck = load_checkpoint(client.download_artifacts(trial.info.run_id, "checkpoints/epoch-1.pt", str(isolated_stores)))
    moved = [k for k, v in ck["model"].items() if k.startswith("backbone.") and v.is_floating_point()
             and not torch.equal(v.float(), base[k[len("backbone."):]])]
    assert any(k.startswith("backbone.features.0.") for k in moved)
    assert any(k.startswith("backbone.features.18.") for k in moved)
    assert ck["model"]["backbone.features.0.0.weight"].dtype == torch.float16
    assert ck["model"]["backbone.features.0.1.running_var"].dtype == torch.float32


def test_the_rounds_are_the_seeds_on_the_default_studys_backbone():
    """fgo_rounds as the write-up ran them: round1 linear heads, round2 + two plain dense layers of 256 (no
    BatchNorm anywhere in the dense part), round3 + BatchNorm at momentum 0.2; end to end, on
    fgo_regularization's ImageNet backbone and the same image size, epochs and best epoch."""
    from torch import nn

    from mtl.model.hydranet import build_model
    from mtl.tasks import Task
    from mtl.tune.studies import load_study
    rounds, default = load_study("fgo_rounds"), load_study("fgo_regularization")
    r1, r2, r3 = (rounds.configs[k] for k in ("round1-plain-sum", "round2-dense-256x2", "round3-strong-bn"))
    for c in (r1, r2, r3):
        assert c.freeze == "none" and c.lr_backbone == 1e-4  # the seed's learning rate on the pretrained weights
        assert (c.backbone, c.weights, c.image_size, c.best_epoch) == (
            default.base.backbone, default.base.weights, default.base.image_size, default.base.best_epoch)
        assert c.head_dims == [] and c.method == "fixed" and not c.loss_weights  # the plain sum
    assert rounds.epochs == default.epochs
    assert r1.trunk_dims == [] and r2.trunk_dims == r3.trunk_dims == [256, 256]
    assert (r2.batchnorm, r3.batchnorm, r3.bn_momentum) == (False, True, 0.2)
    tasks = [Task("gender", "binary", ("f", "m"))]
    dense = lambda c: build_model(c.replace(weights=None, backbone="multi_lenet", image_size=36), tasks)  # noqa: E731
    assert not any(isinstance(m, nn.BatchNorm1d) for m in dense(r2).modules())
    assert [m.momentum for m in dense(r3).trunk if isinstance(m, nn.BatchNorm1d)] == [0.2, 0.2]
