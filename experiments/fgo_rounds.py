"""The FGO notebook's three hand-tuned rounds as the seed ran them, logged like tuned trials.

The seed fine-tuned an ImageNet ResNet50 end to end (Adam, lr 1e-4, 50 epochs). Here: the same
label-free PRETRAIN backbone as fgo_regularization (rotation prediction on the train images), fine-tuned
end to end (freeze="none"), AdamW with the backbone at 3e-4 (the seed's 1e-4 scaled by 3: 8 epochs
instead of 50, on a backbone that knows less than ImageNet's) and the new dense layers and heads at 1e-3;
same data, image size, epochs, cosine schedule, patience and one epoch for all tasks (best_epoch="mean") as
fgo_regularization's BASE.
round1: plain sum of losses over plain linear heads; round2: + two dense layers of 256 (the notebook's
x1, x2) against underfitting; round3: + strong BatchNorm (momentum 0.2) on them. Fixed before the
study's results were looked at; the MLflow UI, `make ensemble` and the report compare them with the
tuned trials.

    make tune STUDY=fgo_rounds
"""

from mtl.train.config import TrainConfig

MANIFEST = "data_manifests/fgo_synth.csv"
OBJECTIVES = ["gender", "region", "fighting_style", "alignment", "colors"]
EPOCHS = 8
PRETRAIN = TrainConfig(backbone="resnet18", image_size=40, batch_size=64, epochs=8, augment=False)
BASE = TrainConfig(backbone="resnet18", image_size=40, batch_size=32, freeze="none", augment=False,
                   lr_backbone=3e-4, lr_heads=1e-3, scheduler="cosine", patience=4, best_epoch="mean")
CONFIGS = {
    "round1-plain-sum": BASE,
    "round2-dense-256x2": BASE.replace(trunk_dims=[256, 256], bn_momentum=0.01),
    "round3-strong-bn": BASE.replace(trunk_dims=[256, 256], bn_momentum=0.2),
}
