"""The FGO notebook's three hand-tuned rounds as fixed configs, logged like tuned trials.

round1: plain sum of losses over plain linear heads; round2: + two dense layers of 256 (the
notebook's x1, x2) against underfitting; round3: + strong BatchNorm (momentum 0.2) on them. Same
pretrained backbone (the PRETRAIN stage of fgo_regularization, shared when it exists), kept
frozen, data, epochs and learning rates as fgo_regularization, so the MLflow UI, `make ensemble`
and the report compare them fairly with the tuned trials.

    make tune STUDY=fgo_rounds
"""

from mtl.config import TrainConfig

MANIFEST = "data_manifests/fgo_synth.csv"
OBJECTIVES = ["gender", "region", "fighting_style", "alignment", "colors"]
EPOCHS = 15
PRETRAIN = TrainConfig(backbone="resnet18", image_size=64, batch_size=32, epochs=30, augment=True)
BASE = TrainConfig(backbone="resnet18", image_size=64, batch_size=32, freeze="all", augment=False,
                   lr_backbone=5e-4, lr_heads=1e-3, scheduler="cosine", patience=4)
CONFIGS = {
    "round1-plain-sum": BASE,
    "round2-dense-256x2": BASE.replace(trunk_dims=[256, 256], bn_momentum=0.01),
    "round3-strong-bn": BASE.replace(trunk_dims=[256, 256], bn_momentum=0.2),
}
