"""UTK weighting study: which loss weighting copes with L1 age beside BCE gender and CE race.

Searches the strategy (fixed / uncertainty / dwa) with its parameters — fixed weights (log
scale), DWA temperature — on utk_synth; objectives: age MAE (minimise), gender acc, race acc.

    make tune STUDY=utk_weighting
"""

from mtl.train import TrainConfig

MANIFEST = "data_manifests/utk_synth.csv"
OBJECTIVES = ["age", "gender", "race"]
TRIALS = 6
EPOCHS = 8
BASE = TrainConfig(backbone="resnet18", image_size=48, batch_size=32, head_dims=[128], patience=4)


def search_space(trial, base: TrainConfig) -> TrainConfig:
    weighting = trial.suggest_categorical("weighting", ["fixed", "uncertainty", "dwa"])
    cfg = base.replace(weighting=weighting, regression_loss=trial.suggest_categorical("regression_loss", ["l1", "smooth_l1"]))
    if weighting == "fixed":
        cfg = cfg.replace(loss_weights={t: trial.suggest_float(f"loss_weight.{t}", 0.01, 3.0, log=True)
                                        for t in OBJECTIVES})
    elif weighting == "dwa":
        cfg = cfg.replace(weighting_args={"temperature": trial.suggest_float("dwa.temperature", 0.5, 5.0, log=True)})
    return cfg
