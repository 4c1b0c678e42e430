"""Extension is one file: a new task kind with its own option, and a method with a per-task parameter, each
registered from this test module (as a user's own file would), work through config, `--set`, the loss,
the criterion, tracking's params and a study's search space, with no edit anywhere in mtl."""

from __future__ import annotations

import optuna
import pytest
import torch

from mtl import kinds, methods
from mtl.errors import UserError
from mtl.kinds.base import Kind
from mtl.methods.base import LossWeighting
from mtl.model.losses import task_losses
from mtl.params import Param
from mtl.tasks import Task
from mtl.track import tracking
from mtl.train.config import TrainConfig


class Count(Kind):
    """Counts (a throwaway kind): Poisson loss on a log-rate head; option `eps` inside the log."""
    name = "count"
    primary_metric = "mae"
    direction = "minimize"
    has_classes = False
    options = {"eps": Param(1e-8, positive=True)}

    def out_dim(self, task):
        return 1

    def head_output(self, task, y):
        return y.squeeze(-1)

    def loss(self, task, output, target, options):
        return torch.nn.functional.poisson_nll_loss(output, target, log_input=True, eps=options["eps"],
                                                    reduction="none")


class Scaled(LossWeighting):
    """A throwaway method: each task's loss times its own `scale` (one value per task, default 1)."""
    name = "scaled"
    params = {"scale": Param(1.0, 0.5, 2.0, log=True, positive=True, per_task=True)}

    def weights(self):
        return {k: self.task_arg("scale", k) for k in self.task_names}


@pytest.fixture
def registered():
    kinds.register(Count())
    methods.register(Scaled)
    yield
    kinds.unregister("count")
    methods.unregister("scaled")


def tasks() -> list[Task]:
    return [Task("n", "count"), Task("gender", "binary", ("F", "M"))]


def test_a_kind_with_its_own_option_is_one_file(registered):
    cfg = TrainConfig().with_overrides(["kind_options.count.eps=0.5"])
    assert cfg.kind_options == {"count": {"eps": 0.5}}
    out = {"n": torch.zeros(4), "gender": torch.zeros(4)}
    tg = {"n": torch.tensor([0.0, 1.0, 2.0, 3.0]), "gender": torch.tensor([0.0, 1.0, 0.0, 1.0])}
    mk = {k: torch.ones(4, dtype=torch.bool) for k in tg}
    want = torch.nn.functional.poisson_nll_loss(torch.zeros(4), tg["n"], eps=0.5)
    assert task_losses(tasks(), out, tg, mk, cfg.kind_options)["n"] == pytest.approx(float(want))
    assert tracking.flatten_config(cfg)["count.eps"] == "0.5"
    with pytest.raises(UserError, match="kind 'count'.*eps must be > 0"):
        TrainConfig().with_overrides(["kind_options.count.eps=-1"])
    with pytest.raises(UserError, match="has no parameter"):
        TrainConfig().with_overrides(["kind_options.count.alpha=1"])


def test_a_method_with_a_per_task_parameter_is_one_file(registered):
    cfg = TrainConfig().with_overrides(["method=scaled", "method_args.scale.gender=2"])
    assert cfg.method_args == {"scale": {"gender": 2.0}}
    crit = methods.make_criterion(cfg, tasks())
    assert crit.weights() == {"n": 1.0, "gender": 2.0}
    assert tracking.flatten_config(cfg)["scaled.scale.gender"] == "2.0"
    with pytest.raises(UserError, match="scale for unknown task"):
        methods.make_criterion(TrainConfig(method="scaled", method_args={"scale": {"age": 2.0}}), tasks())
    with pytest.raises(UserError, match="scale.gender must be > 0"):
        TrainConfig().with_overrides(["method=scaled", "method_args.scale.gender=0"])
    trial = optuna.create_study().ask()
    drawn = methods.suggest(trial, "scaled", ["n", "gender"])
    assert set(drawn["method_args"]["scale"]) == {"n", "gender"}
    assert {"scaled.scale.n", "scaled.scale.gender"} == set(trial.params)


def test_the_old_names_still_read_with_one_line(capsys):
    cfg = TrainConfig().with_overrides(["weighting=dwa", "weighting_args.temperature=3", "regression_loss=mse"])
    assert (cfg.method, cfg.method_args, cfg.kind_options) == ("dwa", {"temperature": 3.0}, {"regression": {"loss": "mse"}})
    assert capsys.readouterr().err.count("warning:") == 3
    old = TrainConfig.from_dict({"weighting": "dwa", "weighting_args": {}, "regression_loss": "smooth_l1"})
    assert old.method == "dwa" and old.kind_options == {"regression": {"loss": "smooth_l1"}}
