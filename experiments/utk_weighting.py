"""UTK weighting study: which method copes with L1 age (years) beside BCE gender and CE race.

Loss scales differ by task kind, so a fixed sum is fragile: the study compares the loss weightings
(fixed weights on a log scale, uncertainty, DWA with its temperature) with torchjd's gradient methods,
which look at the task gradients instead of the losses (MGDA and IMTL-G are scale-invariant by
design). Each method runs once first (ENQUEUE), then the sampler explores; objectives: age MAE
(minimise), gender acc, race acc on utk_synth. Single-task baselines give Δm %.

    make tune STUDY=utk_weighting
"""

from mtl import methods
from mtl.train.config import TrainConfig

MANIFEST = "data_manifests/utk_synth.csv"
OBJECTIVES = ["age", "gender", "race"]
_METHODS = ["fixed", "uncertainty", "dwa", "upgrad", "mgda", "pcgrad", "cagrad", "imtl_g", "aligned_mtl"]
TRIALS = len(_METHODS)
EPOCHS = 8
SINGLE_TASK_BASELINES = True
ENQUEUE = [{"method": m} for m in _METHODS]
BASE = TrainConfig(backbone="resnet18", image_size=48, batch_size=32, head_dims=[128], patience=4)


def search_space(trial, base: TrainConfig) -> TrainConfig:
    method = trial.suggest_categorical("method", _METHODS)
    loss = trial.suggest_categorical("regression.loss", ["l1", "smooth_l1"])
    cfg = base.replace(kind_options={"regression": {"loss": loss}})
    return cfg.replace(**methods.suggest(trial, method, OBJECTIVES))
