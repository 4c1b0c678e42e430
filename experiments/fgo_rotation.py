"""FGO regularisation study on the label-free rotation backbone (the default study before real ImageNet
weights could be had offline; fgo_regularization now starts from ImageNet): how much of the backbone to
fine-tune, dense capacity, BatchNorm strength and per-task loss weights, in one search. It stays as the
side-by-side reference: what a backbone that learnt only from these 840 train images gives.

The write-up's rounds: an ImageNet ResNet50 that knew nothing of FGO, fine-tuned end to end; more dense
capacity fixed underfitting, strong BatchNorm regularised the heads, and different settings won different
tasks. One objective per task (val acc, colours F1) on fgo_synth.

What is pretrained (the offline stand-in for ImageNet): a PRETRAIN stage learns rotation prediction on
the train images, reading no label and no val/test image (mtl/data/pretext.py; run `pretrain`, trained
once, reused by every trial, worker, resume and study with the same stage). Its frozen features know
little of the five tasks (a linear probe sits near the best constant), so each trial chooses how much of
the backbone to fine-tune (`freeze`: all, layer3 = layer4 trains, layer2 = layer3-4 train, none) and
its learning rate, beside a *shared* dense trunk (1-2 layers, so the per-task loss weights act on shared
parameters), head layers, BatchNorm momentum (log), dropout and per-task loss weights (log). A frozen
prefix is computed once per process and cached (keyed by the prefix). Each trial serves every task from
one epoch, the one with the best mean val score (best_epoch="mean"): a trial is one network, so the served
ensemble (SERVE_MAX_TRIALS = 2 trials, chosen on val) costs about two single models. Trials that completed
trials dominate by a margin on every task stop early (EARLY_STOP, set so that none would have joined the
front: `make audit-pruning`). Images are 40 px so that 40 trials take about 11 minutes on 2 CPU cores,
pretrain included.

    make tune STUDY=fgo_rotation [TRIALS=40 EPOCHS=10]
"""

from mtl.train.config import TrainConfig
from mtl.tune.early_stop import EarlyStop

MANIFEST = "data_manifests/fgo_synth.csv"
OBJECTIVES = ["gender", "region", "fighting_style", "alignment", "colors"]
COMPARE_WITH = "fgo_rounds"  # its hand-tuned rounds sit beside this study's models in the report and confirm
TRIALS = 40
EPOCHS = 8
SAMPLER = "tpe"
# label-free: rotation prediction on the train images (mtl/data/pretext.py); flips would blur 90 vs 270
PRETRAIN = TrainConfig(backbone="resnet18", image_size=40, batch_size=64, epochs=8, augment=False)
BASE = TrainConfig(backbone="resnet18", image_size=40, batch_size=32, freeze="all", augment=False,
                   lr_backbone=3e-4, lr_heads=1e-3, scheduler="cosine", patience=4, best_epoch="mean")
# stop a trial from epoch 3 only when 2 completed trials (same epochs and schedule) each lead it on every task
# by their whole val 95 % half-width (and 0.01). Chosen by replaying a full study's curves (completed trials
# and audit-pruning's re-runs): every rule with ci_margin 1.0 and min_epoch >= 3 lost no front member for any
# k in 1-3 and margin in 0-0.05; the earlier ci_margin 0.2 / min_epoch 2 lost 2 of them (README: Early stopping)
EARLY_STOP = EarlyStop(k=2, margin=0.01, ci_margin=1.0, min_epoch=3)
SERVE_MAX_TRIALS = 2  # @ensemble draws on at most 2 trials (2 networks), chosen on val; MAX_TRIALS=0 lifts it


def search_space(trial, base: TrainConfig, freeze_choices=("all", "layer3", "layer2", "none")) -> TrainConfig:
    freeze = trial.suggest_categorical("freeze", list(freeze_choices))
    # the backbone's learning rate only where some of it trains (TPE handles the conditional space)
    lr_backbone = base.lr_backbone if freeze == "all" else trial.suggest_float("lr_backbone", 1e-4, 3e-3, log=True)
    n_trunk = trial.suggest_int("trunk_layers", 1, 2)
    n_head = trial.suggest_int("head_layers", 0, 2)
    # head sizes are sampled only where a head layer uses them (TPE handles the conditional space)
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
