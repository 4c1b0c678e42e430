"""FGO regularisation study: dense capacity vs BatchNorm strength vs per-task loss weights.

The write-up's rounds in one search: more dense capacity fixed underfitting, strong BatchNorm
regularised the heads, and different settings won different tasks. Tunes trunk/head dense-layer
counts and sizes, BatchNorm momentum (log scale), dropout and per-task loss weights (log scale) on
fgo_synth; one objective per task (val acc, colours F1). Defaults fit 10 minutes of 2 CPU cores.

    make tune STUDY=fgo_regularization [TRIALS=8 EPOCHS=12]
"""

from mtl.train import TrainConfig

MANIFEST = "data_manifests/fgo_synth.csv"
OBJECTIVES = ["gender", "region", "fighting_style", "alignment", "colors"]
TRIALS = 8
EPOCHS = 12
BASE = TrainConfig(backbone="resnet18", image_size=64, batch_size=32, lr_backbone=1e-3, lr_heads=1e-3,
                   scheduler="cosine", patience=5)


def search_space(trial, base: TrainConfig) -> TrainConfig:
    n_trunk = trial.suggest_int("trunk_layers", 0, 1)
    n_head = trial.suggest_int("head_layers", 0, 2)
    return base.replace(
        trunk_dims=[trial.suggest_categorical("trunk_size", [128, 256, 512])] * n_trunk,
        head_dims=[trial.suggest_categorical("head_size", [64, 128, 256])] * n_head,
        bn_momentum=trial.suggest_float("bn_momentum", 0.01, 0.5, log=True),
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
        loss_weights={t: trial.suggest_float(f"loss_weight.{t}", 0.3, 3.0, log=True) for t in OBJECTIVES},
    )
