"""The FGO write-up's three hand-tuned rounds as the seed ran them, on fgo_regularization's backbone,
logged like tuned trials.

The seed fine-tuned an ImageNet ResNet50 end to end (Adam, lr 1e-4 decayed over time, 50 epochs, the best
val checkpoint). Here: torchvision's ImageNet MobileNetV2 (fgo_regularization's backbone and weights),
fine-tuned end to end (freeze="none"), the backbone at the seed's 1e-4 with AdamW and a cosine decay; the
new dense layers and heads at 1e-3 (scaled: 8 epochs here instead of 50, so layers that start from
nothing get 10x). Same data, image size, epochs, patience and one epoch for all tasks (best_epoch="mean")
as fgo_regularization's BASE.
round1: plain sum of losses over plain linear heads; round2: + two plain dense layers of 256 (the
notebook's x1, x2, no BatchNorm) against underfitting; round3: + strong BatchNorm (momentum 0.2) on them.
Fixed before the study's results were looked at; the MLflow UI, `make ensemble` and the report compare
them with the tuned trials.

    make tune STUDY=fgo_rounds
"""

from mtl.train.config import TrainConfig

MANIFEST = "data_manifests/fgo_synth.csv"
OBJECTIVES = ["gender", "region", "fighting_style", "alignment", "colors"]
EPOCHS = 8
BASE = TrainConfig(backbone="mobilenet_v2", weights="IMAGENET1K_V1", image_size=64, batch_size=32, freeze="none",
                   augment=False, lr_backbone=1e-4, lr_heads=1e-3, scheduler="cosine", patience=4,
                   best_epoch="mean")
CONFIGS = {
    "round1-plain-sum": BASE,
    "round2-dense-256x2": BASE.replace(trunk_dims=[256, 256], batchnorm=False),
    "round3-strong-bn": BASE.replace(trunk_dims=[256, 256], batchnorm=True, bn_momentum=0.2),
}
