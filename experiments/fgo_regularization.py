"""FGO regularisation study: dense capacity vs BatchNorm strength vs per-task loss weights.

The write-up's rounds in one search: more dense capacity fixed underfitting, strong BatchNorm
regularised the heads, and different settings won different tasks. One objective per task (val acc,
colours F1) on fgo_synth.

What is pretrained and what is frozen (the offline stand-in for the seeds' ImageNet ResNet50
fine-tuned with new heads): a PRETRAIN stage trains the multi-task resnet18 once on the train split
(logged as run `pretrain`, reused by every trial, worker and resume). Each trial starts its backbone
from it, keeps the whole backbone frozen (its features are computed once per process and cached), and
trains a *shared* dense trunk (1-2 layers, always present, so the per-task loss weights act on shared
parameters) plus the heads. Searched: trunk/head dense-layer counts and sizes, BatchNorm momentum (log),
dropout, per-task loss weights (log). Trials that completed trials dominate by a margin on every task
are stopped early (EARLY_STOP, set so that none would have joined the front: `make audit-pruning`). Defaults take about 5 minutes on 2 CPU cores (the budget is 10).

    make tune STUDY=fgo_regularization [TRIALS=120 EPOCHS=15]
"""

from mtl.config import TrainConfig
from mtl.early_stop import EarlyStop

MANIFEST = "data_manifests/fgo_synth.csv"
OBJECTIVES = ["gender", "region", "fighting_style", "alignment", "colors"]
COMPARE_WITH = "fgo_rounds"  # its hand-tuned rounds sit beside this study's models in the report and confirm
TRIALS = 120
EPOCHS = 15
SAMPLER = "tpe"
PRETRAIN = TrainConfig(backbone="resnet18", image_size=64, batch_size=32, epochs=30, augment=True)
BASE = TrainConfig(backbone="resnet18", image_size=64, batch_size=32, freeze="all", augment=False,
                   lr_backbone=5e-4, lr_heads=1e-3, scheduler="cosine", patience=4)
# stop a trial only when 2 completed trials (same epochs and schedule) each lead it on every task by 0.01 and
# by 0.2 of their val half-width: `make audit-pruning` found no stopped trial that would have joined the front
EARLY_STOP = EarlyStop(k=2, margin=0.01, ci_margin=0.2, min_epoch=2)


def search_space(trial, base: TrainConfig) -> TrainConfig:
    n_trunk = trial.suggest_int("trunk_layers", 1, 2)
    n_head = trial.suggest_int("head_layers", 0, 2)
    # head sizes are sampled only where a head layer uses them (TPE handles the conditional space)
    trunk = [trial.suggest_categorical("trunk_size", [128, 256, 512])] * n_trunk
    head = [trial.suggest_categorical("head_size", [64, 128, 256])] * n_head if n_head else []
    return base.replace(
        trunk_dims=trunk,
        head_dims=head,
        bn_momentum=trial.suggest_float("bn_momentum", 0.01, 0.5, log=True),
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
        loss_weights={t: trial.suggest_float(f"loss_weight.{t}", 0.3, 3.0, log=True) for t in OBJECTIVES},
    )
