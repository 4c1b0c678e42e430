"""The FGO notebook's three hand-tuned rounds as fixed configs, logged like tuned trials.

round1: plain sum of losses over plain linear heads; round2: + two dense layers of 256 (the
notebook's x1, x2) against underfitting; round3: + strong BatchNorm (momentum 0.2) on them. Same
backbone, data, epochs and learning rates as fgo_regularization, so the MLflow UI and `make
ensemble` compare them fairly with the tuned trials.

    make tune STUDY=fgo_rounds
"""

from mtl.train import TrainConfig

MANIFEST = "data_manifests/fgo_synth.csv"
OBJECTIVES = ["gender", "region", "fighting_style", "alignment", "colors"]
EPOCHS = 12
BASE = TrainConfig(backbone="resnet18", image_size=64, batch_size=32, lr_backbone=1e-3, lr_heads=1e-3,
                   scheduler="cosine", patience=5)
CONFIGS = {
    "round1-plain-sum": BASE,
    "round2-dense-256x2": BASE.replace(trunk_dims=[256, 256], bn_momentum=0.01),
    "round3-strong-bn": BASE.replace(trunk_dims=[256, 256], bn_momentum=0.2),
}
