"""Multi-task methods: how per-task losses become one update of the shared parameters.

Each method is a `Criterion` (mtl/methods/base.py) the training loop is handed: it turns (outputs,
targets, masks) into per-task losses and performs the backward for its method. Two families:

- loss weightings (`LossWeighting`): fixed.py, uncertainty.py (Kendall et al. 2018), dwa.py (Liu et
  al. 2019): one weighted sum, one backward;
- loss scalarizers (`ScalarizerMethod`, scalarization.py, a LossWeighting): torchjd's scalarizers
  (STCH, geometric mean, IMTL-L, FAMO, PBI, COSMOS) on the labelled tasks' losses;
- gradient methods (`JacobianMethod`, jacobian.py): torchjd aggregators (UPGrad, MGDA, PCGrad,
  CAGrad, Nash-MTL, IMTL-G, Aligned-MTL, DualProj, GradDrop, ConFIG, Random/RLW, ExcessMTL, FairGrad,
  GradVac, CR-MOGM, PCD) applied to the Jacobian of the per-task losses with respect to the shared
  features.

A new method is one module here that subclasses one of them and decorates it with `@register`,
plus its test. Its parameters are `Param`s (mtl/params.py) declared in its class (`per_task=True`: one
value per task). `TrainConfig.method` names it; `TrainConfig.method_args` holds its parameters
(`--set method_args.c=0.4`, a per-task one `--set method_args.<name>.<task>=<value>`); `suggest()`
gives a study its parameters' search space.
"""

from __future__ import annotations

import importlib
import pkgutil

from mtl.methods.base import (
    Criterion,
    DivergedError,
    JacobianMethod,
    LossWeighting,
    get,
    names,
    register,
    unregister,
)
from mtl.params import Param

__all__ = ["Criterion", "DivergedError", "JacobianMethod", "LossWeighting", "Param", "get", "make_criterion", "names",
           "register", "suggest", "unregister"]

_FIRST = ["fixed", "uncertainty", "dwa", "jacobian"]  # the order `names()` lists them in
for _name in _FIRST + sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name not in _FIRST + ["base"]):
    importlib.import_module(f"{__name__}.{_name}")


def make_criterion(cfg, tasks, shared_params=None) -> Criterion:
    """The configured method for these tasks; every bad setting is one UserError line (`cfg.validate`, a
    TrainConfig's checks, first)."""
    cfg.validate([t.name for t in tasks])
    return get(cfg.method).from_config(cfg, tasks, shared_params)


def suggest(trial, method: str, task_names: list[str]) -> dict:
    """TrainConfig changes for `method` with its parameters drawn from their search space."""
    return get(method).suggest(trial, task_names)
