"""HydraNet shapes, backbone-once, BatchNorm-safe freezing, metrics, overfitting, reproducibility."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision
from torch import nn

from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.methods import make_criterion
from mtl.model.hydranet import HydraNet, freeze, freeze_all_but
from mtl.model.metrics import TaskMetrics
from mtl.tasks import Task
from mtl.train.config import TrainConfig
from mtl.train.loop import fit

KINDS = [Task("gender", "binary", ("F", "M")), Task("race", "multiclass", ("a", "b", "c", "d", "e")),
         Task("colors", "multilabel", tuple("rgbkwpys")), Task("age", "regression", center=40.0, scale=20.0)]


def test_output_shapes_and_backbone_called_once():
    net = HydraNet(KINDS, "resnet18", trunk_dims=[32], head_dims=[16, 8], bn_momentum=0.2, dropout=0.1)
    calls = []
    net.backbone.register_forward_hook(lambda *a: calls.append(1))
    out = net(torch.randn(4, 3, 32, 32))
    assert len(calls) == 1
    assert out["gender"].shape == (4,) and out["race"].shape == (4, 5)
    assert out["colors"].shape == (4, 8) and out["age"].shape == (4,)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    assert bns and all(m.momentum == 0.2 for m in bns)


def test_regression_head_starts_at_center():
    net = HydraNet([KINDS[3]], "resnet18").eval()
    with torch.no_grad():
        assert torch.allclose(net(torch.randn(2, 3, 32, 32))["age"], torch.tensor([40.0, 40.0]))


@pytest.mark.parametrize("backbone", ["mobilenet_v3_small", "efficientnet_b0"])
def test_other_backbones(backbone):
    net = HydraNet(KINDS[:2], backbone, head_dims=[8]).eval()
    assert net(torch.randn(2, 3, 32, 32))["race"].shape == (2, 5)


def test_unknown_backbone_and_offline_weights_are_one_fast_line(tmp_path, monkeypatch):
    """weights=DEFAULT goes through torchvision's download; with no network it fails within 10 s in one
    line naming the cache file to copy (a machine with a network downloads it instead)."""
    import time

    from mtl.model.hydranet import unreachable
    from mtl.model.weights import weights_cache_path
    with pytest.raises(UserError, match="unknown backbone"):
        HydraNet(KINDS, "resnet9000")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    w = torchvision.models.ResNet18_Weights.DEFAULT
    if unreachable(w.url) is None:
        pytest.skip("this machine reaches download.pytorch.org: the weights would be downloaded")
    t0 = time.perf_counter()
    with pytest.raises(UserError) as e:
        HydraNet(KINDS, "resnet18", weights="DEFAULT")
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert "\n" not in msg and "cannot be downloaded" in msg and str(weights_cache_path(w)) in msg
    assert weights_cache_path(w) == tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert not (tmp_path / "hub" / "checkpoints").exists() or not any((tmp_path / "hub" / "checkpoints").iterdir())


def test_weights_placed_in_the_hub_cache_are_loaded(tmp_path, monkeypatch):
    """What a user without a network does: copy the file into the torch hub cache under its own name."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(3)
    placed = torchvision.models.resnet18().state_dict()
    path = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(placed, path)
    net = HydraNet(KINDS, "resnet18", weights="DEFAULT")
    assert torch.equal(net.backbone.conv1.weight, placed["conv1.weight"])
    assert torch.equal(net.backbone.layer4[1].bn2.running_var, placed["layer4.1.bn2.running_var"])


def _finetune_head_a(model, use_freeze: bool) -> None:
    """A few SGD steps on head 'gender' only, with the rest either frozen properly or by requires_grad."""
    if use_freeze:
        freeze_all_but(model, "gender")
    else:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("heads.gender"))
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(8, 3, 32, 32, generator=g) * 3 + 1  # a shifted batch moves BatchNorm stats
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x)["gender"], torch.ones(8))
        opt.zero_grad()
        loss.backward()
        opt.step()


@pytest.mark.parametrize("use_freeze", [True, False])
def test_freeze_keeps_other_heads_bit_identical(use_freeze):
    torch.manual_seed(0)
    model = HydraNet(KINDS, "resnet18", head_dims=[16])
    fixed = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        before = model(fixed)
        head_a = before["gender"].clone()
    _finetune_head_a(model, use_freeze)
    model.eval()
    with torch.no_grad():
        after = model(fixed)
    others_same = all(torch.equal(before[k], after[k]) for k in ("race", "colors", "age"))
    if use_freeze:
        assert others_same  # the BatchNorm trap is closed
        assert not torch.equal(head_a, after["gender"])  # ... and head A did learn
    else:
        assert not others_same  # requires_grad=False alone lets running stats drift (seed 004)


def test_freeze_survives_train_calls():
    model = HydraNet(KINDS[:1], "resnet18")
    freeze(model.backbone)
    model.train()
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert not any(p.requires_grad for p in model.backbone.parameters())


def test_metrics_skip_missing_and_match_reference():
    tasks = [KINDS[1], KINDS[3]]
    m = TaskMetrics(tasks)
    out = {"race": torch.tensor([[5., 0, 0, 0, 0], [0, 5., 0, 0, 0], [0, 0, 5., 0, 0]]),
           "age": torch.tensor([10., 20., 30.])}
    tgt = {"race": torch.tensor([0, 0, 2]), "age": torch.tensor([12., 0., 33.])}
    mask = {"race": torch.tensor([True, False, True]), "age": torch.tensor([True, False, True])}
    m.update(out, tgt, mask)
    r = m.compute()
    assert r["race/acc"] == 1.0  # the wrong middle sample is unlabelled
    assert math.isclose(r["age/mae"], 2.5)
    empty = TaskMetrics(tasks)
    empty.update(out, tgt, {k: torch.zeros(3, dtype=torch.bool) for k in mask})
    assert math.isnan(empty.compute()["race/acc"])


@pytest.mark.parametrize("n_tasks", [1, 3, 8])
def test_overfit_tiny_batch_mixed_kinds(n_tasks):
    """1 to 8 tasks of mixed kinds: a tiny batch is fitted to near-perfect scores on every task."""
    torch.manual_seed(0)
    tasks = [Task(f"t{i}_{k.kind}", k.kind, k.classes, k.center, k.scale) for i, k in
             enumerate((KINDS * 2)[:n_tasks])]
    model = HydraNet(tasks, "resnet18", head_dims=[64])
    x = torch.randn(16, 3, 16, 16)
    g = torch.Generator().manual_seed(0)
    tgt = {t.name: t.kind_impl.random_targets(t, 16, g) for t in tasks}
    mask = {t.name: torch.ones(16, dtype=torch.bool) for t in tasks}
    criterion = make_criterion(TrainConfig(method="uncertainty"), tasks)
    opt = torch.optim.Adam(list(model.parameters()) + list(criterion.parameters()), lr=3e-3)
    for _ in range(100):
        model.train()
        opt.zero_grad()
        criterion.backward(model.features(x), model.heads_forward, tgt, mask)
        opt.step()
    model.eval()
    m = TaskMetrics(tasks)
    with torch.no_grad():
        m.update(model(x), tgt, mask)
    r = m.compute()
    for t in tasks:
        v = r[t.metric_key]
        assert (v < 0.3 * t.scale) if t.direction == "minimize" else (v > 0.95), (t.name, v)


def test_fit_is_reproducible_and_checkpoints_per_task(fgo_small, tmp_path):
    m = load_manifest(fgo_small)
    cfg = TrainConfig(image_size=32, epochs=2, batch_size=16, head_dims=[16], method="dwa")
    a = fit(cfg, m, tmp_path / "a")
    b = fit(cfg, m, tmp_path / "b")
    assert a.history == b.history  # same seed, same metrics on CPU
    assert {"train/alignment/loss", "val/colors/f1", "val/gender/acc", "weight/region"} <= set(a.history[0])
    import json
    index = json.loads((a.checkpoint_dir / "index.json").read_text())
    assert set(index["best"]) == {t.name for t in m.tasks}
    for task, info in index["best"].items():
        best_epoch = max(a.history, key=lambda r: r[f"val/{m.task(task).metric_key}"])["epoch"]
        assert info["epoch"] == best_epoch
        ck = torch.load(a.checkpoint_dir / info["file"], weights_only=True)
        assert ck["epoch"] == info["epoch"] and ck["config"]["epochs"] == 2


def test_best_epoch_mean_keeps_one_model_for_every_task(fgo_small, tmp_path):
    """best_epoch="mean": every task takes the epoch with the best mean val score, so the run's checkpoint
    index names one file for all tasks (one network to serve) and its val outputs come from that epoch."""
    import json

    from mtl.score import task_mean_score as mean_score
    m = load_manifest(fgo_small)
    cfg = TrainConfig(image_size=32, epochs=3, batch_size=16, head_dims=[16], best_epoch="mean")
    r = fit(cfg, m, tmp_path / "a")
    index = json.loads((r.checkpoint_dir / "index.json").read_text())
    files = {info["file"] for info in index["best"].values()}
    want = max(r.history, key=lambda h: mean_score(m.tasks, {k[4:]: v for k, v in h.items() if k.startswith("val/")}))
    assert files == {f"epoch-{want['epoch']}.pt"}
    for t in m.tasks:
        assert r.best[t.name] == {"epoch": want["epoch"], "score": want[f"val/{t.metric_key}"]}
    with pytest.raises(UserError, match="best_epoch=.last.: expected one of per_task, mean"):
        fit(cfg.replace(best_epoch="last"), m, None)


def test_partial_labels_two_heads(tmp_path):
    """Seed 003: each row labelled for exactly one of two tasks; both heads train in the same batches."""
    import pandas as pd

    from mtl.data.render import write_manifest
    from tests.conftest import make_set, read_spec
    full = make_set(tmp_path, "utk", n_ids=24, per_id=3)
    table = pd.read_csv(full, dtype=str, keep_default_na=False).drop(columns="race")
    spec = read_spec(full)
    spec["tasks"] = [t for t in spec["tasks"] if t["name"] != "race"]
    first = pd.Series(range(len(table))) % 2 == 0
    table.loc[first, "gender"] = ""
    table.loc[~first, "age"] = ""
    write_manifest(table, spec, tmp_path / "two.csv")
    m = load_manifest(tmp_path / "two.csv")
    cfg = TrainConfig(image_size=32, epochs=3, batch_size=16, lr_backbone=3e-3, lr_heads=3e-3)
    res = fit(cfg, m)
    for row in res.history:
        assert row["train/age/loss"] > 0 and row["train/gender/loss"] > 0
        assert not math.isnan(row["val/age/mae"]) and not math.isnan(row["val/gender/acc"])
    assert res.history[-1]["train/age/loss"] < res.history[0]["train/age/loss"]


def test_multi_lenet_is_paretomtls_network_and_says_its_input_size():
    """ParetoMTL's MultiMNIST network: conv 9x9 (10) and 5x5 (20), linear 500 -> 50, linear heads 50 -> 10."""
    from mtl.model.hydranet import build_model
    from mtl.model.prefix import freeze_backbone
    tasks = [Task("left", "multiclass", tuple("0123456789")), Task("right", "multiclass", tuple("0123456789"))]
    cfg = TrainConfig(backbone="multi_lenet", image_size=36)
    model = build_model(cfg, tasks)
    conv1, conv2, fc = model.backbone.conv1, model.backbone.conv2, model.backbone.fc
    assert (conv1.out_channels, conv1.kernel_size, conv2.out_channels, conv2.kernel_size) == (10, (9, 9), 20, (5, 5))
    assert (fc.in_features, fc.out_features) == (500, 50)
    assert [type(m).__name__ for m in model.heads["left"]] == ["Sequential", "Linear"]  # no hidden layer
    out = model(torch.randn(4, 3, 36, 36))
    assert out["left"].shape == (4, 10) and out["right"].shape == (4, 10)
    freeze_backbone(model, "relu2")  # a frozen prefix is checked at its own input size
    assert not model.backbone.conv2.weight.requires_grad and model.backbone.fc.weight.requires_grad
    with pytest.raises(UserError, match="takes 36 px images; image_size=32"):
        build_model(cfg.replace(image_size=32), tasks)
    with pytest.raises(UserError, match="no pretrained weights"):
        build_model(cfg.replace(weights="DEFAULT"), tasks)


def test_resume_continues_as_if_never_stopped(fgo_small, tmp_path):
    """4 epochs in one go equal 2 epochs, a kill, and `--from` for the rest: weights, method state, history and
    per-task bests bit for bit on CPU (optimizer, cosine schedule, epoch, RNGs and bests restored)."""
    from mtl.data.manifest import load_manifest
    from mtl.errors import UserError
    from mtl.train.artifacts import load_checkpoint, read_index
    from mtl.train.config import TrainConfig
    from mtl.train.loop import fit
    m = load_manifest(fgo_small)
    cfg = TrainConfig(image_size=32, epochs=4, batch_size=16, trunk_dims=[16], dropout=0.3, augment=True,
                      method="dwa", scheduler="cosine", device="cpu", patience=0)
    whole = fit(cfg, m, tmp_path / "whole", resumable=True)

    class Killed(Exception):
        pass

    def kill(epoch, row):
        if epoch == 2:
            raise Killed
    with pytest.raises(Killed):
        fit(cfg, m, tmp_path / "cut", on_epoch=kill, resumable=True)
    assert read_index(tmp_path / "cut")["last"]["epoch"] == 2
    rest = fit(cfg, m, tmp_path / "cut", resume=load_checkpoint(tmp_path / "cut"), resumable=True)
    assert [h["epoch"] for h in rest.history] == [1, 2, 3, 4]
    assert rest.history == whole.history and rest.best == whole.best
    a, b = load_checkpoint(tmp_path / "whole"), load_checkpoint(tmp_path / "cut")
    assert a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert a["criterion"]["_extra_state"] == b["criterion"]["_extra_state"]  # DWA's loss history
    assert sorted(p.name for p in (tmp_path / "cut").glob("epoch-*.pt")) == sorted(
        p.name for p in (tmp_path / "whole").glob("epoch-*.pt"))
    # a checkpoint without progress (a study trial's) is not resumable: one line
    plain = fit(cfg.replace(epochs=1), m, tmp_path / "plain")
    with pytest.raises(UserError, match="not resumable"):
        fit(cfg, m, tmp_path / "x", resume=load_checkpoint(plain.checkpoint_dir))


def test_mobilenet_v2_stages_are_its_blocks_and_a_frozen_prefix_answers_as_the_whole():
    """MobileNetV2 pools with a function after `features`: its stages are features.0 ... features.18 and `pool`,
    and the prefix + the rest computes what the backbone computes (the check freeze runs)."""
    from mtl.model.hydranet import build_model
    from mtl.model.prefix import forward_is_stages, freeze_backbone, prefix, rest, stage_names
    torch.manual_seed(0)
    model = build_model(TrainConfig(backbone="mobilenet_v2", image_size=32), KINDS).eval()
    names = stage_names(model.backbone)
    assert names[:2] == ["features.0", "features.1"] and names[18:] == ["features.18", "pool", "classifier"]
    assert forward_is_stages(model.backbone)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(rest(model.backbone, prefix(model.backbone, x, "features.13"), "features.13"),
                              model.backbone(x), atol=1e-5)
    freeze_backbone(model, "features.13")
    model.train()
    assert not model.backbone.features[13].conv[0][0].weight.requires_grad and not model.backbone.features[13].training
    assert model.backbone.features[14].conv[0][0].weight.requires_grad and model.backbone.features[14].training
    with pytest.raises(UserError, match="no such backbone stage.*features.18"):
        freeze_backbone(model, "layer3")


def test_dense_layers_without_batchnorm_have_none():
    """batchnorm=False: the trunk and heads are Linear -> ReLU (-> Dropout), the seed's round 2."""
    from mtl.model.hydranet import build_model
    cfg = TrainConfig(backbone="multi_lenet", image_size=36, trunk_dims=[32, 32], head_dims=[16], dropout=0.1)
    with_bn, without = build_model(cfg, KINDS), build_model(cfg.replace(batchnorm=False), KINDS)
    count = lambda m: sum(isinstance(x, nn.BatchNorm1d) for x in m.modules())  # noqa: E731
    assert count(with_bn.trunk) == 2 and count(with_bn.heads) == len(KINDS)
    assert count(without) == 0
    assert [type(x).__name__ for x in without.trunk] == ["Linear", "ReLU", "Dropout"] * 2
    assert TrainConfig.from_dict(cfg.replace(batchnorm=False).to_dict()).batchnorm is False
    assert without(torch.randn(3, 3, 36, 36))["race"].shape == (3, 5)
