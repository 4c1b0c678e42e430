"""FGO method study: which way of combining the five tasks' losses trains the shared layers best.

Loss weightings (fixed sum, uncertainty, DWA) beside torchjd's gradient methods (UPGrad, MGDA, PCGrad,
CAGrad, Nash-MTL, IMTL-G, Aligned-MTL, DualProj, GradDrop, ConFIG, RLW), one objective per task on
fgo_synth. Every method gets the same budget: _REPEATS trials each (queued first, in ENQUEUE; the
method's parameters, e.g. CAGrad's c, drawn by the sampler; `repeat` only tells repeats apart, and each
trial has its own seed). The first `fixed` trial is the write-ups' plain sum. Architecture and learning
rates are fixed so the method is the only difference; single-task baselines (one head alone, same
epochs and warm start) give each trial's Δm % (Maninis et al. 2019).

What is shared: the PRETRAIN backbone of fgo_rotation is loaded, its stages up to layer3 are frozen
(their outputs cached once per process), and layer4 plus a 256-wide trunk are trained by every method —
the parameters where task gradients can conflict. With _REPEATS=3 the defaults took 10.4 minutes on 2
CPU cores (the five baselines and 42 trials of about 13 s at 40 px; the pretrain stage reused from
fgo_rotation); a trained layer4 makes each trial's checkpoints about 34 MB a file.

    make tune STUDY=fgo_weighting && make pareto STUDY=fgo_weighting
"""

from mtl import methods
from mtl.train.config import TrainConfig

MANIFEST = "data_manifests/fgo_synth.csv"
OBJECTIVES = ["gender", "region", "fighting_style", "alignment", "colors"]
COMPARE_WITH = "fgo_rounds"  # its hand-tuned rounds sit beside this study's models in the report and confirm
_METHODS = ["fixed", "uncertainty", "dwa", "upgrad", "mgda", "pcgrad", "cagrad", "nash_mtl", "imtl_g",
           "aligned_mtl", "dualproj", "graddrop", "config", "random"]
_REPEATS = 3  # the per-method table reports means over repeats (mtl/reports.methods_table)
TRIALS = len(_METHODS) * _REPEATS
EPOCHS = 10
SINGLE_TASK_BASELINES = True
_PLAIN_SUM = {f"loss_weight.{t}": 1.0 for t in OBJECTIVES}
ENQUEUE = [{"method": m, "repeat": r, **(_PLAIN_SUM if m == "fixed" and r == 0 else {})}
           for r in range(_REPEATS) for m in _METHODS]
PRETRAIN = TrainConfig(backbone="resnet18", image_size=40, batch_size=64, epochs=8, augment=False)
BASE = TrainConfig(backbone="resnet18", image_size=40, batch_size=32, freeze="layer3", augment=False,
                   trunk_dims=[256], lr_backbone=5e-4, lr_heads=1e-3, scheduler="cosine")


def search_space(trial, base: TrainConfig) -> TrainConfig:
    method = trial.suggest_categorical("method", _METHODS)
    trial.suggest_int("repeat", 0, _REPEATS - 1)
    return base.replace(**methods.suggest(trial, method, OBJECTIVES))
