"""Multi-task methods (mtl/methods): our steps against torchjd called directly, masked tasks left out,
weighting state in checkpoints, and bad settings as one line before any training."""

from __future__ import annotations

import math
import sys

import mlflow
import pytest
import torch
import torchjd.aggregation as agg
import torchjd.scalarization as sc

from mtl import methods
from mtl.__main__ import main
from mtl.errors import UserError
from mtl.model.hydranet import HydraNet
from mtl.results.selection import select, selected_per_method
from mtl.tasks import Task
from mtl.train.artifacts import load_checkpoint
from mtl.train.config import TrainConfig
from mtl.train.loop import check_config, fit, shared_params
from mtl.tune.storage import open_existing

TASKS = [Task("gender", "binary", ("F", "M")), Task("race", "multiclass", ("a", "b", "c")),
         Task("colors", "multilabel", ("r", "g", "b", "k")), Task("age", "regression", center=40.0, scale=20.0)]
TORCHJD = ["upgrad", "mgda", "pcgrad", "cagrad", "nash_mtl", "imtl_g", "aligned_mtl", "dualproj", "graddrop",
           "config", "random", "excess_mtl", "fairgrad", "gradvac", "cr_mogm", "pcd"]
SCALARIZERS = ["stch", "geometric_mean", "imtl_l", "famo", "pbi", "cosmos"]


def batch(n=12, missing=()):
    g = torch.Generator().manual_seed(1)
    targets = {t.name: t.kind_impl.random_targets(t, n, g) for t in TASKS}
    masks = {t.name: torch.rand(n, generator=g) > 0.2 for t in TASKS}
    for name in missing:
        masks[name] = torch.zeros(n, dtype=torch.bool)
    return torch.randn(n, 3, 32, 32, generator=g), targets, masks


def model():
    torch.manual_seed(0)
    return HydraNet(TASKS, "resnet18", trunk_dims=[24], head_dims=[8]).train()


def grads(net):
    return {k: p.grad.clone() for k, p in net.named_parameters() if p.grad is not None}


def test_every_listed_method_is_registered_and_cites_its_paper():
    assert set(TORCHJD) | set(SCALARIZERS) | {"fixed", "uncertainty", "dwa"} <= set(methods.names())
    for name in methods.names():
        cls = methods.get(name)
        assert cls.cite and (cls.__doc__ or sys.modules[cls.__module__].__doc__), name


@pytest.mark.parametrize("name,aggregator,kwargs", [
    ("upgrad", "UPGrad", {}), ("mgda", "MGDA", {}), ("pcgrad", "PCGrad", {}),
    ("excess_mtl", "ExcessMTL", {}), ("fairgrad", "FairGrad", {"alpha": 1.0}), ("gradvac", "GradVac", {}),
    ("cr_mogm", lambda: agg.GramianWeightedAggregator(agg.CRMOGMWeighting(agg.MGDAWeighting(), alpha=0.9)), {}),
    ("pcd", "PCD", {"tau": 0.02})])
@pytest.mark.parametrize("missing", [(), ("colors",)])
def test_step_equals_torchjd_on_the_shared_features(name, aggregator, kwargs, missing):
    """Ours: one criterion.backward. Reference: the Jacobian of the labelled tasks' losses w.r.t. the
    shared features built by hand, torchjd's aggregator applied to it, the result backpropagated."""
    import torchjd.aggregation
    from torchjd.autojac import jac_to_grad, mtl_backward

    from mtl.model.losses import task_losses
    x, targets, masks = batch(missing=missing)
    ours = model()
    crit = methods.make_criterion(TrainConfig(method=name), TASKS, shared_params(ours))
    crit.backward(ours.features(x), ours.heads_forward, targets, masks)
    got = grads(ours)

    ref = model()
    feats = ref.features(x)
    z = feats.detach().requires_grad_(True)
    losses = task_losses(TASKS, ref.heads_forward(z), targets, masks)
    present = [t.name for t in TASKS if t.name not in missing]
    rows = [torch.autograd.grad(losses[k], z, retain_graph=True)[0].reshape(-1) for k in present]
    make = aggregator if callable(aggregator) else lambda: getattr(torchjd.aggregation, aggregator)(**kwargs)
    direction = make()(torch.stack(rows))
    feats.backward(direction.reshape(z.shape))
    for k in present:  # each head gets its own task's gradient
        torch.autograd.backward(losses[k], inputs=[p for p in ref.heads[k].parameters()], retain_graph=True)
    want = grads(ref)

    assert set(got) == set(want)
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-5, rtol=1e-4), k
    for k in missing:  # an unlabelled task takes no part: its head gets no gradient at all
        assert all(p.grad is None for p in ours.heads[k].parameters())
    assert [k for k in got if k.startswith("backbone.")], "the shared backbone was trained"

    # the same step with the Jacobian w.r.t. the shared parameters equals torchjd's documented usage
    ours_p, ref_p = model(), model()
    cfg = TrainConfig(method=name, jacobian_on="params")
    crit = methods.make_criterion(cfg, TASKS, shared_params(ours_p))
    crit.backward(ours_p.features(x), ours_p.heads_forward, targets, masks)
    feats = ref_p.features(x)
    losses = task_losses(TASKS, ref_p.heads_forward(feats), targets, masks)
    mtl_backward([losses[k] for k in present], features=feats)
    jac_to_grad(shared_params(ref_p), make())
    got, want = grads(ours_p), grads(ref_p)
    assert set(got) == set(want)
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-5, rtol=1e-4), k


@pytest.mark.parametrize("name", ["fixed", "uncertainty", "dwa", *TORCHJD, *[s for s in SCALARIZERS if s != "famo"]])
def test_every_method_steps_and_reports_weights_and_cosines(name):
    x, targets, masks = batch(missing=("race",))
    net = model()
    crit = methods.make_criterion(TrainConfig(method=name), TASKS, shared_params(net))
    opt = torch.optim.SGD(list(net.parameters()) + list(crit.parameters()), lr=1e-2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    losses = crit.backward(net.features(x), net.heads_forward, targets, masks)
    opt.step()
    assert set(losses) == {t.name for t in TASKS} and all(torch.isfinite(v) for v in losses.values())
    moved = {k for k, v in net.state_dict().items() if v.dtype.is_floating_point and not torch.equal(v, before[k])}
    assert any(k.startswith("backbone.") for k in moved) and not any(k.startswith("heads.race.") and
                                                                   "running" not in k for k in moved)
    stats = crit.epoch_stats()
    assert {"weight/gender", "weight/colors", "weight/age", "grad/cosine"} <= set(stats)
    assert "weight/race" not in stats  # never labelled this epoch: no weight was applied
    assert -1.0 <= stats["grad/cosine"] <= 1.0
    assert "grad/cosine/gender-vs-colors" in stats and not any("race" in k for k in stats if k.startswith("grad/"))
    assert crit.epoch_stats() == {}  # reset each epoch


def _uniform(n):
    return torch.full((n,), 1.0 / n)


SCALARIZER_REFS = {  # torchjd's scalarizer as each method's defaults configure it, for n tasks
    "stch": lambda n: sc.STCH(mu=0.5, weights=_uniform(n)), "geometric_mean": lambda n: sc.GeometricMean(),
    "imtl_l": lambda n: sc.IMTLL(n), "famo": lambda n: sc.FAMO(n),
    "pbi": lambda n: sc.PBI(theta=5.0, weights=_uniform(n)), "cosmos": lambda n: sc.COSMOS(lambda_=1.0, weights=_uniform(n))}


@pytest.mark.parametrize("name", SCALARIZERS)
def test_scalarizer_step_equals_torchjd_called_directly(name):
    """Ours: one criterion.backward (and FAMO's after_step). Reference: torchjd's scalarizer on the stacked
    task losses, one backward (FAMO: then `update` with the losses recomputed after the step)."""
    from mtl.model.losses import task_losses
    x, targets, masks = batch()
    ours, ref = model(), model()
    crit = methods.make_criterion(TrainConfig(method=name), TASKS, shared_params(ours))
    opt = torch.optim.SGD(ours.parameters(), lr=0.1)
    crit.backward(ours.features(x), ours.heads_forward, targets, masks)
    got = grads(ours)
    opt.step()
    scalarizer = SCALARIZER_REFS[name](len(TASKS))
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    losses = task_losses(TASKS, ref(x), targets, masks)
    stacked = torch.stack([losses[t.name] for t in TASKS])
    scalarizer(stacked).backward()
    want = grads(ref)
    ref_opt.step()
    assert set(got) == set(want) and [k for k in got if k.startswith("backbone.")]
    for k in want:
        assert torch.allclose(got[k], want[k], atol=1e-5, rtol=1e-4), k
    weights = {k[len("weight/"):]: v for k, v in crit.epoch_stats().items() if k.startswith("weight/")}
    assert set(weights) == {t.name for t in TASKS} and all(math.isfinite(v) for v in weights.values())
    if name == "geometric_mean":  # GLS: each task's weight is the total over n times 1/its loss
        prods = [weights[t.name] * float(losses[t.name].detach()) for t in TASKS]
        assert max(prods) - min(prods) < 1e-4 * max(prods)
    if name == "famo":
        with torch.no_grad():
            crit.after_step(crit.losses(ours(x), targets, masks))
            scalarizer.update(torch.stack([v for v in task_losses(TASKS, ref(x), targets, masks).values()]))
        assert torch.allclose(crit.scalar._w, scalarizer._w, atol=1e-6) and scalarizer._w.abs().sum() > 0


def test_famo_needs_every_task_and_imtl_l_leaves_an_unlabelled_tasks_scale_alone():
    x, targets, masks = batch(missing=("race",))
    net = model()
    crit = methods.make_criterion(TrainConfig(method="famo"), TASKS, shared_params(net))
    with pytest.raises(UserError, match="famo.*race"):
        crit.backward(net.features(x), net.heads_forward, targets, masks)
    crit = methods.make_criterion(TrainConfig(method="imtl_l"), TASKS, shared_params(net))
    crit.backward(net.features(x), net.heads_forward, targets, masks)
    g = crit.scalar.log_scale.grad
    assert g[1] == 0 and all(g[i] != 0 for i in (0, 2, 3))  # race is task 1


def test_pcd_puts_the_primary_task_first():
    crit = methods.make_criterion(TrainConfig(method="pcd", method_args={"primary": "colors"}), TASKS)
    assert crit.order(["gender", "race", "colors"]) == ["colors", "gender", "race"]
    with pytest.raises(UserError, match="primary='nope'"):
        methods.make_criterion(TrainConfig(method="pcd", method_args={"primary": "nope"}), TASKS)


def test_uncertainty_parameter_of_an_unlabelled_task_does_not_move():
    x, targets, masks = batch()
    net = model()
    crit = methods.make_criterion(TrainConfig(method="uncertainty"), TASKS)
    opt = torch.optim.AdamW([{"params": list(net.parameters())},
                             {"params": list(crit.parameters()), "weight_decay": 0.0}], lr=1e-2)
    for _ in range(2):  # give Adam momentum for every log-variance first
        opt.zero_grad(set_to_none=True)
        crit.backward(net.features(x), net.heads_forward, targets, masks)
        opt.step()
    masks = {**masks, "age": torch.zeros_like(masks["age"])}
    before = {k: float(p.detach()) for k, p in crit.log_var.items()}
    opt.zero_grad(set_to_none=True)
    crit.backward(net.features(x), net.heads_forward, targets, masks)
    opt.step()
    after = {k: float(p.detach()) for k, p in crit.log_var.items()}
    assert after["age"] == before["age"]
    assert after["gender"] != before["gender"]


def test_dwa_ratio_is_one_for_an_epoch_without_labels():
    crit = methods.get("dwa")(TASKS[:3], temperature=2.0)
    crit.end_epoch({"gender": 1.0, "race": math.nan, "colors": 1.0})
    crit.end_epoch({"gender": 0.5, "race": 2.0, "colors": 1.0})
    w = crit.weights()
    e = [math.exp(0.5 / 2), math.exp(1.0 / 2), math.exp(1.0 / 2)]  # race: ratio 1 (no label in epoch 1)
    for k, v in zip(["gender", "race", "colors"], e):
        assert math.isclose(w[k], 3 * v / sum(e), rel_tol=1e-6)
    crit.end_epoch({"gender": 0.4, "race": 1.0, "colors": math.nan})  # colors: no label now
    e = [math.exp(0.8 / 2), math.exp(0.5 / 2), math.exp(1.0 / 2)]
    assert math.isclose(crit.weights()["colors"], 3 * e[2] / sum(e), rel_tol=1e-6)


@pytest.mark.parametrize("weighting,key", [("uncertainty", "log_var.age"), ("dwa", "_extra_state"),
                                            ("imtl_l", "scalar.log_scale")])
def test_checkpoints_hold_the_weighting_state_and_from_restores_it(weighting, key, utk_small, tmp_path):
    from mtl.data.manifest import load_manifest
    m = load_manifest(utk_small)
    cfg = TrainConfig(image_size=32, epochs=3, batch_size=16, head_dims=[8], method=weighting)
    res = fit(cfg, m, tmp_path / "a")
    fresh = fit(cfg.replace(epochs=1), m, None).history[0]
    ckpt = load_checkpoint(res.checkpoint_dir)
    assert key in ckpt["criterion"]
    if weighting == "dwa":
        assert len(ckpt["criterion"]["_extra_state"]["history"]) == 3
    else:
        assert bool((ckpt["criterion"][key] != 0.0).all())  # learned
    # --init warm-starts the method too: epoch 1 of the new run applies the restored weights, not the initial ones
    resumed = fit(cfg.replace(epochs=1), m, tmp_path / "b", init=ckpt)
    w_last = res.history[-1]
    if weighting == "dwa":
        h = ckpt["criterion"]["_extra_state"]["history"]
        r = {k: h[-1][k] / h[-2][k] for k in ("age", "gender", "race")}
        e = {k: math.exp(v / 2) for k, v in r.items()}
        assert math.isclose(resumed.history[0]["weight/age"], 3 * e["age"] / sum(e.values()), rel_tol=1e-5)
    else:
        w = resumed.history[0]["weight/age"]  # continues from the learned log-variance, not from 0
        assert abs(w - w_last["weight/age"]) < abs(w - fresh["weight/age"])


@pytest.mark.parametrize("changes,expect", [
    ({"method": "upgrad", "loss_weights": {"gender": 2.0}}, "loss_weights are for method=fixed"),
    ({"method": "dwa", "method_args": {"temperature": 0.0}}, "temperature must be > 0"),
    ({"method": "dwa", "method_args": {"temperature": -1.0}}, "temperature must be > 0"),
    ({"method": "gradnorm"}, "unknown method 'gradnorm'"),
    ({"scheduler": "step"}, "scheduler='step': expected one of cosine, none"),
    ({"kind_options": {"regression": {"loss": "huber"}}}, "loss='huber': expected one of l1, mse, smooth_l1"),
    ({"method": "cagrad", "method_args": {"alpha": 0.3}}, "has no parameter(s) alpha"),
    ({"method": "upgrad", "jacobian_on": "weights"}, "jacobian_on='weights'"),
])
def test_bad_method_settings_are_one_line(changes, expect):
    with pytest.raises(UserError, match="^" + ".*" + expect.replace("(", r"\(").replace(")", r"\)")) as e:
        check_config(TrainConfig(image_size=32, **changes), TASKS)
    assert "\n" not in str(e.value)


def test_cli_bad_weighting_is_one_line_before_training(fgo_small, isolated_stores, capsys):
    rc = main(["train", "--manifest", str(fgo_small), "--set", "method=dwa", "--set", "method_args.temperature=0"])
    err = capsys.readouterr().err
    assert rc == 2 and "temperature must be > 0" in err and "Traceback" not in err
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_cli_train_with_cagrad_logs_weights_cosines_and_its_parameters(fgo_small, isolated_stores, capsys):
    rc = main(["train", "--manifest", str(fgo_small), "--epochs", "2", "--set", "image_size=32",
               "--set", "method=cagrad", "--set", "method_args.c=0.3"])
    assert rc == 0, capsys.readouterr()
    run = mlflow.search_runs(experiment_names=["train"], output_format="list")[0]
    assert run.data.params["method"] == "cagrad" and run.data.params["cagrad.c"] == "0.3"
    client = mlflow.MlflowClient()
    for key in ("weight/gender", "weight/colors", "grad/cosine", "grad/cosine/gender-vs-region"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key


@pytest.mark.parametrize("method", TORCHJD)
def test_cli_train_with_each_gradient_method(method, fgo_small, isolated_stores, capsys):
    """`train --set method=<method>` for every torchjd method (over cached frozen-backbone features, so
    each is a second or two): it trains, logs each task's weight and the task-gradient cosines, and logs
    every parameter the method ran with, defaults included."""
    rc = main(["train", "--manifest", str(fgo_small), "--epochs", "1", "--set", "image_size=32", "--set", "freeze=all",
               "--set", "augment=false", "--set", "trunk_dims=16", "--set", f"method={method}"])
    assert rc == 0, capsys.readouterr()
    run = mlflow.search_runs(experiment_names=["train"], output_format="list")[0]
    m = run.data.metrics
    assert all(math.isfinite(m[f"weight/{t}"]) for t in ("gender", "region", "fighting_style", "alignment", "colors"))
    assert -1.0 <= m["grad/cosine"] <= 1.0 and "grad/cosine/gender-vs-colors" in m
    assert {f"{method}.{k}" for k in methods.get(method).params} <= set(run.data.params)


METHOD_STUDY = '''
"""Tiny method study for tests."""
from mtl import methods
from mtl.train.config import TrainConfig
MANIFEST = "{manifest}"
OBJECTIVES = ["gender", "region", "colors"]
_METHODS = ["fixed", "upgrad", "cagrad"]
TRIALS = 3
EPOCHS = 1
SINGLE_TASK_BASELINES = True
ENQUEUE = [{{"method": m}} for m in _METHODS]
BASE = TrainConfig(image_size=32, batch_size=16, trunk_dims=[16])


def search_space(trial, base):
    return base.replace(**methods.suggest(trial, trial.suggest_categorical("method", _METHODS), OBJECTIVES))
'''


TUNED_STUDY = '''
"""The fixed weights tuned with a method's budget (tests)."""
from mtl import methods
from mtl.tune.studies import load_study
_m = load_study("meth")
MANIFEST, OBJECTIVES, BASE, EPOCHS = _m.manifest, _m.objectives, _m.base, _m.epochs
TRIALS = 2
ENQUEUE = [{f"loss_weight.{t}": 1.0 for t in OBJECTIVES}]


def search_space(trial, base):
    return base.replace(**methods.suggest(trial, "fixed", OBJECTIVES))
'''


def test_method_study_equal_budget_single_task_baselines_and_delta_m(isolated_stores, fgo_small, capsys):
    exp = isolated_stores / "experiments"
    exp.mkdir()
    (exp / "meth.py").write_text(METHOD_STUDY.format(manifest=fgo_small) + 'TUNED_FIXED = "tuned"\n')
    (exp / "tuned.py").write_text(TUNED_STUDY)
    assert main(["tune", "meth"]) == 0
    runs = mlflow.search_runs(experiment_names=["meth"], output_format="list")
    single = {r.data.tags["mtl.task"]: r for r in runs if r.data.tags.get("mtl.role") == "single-task"}
    trials = [r for r in runs if r.data.tags.get("mtl.role") == "trial"]
    assert set(single) == {"gender", "region", "colors"} and len(trials) == 3
    assert sorted(r.data.params["method"] for r in trials) == ["cagrad", "fixed", "upgrad"]  # ENQUEUE: once each
    assert single["colors"].data.params["single_task"] == "colors"
    for r in trials:
        m = r.data.metrics
        assert m["best_val/delta_m_lo"] <= m["best_val/delta_m"] <= m["best_val/delta_m_hi"]
    # Δm recomputed by hand from the logged point scores: 100/T Σ (M - B) / B (all higher-is-better here)
    keys = {"gender": "gender/acc", "region": "region/acc", "colors": "colors/f1"}
    for r in trials:
        want = 100 / 3 * sum((r.data.metrics[f"best_val/{k}"] - single[t].data.metrics[f"best_val/{k}"])
                             / single[t].data.metrics[f"best_val/{k}"] for t, k in keys.items())
        assert r.data.metrics["best_val/delta_m"] == pytest.approx(want, rel=1e-6, abs=1e-9)

    # a resume trains no baseline again, and queues nothing again
    capsys.readouterr()
    assert main(["tune", "meth", "--trials", "1"]) == 0
    assert "single-task baseline" not in capsys.readouterr().out
    runs = mlflow.search_runs(experiment_names=["meth"], output_format="list")
    assert sum(r.data.tags.get("mtl.role") == "single-task" for r in runs) == 3

    assert main(["pareto", "meth"]) == 0
    out = capsys.readouterr().out
    assert "Δm %" in out and "| upgrad | 1 |" in out and "| cagrad |" in out
    methods_md = (isolated_stores / "reports" / "meth" / "methods.md").read_text()
    assert "Paired difference of the means against `fixed`" in methods_md and "Holm" in methods_md
    assert "(8 paired comparisons)" in methods_md  # upgrad and cagrad x 3 tasks and Δm

    picked = select("meth")
    picks = selected_per_method(picked.study, picked.optuna_study, picked.members)
    assert set(picks) == {"fixed", "upgrad", "cagrad"}
    for p in picks.values():  # pareto keeps each method's val-selected training: the equal-budget verdict reads it
        assert not mlflow.get_run(p.run_id).data.tags.get("checkpoints", "").startswith("removed")

    capsys.readouterr()
    assert main(["ensemble", "meth"]) == 0  # the tuned study has not run: one line, no verdict
    assert "no equal-budget verdict: study 'tuned'" in capsys.readouterr().out
    assert not (isolated_stores / "reports" / "meth" / "equal_budget.md").exists()
    assert main(["tune", "tuned"]) == 0  # a queue shorter than TRIALS: the queued plain sum first, then TPE
    done = open_existing("tuned", None)[2]
    assert len(done) == 2 and done[0].params == {"loss_weight.gender": 1.0, "loss_weight.region": 1.0,
                                                 "loss_weight.colors": 1.0}
    assert main(["ensemble", "meth"]) == 0
    verdict = (isolated_stores / "reports" / "meth" / "equal_budget.md").read_text()
    main_table = verdict.split("Test loss")[0].splitlines()
    rows = {r.split("|")[1].strip(): r for r in main_table if r.startswith("| ") and "---" not in r}
    assert {"fixed (tuned)", "fixed", "upgrad", "cagrad", "single-task"} <= set(rows)
    assert rows["fixed (tuned)"].split("|")[2].strip().startswith("tuned #")
    assert "(9 paired comparisons)" in verdict and "Verdict:" in verdict  # 3 methods x 3 tasks against the tuned
    assert "region loss" in verdict and "colors loss" in verdict  # each task's loss on test
    report = (isolated_stores / "reports" / "meth" / "report.md").read_text()
    assert "## Equal budget" in report
    assert "| task | best constant | single-task |" in report and "Holm" in report
    # Δm only for single runs: the tuned best and the ensembles pick among trials (not like-for-like)
    assert "tuned best - single-task" not in report and "Δm % vs single-task" not in report
    table = (isolated_stores / "reports" / "meth" / "ensemble_test.md").read_text()
    rows = [[c.strip() for c in line.strip()[1:-1].split("|")] for line in table.splitlines()
            if line.startswith("| ") and "---" not in line]
    dm_cells = {r[0]: r[-1] for r in rows}
    assert all(dm_cells[f"trial-{n}"].startswith(("+", "-")) for n in range(3) if f"trial-{n}" in dm_cells)
    assert dm_cells["chosen on val"] == "" and dm_cells["routing"] == "" and "**" not in table


def test_a_study_with_a_bad_method_fails_before_any_trial(isolated_stores, fgo_small, capsys):
    exp = isolated_stores / "experiments"
    exp.mkdir()
    bad = METHOD_STUDY.replace('_METHODS = ["fixed", "upgrad", "cagrad"]', '_METHODS = ["fixed", "upgrad", "gradnorm"]')
    (exp / "meth.py").write_text(bad.format(manifest=fgo_small).replace("ENQUEUE = ", "_Q = "))
    assert main(["tune", "meth"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'gradnorm'" in err and "meth.py" in err and "Traceback" not in err
    assert mlflow.search_runs(search_all_experiments=True, output_format="list") == []


def test_switching_method_drops_the_old_methods_settings():
    old = TrainConfig(method="dwa", method_args={"temperature": 3.0})
    assert old.with_overrides(["method=upgrad"]).method_args == {}
    fixed = TrainConfig(loss_weights={"gender": 2.0})
    assert fixed.with_overrides(["method=cagrad"]).loss_weights == {}
    new = old.with_overrides(["method=cagrad", "method_args.c=0.2"])
    assert new.method_args == {"c": 0.2} and isinstance(new.method_args["c"], float)
    assert old.with_overrides(["method_args.temperature=1.5"]).method_args == {"temperature": 1.5}
    with pytest.raises(UserError, match="must be > 0"):
        old.with_overrides(["method_args.temperature=0"])


def test_pending_entries_requeue_failed_and_count_waiting():
    import optuna

    from mtl.tune.storage import pending_entries
    s = optuna.create_study()
    entries = [{"method": "fixed", "repeat": 0}, {"method": "fixed", "repeat": 1}, {"method": "upgrad"}]
    for e in entries:
        s.enqueue_trial(e)
    assert pending_entries(entries, s.get_trials()) == []  # all three are waiting
    t = s.ask()  # runs the first entry ...
    s.tell(t, state=optuna.trial.TrialState.FAIL)  # ... and fails: it is pending again
    assert pending_entries(entries, s.get_trials()) == [entries[0]]
    s.tell(s.ask(), 0.5)
    assert pending_entries(entries + [entries[2]], s.get_trials()) == [entries[0], entries[2]]


def test_a_bad_enqueue_entry_is_one_line(isolated_stores, fgo_small, capsys):
    exp = isolated_stores / "experiments"
    exp.mkdir()
    for entries, needle in [('[{{"method": "upgrd"}}]', "ENQUEUE entry {'method': 'upgrd'}"),
                            ('[{{"weightng": "upgrad"}}]', "no parameter(s) weightng")]:
        (exp / "meth.py").write_text(METHOD_STUDY.replace(
            'ENQUEUE = [{{"method": m}} for m in _METHODS]', f"ENQUEUE = {entries}").format(manifest=fgo_small))
        assert main(["tune", "meth"]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
