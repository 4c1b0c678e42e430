"""FGO heads-only study: fgo_rotation's search with the label-free backbone frozen for every trial.

The serving-cost reference. Every trial shares the same frozen backbone weights, so a served model
with several members (`@best`, every task's best; `@ensemble`) runs that backbone once per batch and
adds only each member's trunk and heads (mtl/serve/pyfunc.py: shared stages by weight digest). On
fgo_rotation, which also decides how much of the backbone to fine-tune, each tuned trial is its
own network and `@best` costs about one network per task. The frozen features know little of the
tasks (issue 18's linear probe), so these models score below fgo_rotation's: this study shows
what serving at single-model cost looks like, not the best models. Same pretrain stage (trained once,
shared with fgo_rotation), epochs, early stopping and one epoch per trial for every task.

    make tune STUDY=fgo_frozen && make pareto STUDY=fgo_frozen && make ensemble STUDY=fgo_frozen
    make bench STUDY=fgo_frozen        # ensemble_vs_single and composite_vs_single on these models
"""

from mtl.tune.studies import load_study

_REG = load_study("fgo_rotation")
MANIFEST = "data_manifests/fgo_synth.csv"
OBJECTIVES = ["gender", "region", "fighting_style", "alignment", "colors"]
COMPARE_WITH = "fgo_rounds"
TRIALS = 20
EPOCHS = _REG.epochs
SAMPLER = "tpe"
PRETRAIN = _REG.pretrain
BASE = _REG.base.replace(freeze="all")
EARLY_STOP = _REG.early_stop


def search_space(trial, base):
    return _REG.search_space(trial, base, freeze_choices=("all",))  # dense trunk, heads, BN, dropout, weights
