"""Studies that search: early stopping across trials, hypervolume, samplers, warm starts, the frozen-prefix
feature cache, batched augmentation, and a PRETRAIN stage that is trained once."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import mlflow
import optuna
import pytest
import torch
import torchvision

from mtl.__main__ import main
from mtl.data.batches import BatchAugment
from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.model.hydranet import build_model
from mtl.train.artifacts import load_checkpoint
from mtl.train.checkpoints import load_backbone
from mtl.train.config import TrainConfig
from mtl.train.loop import fit
from mtl.tune.early_stop import Curve, EarlyStop, should_stop
from mtl.tune.front import hypervolume
from mtl.tune.storage import make_sampler, make_storage
from mtl.tune.studies import SAMPLERS, Study
from tests.test_tune import STUDY

DIRS = ["maximize", "maximize", "minimize"]


def test_should_stop_prunes_exactly_the_dominated():
    done = [Curve(rows, [0.0] * 3) for rows in ([[0.8, 0.7, 5.0], [0.9, 0.8, 4.0]],
                                                [[0.7, 0.9, 6.0], [0.85, 0.9, 4.5]],
                                                [[0.6, 0.5, 9.0], [0.6, 0.5, 9.0]])]
    rule = EarlyStop(k=2, margin=0.05, min_epoch=2)
    scales = [1.0, 1.0, 10.0]  # MAE margin = 0.05 * 10 = 0.5 years
    dominated = [[0.5, 0.5, 8.0], [0.6, 0.6, 7.0]]  # both of the first two beat it by the margin everywhere
    close = [[0.5, 0.5, 8.0], [0.82, 0.6, 5.0]]  # within the margin of trial 0 on the first objective
    good_on_one = [[0.2, 0.2, 9.0], [0.2, 0.95, 9.0]]  # best on the second objective: never stopped
    assert should_stop(2, dominated, done, DIRS, rule, scales)
    assert not should_stop(2, close, done, DIRS, rule, scales)
    assert not should_stop(2, good_on_one, done, DIRS, rule, scales)
    assert not should_stop(1, dominated[:1], done, DIRS, rule, scales)  # before min_epoch
    assert not should_stop(2, dominated, done, DIRS, EarlyStop(k=3, margin=0.05, min_epoch=2), scales)
    # best-so-far: a dip at the current epoch does not count against a trial
    dip = [[0.9, 0.95, 3.0], [0.1, 0.1, 20.0]]
    assert not should_stop(2, dip, done, DIRS, EarlyStop(k=1, margin=0.0, min_epoch=1), scales)


def test_hypervolume_by_hand():
    # two maximised scores, reference (0.5, 0.5): boxes 0.3x0.1 and 0.1x0.3 overlapping in 0.1x0.1
    hv = hypervolume([[0.8, 0.6], [0.6, 0.8], [0.55, 0.55]], ["maximize", "maximize"], [0.5, 0.5])
    assert hv == pytest.approx(0.03 + 0.03 - 0.01)
    # MAE axis: lower is better, scaled by 10; a point worse than the reference adds nothing
    assert hypervolume([[0.7, 4.0]], ["maximize", "minimize"], [0.5, 6.0], [1.0, 10.0]) == pytest.approx(0.2 * 0.2)
    assert hypervolume([[0.4, 4.0]], ["maximize", "minimize"], [0.5, 6.0], [1.0, 10.0]) == 0.0


def test_samplers_and_no_deprecated_storage_calls(tmp_path):
    kinds = {"tpe": optuna.samplers.TPESampler, "gp": optuna.samplers.GPSampler,
             "nsga2": optuna.samplers.NSGAIISampler, "random": optuna.samplers.RandomSampler}
    assert set(kinds) == set(SAMPLERS)
    for name, cls in kinds.items():
        study = Study("s", tmp_path, "m.csv", ["a"], TrainConfig(), 1, 1, sampler=name)
        assert isinstance(make_sampler(study, 0), cls)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        make_storage(f"sqlite:///{tmp_path / 'o.db'}")


def test_bad_sampler_is_one_line(isolated_stores, fgo_small, capsys):
    (isolated_stores / "experiments").mkdir()
    (isolated_stores / "experiments" / "bad.py").write_text(STUDY.format(manifest=fgo_small) + '\nSAMPLER = "cmaes"\n')
    assert main(["tune", "bad"]) == 2
    assert "SAMPLER = 'cmaes': expected one of tpe, gp, nsga2, random" in capsys.readouterr().err


def test_batch_augment_is_per_sample_and_keeps_colours():
    x = torch.rand(8, 3, 32, 32)
    a = BatchAugment(seed=1)(x)
    assert a.shape == x.shape and not torch.allclose(a[0], a[1])
    assert torch.equal(a, BatchAugment(seed=1)(x))  # seeded
    plain = BatchAugment(seed=2, scale=(1.0, 1.0), ratio=(1.0, 1.0), degrees=0.0, erase_p=0.0)(x)
    for i in range(8):  # only flips remain: each sample is itself or its mirror image
        assert torch.allclose(plain[i], x[i], atol=1e-5) or torch.allclose(plain[i], x[i].flip(-1), atol=1e-5)
    solid = torch.zeros(4, 3, 16, 16)
    solid[:, 0] = 0.7  # a solid colour stays that colour wherever the warp samples inside the image
    out = BatchAugment(seed=3, erase_p=0.0)(solid)
    assert torch.allclose(out[:, :, 6:10, 6:10], solid[:, :, 6:10, 6:10], atol=1e-5)


def test_frozen_prefix_cache_equals_the_uncached_path(fgo_small):
    m = load_manifest(fgo_small)
    cfg = TrainConfig(image_size=32, batch_size=16, epochs=2, augment=False, freeze="layer3", head_dims=[16])
    cached = fit(cfg, m)
    plain = fit(cfg.replace(feature_cache=False), m)
    for a, b in zip(cached.history, plain.history):
        for k in a:
            if not (isinstance(a[k], float) and math.isnan(a[k])):
                assert a[k] == pytest.approx(b[k], rel=1e-4, abs=1e-5), k


def test_frozen_batchnorm_stays_frozen(fgo_small, tmp_path):
    """The trained model's frozen stages keep their BatchNorm statistics (train mode never reaches them), while
    a stage that trains moves its own: compared on the weights training saved, against the same seed's start."""
    m = load_manifest(fgo_small)
    cfg = TrainConfig(image_size=32, batch_size=16, epochs=1, freeze="layer2", feature_cache=False)
    torch.manual_seed(0)
    start = build_model(cfg, m.tasks).state_dict()
    res = fit(cfg, m, out_dir=tmp_path)
    assert res.history  # trained with augmentation through the frozen prefix
    trained = load_checkpoint(tmp_path)["model"]
    for stage in ("layer1.0.bn1", "layer2.1.bn2"):  # frozen: bit-identical statistics
        for stat in ("running_mean", "running_var", "num_batches_tracked"):
            key = f"backbone.{stage}.{stat}"
            assert torch.equal(trained[key], start[key]), key
    assert not torch.equal(trained["backbone.layer3.0.bn1.running_mean"], start["backbone.layer3.0.bn1.running_mean"])


def test_warm_start_sources(tmp_path, fgo_small):
    m = load_manifest(fgo_small)
    ref = torchvision.models.resnet18()
    torch.save(ref.state_dict(), tmp_path / "imagenet_like.pth")
    model = build_model(TrainConfig(), m.tasks)
    load_backbone(model, str(tmp_path / "imagenet_like.pth"))
    assert torch.equal(model.backbone.conv1.weight, ref.conv1.weight)
    torch.save(torchvision.models.resnet34().state_dict(), tmp_path / "r34.pth")
    with pytest.raises(UserError, match="does not fit this backbone"):
        load_backbone(build_model(TrainConfig(), m.tasks), str(tmp_path / "r34.pth"))
    with pytest.raises(UserError, match="no such file"):
        load_backbone(model, str(tmp_path / "nope.pt"))


PRETRAINED = STUDY.replace("TRIALS = 2", '''TRIALS = 2
PRETRAIN = TrainConfig(image_size=32, batch_size=16, epochs=1)''').replace(
    "BASE = TrainConfig(image_size=32, batch_size=16)",
    'BASE = TrainConfig(image_size=32, batch_size=16, freeze="layer3", augment=False)')


def test_pretrain_stage_reads_no_target_label_and_no_val_or_test_image(isolated_stores, fgo_small, monkeypatch):
    """Spies on every image opened and every label read while the stage is built and trained: only the
    train split's images (and their rotated copies) are opened, and no target column is read."""
    import PIL.Image

    from mtl.data.manifest import Manifest
    from mtl.data.pretext import ROTATIONS
    from mtl.tune.runs import ensure_pretrain
    from mtl.tune.studies import load_study
    (isolated_stores / "experiments").mkdir()
    (isolated_stores / "experiments" / "pre.py").write_text(PRETRAINED.format(manifest=fgo_small))
    study, m = load_study("pre"), load_manifest(fgo_small)
    opened, targets = [], []
    real_open, real_targets = PIL.Image.open, Manifest.targets
    monkeypatch.setattr(PIL.Image, "open", lambda fp, *a, **k: (opened.append(Path(fp).resolve()), real_open(fp, *a, **k))[1])
    monkeypatch.setattr(Manifest, "targets", lambda self, split: (targets.append((self.path, split)),
                                                                   real_targets(self, split))[1])
    label_columns = [t.name for t in m.tasks]
    m.table = m.table.assign(**{c: "" for c in label_columns})  # had the stage read a label, it would find none
    client = mlflow.MlflowClient()
    exp = client.create_experiment("pre")
    uri = ensure_pretrain(study, m, client, exp, None)
    assert uri.startswith("runs:/")
    train = {(m.root / p).resolve() for p in m.rows("train")["image"]}
    heldout = {(m.root / p).resolve() for p in pd_concat(m.rows("val"), m.rows("test"))["image"]}
    assert opened and not (set(opened) & heldout)
    assert {p for p in opened if p in train} == train  # every train image, each rotated 4 ways below
    rotated = [p for p in opened if p not in train]
    assert rotated and all(p.stem.endswith(tuple(f"-r{r}" for r in ROTATIONS)) for p in rotated)
    assert all(path != m.path for path, _ in targets)  # only the pretext manifest's rotation labels
    run = client.get_run(uri.split("/")[1])
    assert run.data.params["pretext"] == "rotation" and "val/rotation/acc" in run.data.metrics


def pd_concat(*frames):
    import pandas as pd
    return pd.concat(frames)


def test_pretrain_stage_is_trained_once_and_warm_starts_every_trial(isolated_stores, fgo_small, monkeypatch):
    import tempfile
    (isolated_stores / "experiments").mkdir()
    (isolated_stores / "experiments" / "pre.py").write_text(PRETRAINED.format(manifest=fgo_small))
    tmp = isolated_stores / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    assert main(["tune", "pre"]) == 0
    assert main(["tune", "pre", "--trials", "1"]) == 0  # resumed: the stage is found, not retrained
    assert sorted(tmp.rglob("*")) == []  # the runs:/ warm start was downloaded, read and removed
    runs = mlflow.search_runs(experiment_names=["pre"], output_format="list")
    pre = [r for r in runs if r.data.tags.get("mtl.role") == "pretrain"]
    trials = [r for r in runs if r.data.tags.get("mtl.role") == "trial"]
    assert len(pre) == 1 and pre[0].info.status == "FINISHED" and len(trials) == 3
    assert all(r.data.params["init"].endswith(".pt") and r.data.params["freeze"] == "layer3" for r in trials)
    parent = next(r for r in runs if r.data.tags.get("mtl.role") == "parent")
    hv = mlflow.MlflowClient().get_metric_history(parent.info.run_id, "study/hypervolume")
    assert main(["confirm", "pre", "--seeds", "1", "--epochs", "1"]) == 0  # seed repeats warm-start like the trials
    confirm = mlflow.search_runs(experiment_names=["pre"], filter_string="tags.`mtl.role` = 'confirm'",
                                 output_format="list")
    assert confirm and {r.data.params["init"] for r in confirm} == {trials[0].data.params["init"]}
    assert [h.step for h in sorted(hv, key=lambda h: h.step)] == [1, 2, 3]
    assert all(h.value >= 0 for h in hv)


TWINS = STUDY.replace("def search_space(trial, base):", '''EARLY_STOP = EarlyStop(k=1, margin=0.0, min_epoch=1)


def search_space(trial, base):
    trial.suggest_float("unused", 0, 1)  # distinct params, identical training: trial 1 replays trial 0
    return base.replace(seed=100 - trial.number)


def _unused(trial, base):''').replace("from mtl.train.config import TrainConfig",
                                      "from mtl.tune.early_stop import EarlyStop\nfrom mtl.train.config import TrainConfig")


def test_ties_run_on_a_dominated_trial_stops_and_audit_pruning_replays_it(isolated_stores, fgo_small, capsys):
    """Trial 1 trains exactly as trial 0 (a tie at every epoch): it is not stopped. A completed trial ahead on
    every task by more than its margin then stops the next trial at epoch 1 (a finished, tagged run);
    `audit-pruning` re-runs it to the end: the replay repeats its logged epoch, and it would not have joined
    the front that trial dominates, while against trials 0 and 1 alone (a tie) it would have."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    from mtl.tune.audit import audit_pruning
    from mtl.tune.studies import load_study
    (isolated_stores / "experiments").mkdir()
    (isolated_stores / "experiments" / "twins.py").write_text(TWINS.format(manifest=fgo_small))
    assert main(["tune", "twins", "--epochs", "2"]) == 0
    storage = JournalStorage(JournalFileBackend("optuna/twins.log"))
    s = optuna.load_study(study_name="twins", storage=storage)
    assert [t.state.name for t in s.trials] == ["COMPLETE", "COMPLETE"]  # a tie is never stopped
    assert s.trials[0].values == s.trials[1].values and s.trials[1].user_attrs["schedule"] == "cosine/2"
    ahead = [[2.0] * 5] * 2  # a constructed trial ahead of any real one on every task
    s.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[2.0] * 5, user_attrs={
        "val_curve": ahead, "epochs": 2, "schedule": "cosine/2"}))
    assert main(["tune", "twins", "--epochs", "2", "--trials", "1"]) == 0
    s = optuna.load_study(study_name="twins", storage=storage)
    assert [t.state.name for t in s.trials] == ["COMPLETE", "COMPLETE", "COMPLETE", "PRUNED"]
    assert len(s.trials[3].user_attrs["val_curve"]) == 1 and s.trials[3].user_attrs["stopped_at_epoch"] == 1
    runs = {r.info.run_name: r for r in mlflow.search_runs(experiment_names=["twins"], output_format="list")}
    assert runs["trial-3"].info.status == "FINISHED" and runs["trial-3"].data.tags["pruned"] == "true"
    assert runs["trial-0"].data.tags["pruned"] == "false"
    from mtl.bench.benchmarks import early_stopped_epochs
    res = early_stopped_epochs("twins")  # 4 x 2 epochs budgeted, 2 + 2 + 2 + 1 run
    assert res["early_stopped_epoch_fraction"] == pytest.approx(1 / 8) and res["raw_early_stop"]["pruned"] == 1

    capsys.readouterr()
    assert main(["audit-pruning", "twins", "--sample", "0"]) == 0
    out = json.loads((isolated_stores / "reports" / "twins" / "audit_pruning.json").read_text())
    (replay,) = out["replays"]
    assert replay["number"] == 3 and replay["stopped_at"] == 1 and len(replay["curve"]) == 2
    assert replay["replay_matches"] and not replay["joined"]
    assert replay["values"] == pytest.approx(s.trials[0].values)  # the same training as trial 0, to the end
    assert out["metrics"]["audit/would_have_joined"] == 0 and out["metrics"]["audit/pruned_epoch_fraction"] == 0.125
    parent = next(r for r in runs.values() if r.data.tags.get("mtl.role") == "parent")
    logged = mlflow.MlflowClient().get_run(parent.info.run_id).data.metrics
    assert logged["audit/replayed"] == 1 and logged["audit/hypervolume_lost"] == 0
    # without the constructed trial the replay ties trials 0 and 1: it would have been on the front
    alone = optuna.create_study(directions=["maximize"] * 5)
    for t in (s.trials[0], s.trials[3]):
        alone.add_trial(t)
    audit = audit_pruning(load_study("twins"), alone, load_manifest(fgo_small), None)
    assert audit.joined == 1 and audit.hv_lost == pytest.approx(0.0)  # a tie adds no volume


def test_warm_started_checkpoints_store_only_what_differs_from_the_base(tmp_path, fgo_small):
    """Frozen backbone weights equal to the warm-start base are not written again; loading puts them back
    and the restored model answers exactly as during training."""
    from mtl.serve.inference import split_outputs
    from mtl.train.artifacts import load_checkpoint
    from mtl.train.checkpoints import model_from_checkpoint
    m = load_manifest(fgo_small)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "base.pth")
    cfg = TrainConfig(image_size=32, batch_size=16, epochs=2, init=str(tmp_path / "base.pth"), freeze="all",
                      augment=False, trunk_dims=[16])
    res = fit(cfg, m, tmp_path / "ck")
    ckpt = load_checkpoint(tmp_path / "ck" / f"epoch-{res.best['gender']['epoch']}.pt")
    assert not any(k.startswith("backbone.") for k in ckpt["model"])
    assert (tmp_path / "ck" / "epoch-1.pt").stat().st_size < 2_000_000  # the backbone alone is ~45 MB
    out = split_outputs(ckpt, m, "val")
    assert torch.allclose(out["gender"], res.val_outputs["gender"], atol=1e-5)
    model, _, _ = model_from_checkpoint(ckpt)
    assert torch.equal(model.backbone.conv1.weight, torch.load(tmp_path / "base.pth")["conv1.weight"])
    # the stripped checkpoint is itself a warm start: its base fills what it left out
    other = build_model(TrainConfig(), m.tasks)
    load_backbone(other, str(tmp_path / "ck"))
    assert torch.equal(other.backbone.conv1.weight, model.backbone.conv1.weight)
    # frozen modules (all of them, not only BatchNorm/Dropout) stay at inference behaviour through train()
    from mtl.model.prefix import freeze_backbone
    freeze_backbone(model, "layer2")
    model.train()
    assert all(not mod.training for mod in model.backbone.layer2.modules())
    assert model.backbone.layer3.training and model.heads.training


def test_half_precision_checkpoints_halve_the_file_and_answer_within_tolerance(tmp_path, fgo_small):
    """fit(half=True), as study trials run: training and its val outputs are unchanged, the files store the
    parameters in float16 (buffers, e.g. BatchNorm statistics, and the method's state in float32), are about
    half the size, and the restored model's probabilities stay within 5e-3 of the float32 checkpoint's."""
    from mtl.results.combine import to_prob
    from mtl.serve.inference import split_outputs
    from mtl.train.checkpoints import backbone_state, clear_cache
    m = load_manifest(fgo_small)
    cfg = TrainConfig(image_size=32, batch_size=16, epochs=1, augment=False, trunk_dims=[16], method="uncertainty")
    full, half = fit(cfg, m, tmp_path / "full"), fit(cfg, m, tmp_path / "half", half=True)
    assert full.history == half.history
    a, b = (load_checkpoint(tmp_path / d / "epoch-1.pt") for d in ("full", "half"))
    params = {n for n, _ in build_model(cfg, m.tasks).named_parameters()}
    assert params and all(b["model"][k].dtype == torch.float16 for k in params)
    buffers = [k for k in a["model"] if k not in params]
    assert any(k.endswith("running_var") for k in buffers)
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in buffers)
    assert all(torch.equal(v, b["criterion"][k]) for k, v in a["criterion"].items() if isinstance(v, torch.Tensor))
    assert (tmp_path / "half" / "epoch-1.pt").stat().st_size < 0.55 * (tmp_path / "full" / "epoch-1.pt").stat().st_size
    out_full, out_half = split_outputs(a, m, "val"), split_outputs(b, m, "val")
    for t in m.tasks:
        assert torch.allclose(out_full[t.name], full.val_outputs[t.name], atol=1e-5)  # float32 files: exact
        diff = (to_prob(t, out_half[t.name]) - to_prob(t, out_full[t.name])).abs().max().item()
        assert 0 < diff < 5e-3, (t.name, diff)  # rounded, and within tolerance
    # a float16 checkpoint as a warm start reads back as float32 (comparisons against it stay exact)
    clear_cache()
    base = backbone_state(str(tmp_path / "half"))
    assert all(v.dtype != torch.float16 for v in base.values())
    assert torch.equal(base["conv1.weight"], b["model"]["backbone.conv1.weight"].float())
    clear_cache()
    with pytest.raises(ValueError, match="resum"):
        fit(cfg, m, tmp_path / "r", half=True, resumable=True)


@pytest.mark.parametrize("change,needle", [
    ('freeze="layer9"', "search space: freeze=layer9: no such backbone stage"),
    ('init="nowhere.pt"', "search space: init=nowhere.pt: no such file or directory"),
])
def test_bad_freeze_or_init_in_a_study_is_one_line_before_any_trial(isolated_stores, fgo_small, capsys, change,
                                                                    needle):
    (isolated_stores / "experiments").mkdir()
    text = STUDY.format(manifest=fgo_small).replace("BASE = TrainConfig(image_size=32, batch_size=16)",
                                                    f"BASE = TrainConfig(image_size=32, batch_size=16, {change})")
    (isolated_stores / "experiments" / "broken.py").write_text(text)
    assert main(["tune", "broken"]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (isolated_stores / "optuna" / "broken.log").exists()  # nothing created


def test_objective_without_val_labels_and_negative_top_k_are_one_line(isolated_stores, fgo_small, capsys, tmp_path):
    import shutil
    dst = tmp_path / "set"
    shutil.copytree(fgo_small.parent, dst)
    csv = dst / fgo_small.name
    rows = csv.read_text().splitlines()
    head = rows[0].split(",")
    col = head.index("alignment")
    for i, row in enumerate(rows[1:], 1):
        cells = row.split(",")
        if cells[2] == "val":
            cells[col] = ""
            rows[i] = ",".join(cells)
    csv.write_text("\n".join(rows) + "\n")
    (isolated_stores / "experiments").mkdir()
    (isolated_stores / "experiments" / "noval.py").write_text(STUDY.format(manifest=csv))
    assert main(["tune", "noval"]) == 2
    assert "objective task(s) alignment have no label in the val split" in capsys.readouterr().err
    assert main(["ensemble", "noval", "--top-k", "-1"]) == 2
    assert "--top-k -1: must be 0" in capsys.readouterr().err


def test_workers_spread_over_the_visible_gpus(monkeypatch):
    """WORKERS=N with several GPUs: worker i uses GPU i mod n (device count stubbed; CI has no GPU)."""
    from mtl.tune.objective import assign_gpu
    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    monkeypatch.setattr(torch.cuda, "set_device", chosen.append)
    assert [assign_gpu(i) for i in range(5)] == [0, 1, 2, 0, 1] and chosen == [0, 1, 2, 0, 1]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert assign_gpu(3) is None and chosen == [0, 1, 2, 0, 1]  # one GPU: nothing to spread
