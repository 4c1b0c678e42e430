"""The equal-budget reference of multimnist_methods: the plain weighted sum (`fixed`) with its two loss
weights tuned by TPE, given as many trainings as each method gets there (its _REPEATS). The first trial
is the plain sum (weights 1, 1); the others are drawn from log-uniform [0.03, 3] per task. Same
network, data, epochs and optimiser as multimnist_methods (its BASE, imported).

Xin et al. 2022 ("Do Current Multi-Task Optimization Methods in Deep Learning Even Help?", NeurIPS)
found that specialised optimisers rarely beat a well-tuned weighted sum at the same compute; `make
ensemble STUDY=multimnist_methods` answers that here, on test, with intervals.

    make tune STUDY=multimnist_fixed_tuned
"""

from mtl import methods
from mtl.tune.studies import load_study

_methods = load_study("multimnist_methods")
MANIFEST = _methods.manifest
OBJECTIVES = _methods.objectives
BASE = _methods.base
EPOCHS = _methods.epochs
_REPEATS = 3
TRIALS = _REPEATS  # the budget of one method in multimnist_methods
ENQUEUE = [{f"loss_weight.{t}": 1.0 for t in OBJECTIVES}]


def search_space(trial, base):
    return base.replace(**methods.suggest(trial, "fixed", OBJECTIVES))
