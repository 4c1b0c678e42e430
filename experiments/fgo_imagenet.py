"""FGO regularisation study on real ImageNet weights: for users with a network.

The same search as fgo_regularization (how much of the backbone to fine-tune and its learning rate,
dense trunk and heads, BatchNorm momentum, dropout, per-task loss weights), but the backbone starts from
torchvision's ImageNet resnet18 (`weights="DEFAULT"`, downloaded once into the torch hub cache,
about 45 MB) instead of the label-free rotation stage: what the FGO write-up did. Use this one when the
machine can reach download.pytorch.org (or the file was copied into the cache the error message names);
fgo_regularization is the offline demo. 64 px: ImageNet features want more pixels than the 40 px demo.

    make tune STUDY=fgo_imagenet
"""

from mtl.train.config import TrainConfig
from mtl.tune.early_stop import EarlyStop
from mtl.tune.studies import load_study

MANIFEST = "data_manifests/fgo_synth.csv"
OBJECTIVES = ["gender", "region", "fighting_style", "alignment", "colors"]
COMPARE_WITH = "fgo_rounds"  # rounds run on the offline stage: the report says how ImageNet features compare
TRIALS = 40
EPOCHS = 10
SAMPLER = "tpe"
BASE = TrainConfig(backbone="resnet18", weights="DEFAULT", image_size=64, batch_size=32, freeze="all",
                   augment=False, lr_backbone=1e-4, lr_heads=1e-3, scheduler="cosine", patience=4, best_epoch="mean")
EARLY_STOP = EarlyStop(k=2, margin=0.01, ci_margin=1.0, min_epoch=3)  # fgo_regularization's (not audited here)
SERVE_MAX_TRIALS = 2
# the same search as the offline demo (a variant: one definition, in fgo_regularization.py)
search_space = load_study("fgo_regularization").search_space
