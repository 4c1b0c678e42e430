"""FGO regularisation study on real ImageNet weights: for users with a network.

The same search as fgo_regularization (how much of the backbone to fine-tune and its learning rate,
dense trunk and heads, BatchNorm momentum, dropout, per-task loss weights), but the backbone starts from
torchvision's ImageNet resnet18 (`weights="DEFAULT"`, downloaded once into the torch hub cache,
about 45 MB) instead of the label-free rotation stage: what the FGO write-up did. Use this one when the
machine can reach download.pytorch.org (or the file was copied into the cache the error message names);
fgo_regularization is the offline demo. 64 px: ImageNet features want more pixels than the 48 px demo.

    make tune STUDY=fgo_imagenet
"""

from mtl.config import TrainConfig
from mtl.early_stop import EarlyStop

MANIFEST = "data_manifests/fgo_synth.csv"
OBJECTIVES = ["gender", "region", "fighting_style", "alignment", "colors"]
COMPARE_WITH = "fgo_rounds"  # rounds run on the offline stage: the report says how ImageNet features compare
TRIALS = 40
EPOCHS = 10
SAMPLER = "tpe"
BASE = TrainConfig(backbone="resnet18", weights="DEFAULT", image_size=64, batch_size=32, freeze="all",
                   augment=False, lr_backbone=1e-4, lr_heads=1e-3, scheduler="cosine", patience=4)
EARLY_STOP = EarlyStop(k=2, margin=0.01, ci_margin=0.2, min_epoch=2)


def search_space(trial, base: TrainConfig) -> TrainConfig:
    freeze = trial.suggest_categorical("freeze", ["all", "layer3", "layer2", "none"])
    lr_backbone = base.lr_backbone if freeze == "all" else trial.suggest_float("lr_backbone", 3e-5, 1e-3, log=True)
    n_trunk = trial.suggest_int("trunk_layers", 1, 2)
    n_head = trial.suggest_int("head_layers", 0, 2)
    trunk = [trial.suggest_categorical("trunk_size", [128, 256, 512])] * n_trunk
    head = [trial.suggest_categorical("head_size", [64, 128, 256])] * n_head if n_head else []
    return base.replace(
        freeze=freeze,
        lr_backbone=lr_backbone,
        trunk_dims=trunk,
        head_dims=head,
        bn_momentum=trial.suggest_float("bn_momentum", 0.01, 0.5, log=True),
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
        loss_weights={t: trial.suggest_float(f"loss_weight.{t}", 0.3, 3.0, log=True) for t in OBJECTIVES},
    )
