"""MultiMNIST method study: every multi-task method the project offers, at its paper's default settings,
on real MNIST digits (`make data-multimnist`), with the benchmark's two tasks (left and right digit;
Sener & Koltun 2018, ParetoMTL, Pareto HyperNetworks, COSMOS).

Every method gets the same budget: _REPEATS trainings (queued first, in ENQUEUE; `repeat` tells them
apart, each trial has its own seed), none of its parameters searched, so the per-method table of
`make pareto` (means over repeats, Holm-corrected paired differences against the plain sum `fixed`)
compares methods, not tuning luck. The equal-budget verdict is in `make ensemble`'s report: each
method's val-best of its _REPEATS trainings against the fixed weights tuned with the same number of
trainings (TUNED_FIXED, the study multimnist_fixed_tuned), on test, Holm over every method and task.

The network is ParetoMTL's (Lin et al. 2019, multiMNIST/model_lenet.py): the shared MultiLeNet
(mtl/model/hydranet.py) and one linear head 50 -> 10 per task, trained from scratch. Protocol differences from the papers are in the
README's "Real benchmark" section: 6,000 train composites and 6 epochs instead of about 120,000 and 100,
so that 75 trials and the two single-task baselines fit 10 minutes on 2 CPU cores.

    make data-multimnist && make tune STUDY=multimnist_fixed_tuned && make tune STUDY=multimnist_methods
    make pareto STUDY=multimnist_methods && make ensemble STUDY=multimnist_methods
"""

from mtl import methods
from mtl.train.config import TrainConfig

MANIFEST = "data/multimnist/multimnist_lr.csv"
OBJECTIVES = ["left", "right"]
_METHODS = methods.names()  # every registered method
_REPEATS = 3
TRIALS = len(_METHODS) * _REPEATS
EPOCHS = 6
SINGLE_TASK_BASELINES = True
TUNED_FIXED = "multimnist_fixed_tuned"  # the fixed weights tuned with _REPEATS trainings: the equal-budget reference
ENQUEUE = [{"method": m, "repeat": r} for r in range(_REPEATS) for m in _METHODS]
BASE = TrainConfig(backbone="multi_lenet", image_size=36, batch_size=64, augment=False,
                   lr_backbone=2e-3, lr_heads=2e-3, scheduler="cosine")


def search_space(trial, base: TrainConfig) -> TrainConfig:
    method = trial.suggest_categorical("method", _METHODS)
    trial.suggest_int("repeat", 0, _REPEATS - 1)
    return base.replace(method=method, method_args={}, loss_weights={})  # the method's defaults
