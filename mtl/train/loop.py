"""Training: train_one_epoch, evaluate and fit, with the per-task best states they keep.

The trainer knows nothing of Optuna or MLflow: `fit` takes an optional `on_epoch(epoch, metrics)`
callback (tracking, progress, early stopping) and returns the per-epoch history. The loop is handed
its criterion (the multi-task method, mtl/methods) and never names one.
"""

from __future__ import annotations

import contextlib
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mtl import methods
from mtl.data.batches import BatchAugment, TensorBatches
from mtl.data.dataset import MultiTaskDataset, cached_images
from mtl.data.manifest import Manifest
from mtl.errors import UserError
from mtl.model.hydranet import HydraNet, build_model, freeze_all_but
from mtl.model.losses import task_losses
from mtl.model.metrics import TaskMetrics
from mtl.model.prefix import FromPrefix, cached, freeze_backbone, prefix_features
from mtl.score import task_mean_score
from mtl.tasks import Task
from mtl.train.artifacts import write_val_outputs
from mtl.train.checkpoints import (
    canonical,
    load_backbone,
    restore,
    save_checkpoints,
)
from mtl.train.config import TrainConfig
from mtl.train.resume import progress_state, restore_progress


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but no CUDA device is available")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def check_config(cfg: TrainConfig, tasks: list[Task]) -> None:
    """Build what `fit` would build — backbone (and its weights), warm start, frozen stages — without
    training, so a bad backbone, `init` or `freeze` is one clear line before anything runs."""
    model = build_model(cfg, tasks)
    if cfg.init:
        load_backbone(model, cfg.init)
    freeze_backbone(model, cfg.freeze)
    methods.make_criterion(cfg, tasks, shared_params(model))


def shared_params(model: HydraNet) -> list:
    """The trainable parameters every head depends on (backbone and trunk)."""
    return [p for p in list(model.backbone.parameters()) + list(model.trunk.parameters()) if p.requires_grad]


def autocast(device: torch.device, enabled: bool):
    if device.type != "cuda" or not enabled:
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)


def to_device(batch, device):
    x, targets, masks = batch
    nb = device.type == "cuda"
    return (x.to(device, non_blocking=nb), {k: v.to(device, non_blocking=nb) for k, v in targets.items()},
            {k: v.to(device, non_blocking=nb) for k, v in masks.items()})


def batches(loader, device, augment=None):
    """The batch loop train and evaluation share: batches on the device, augmented when training."""
    for batch in loader:
        x, targets, masks = to_device(batch, device)
        yield (augment(x) if augment is not None else x), targets, masks


class LossMeter:
    """Per-task mean loss over labelled samples (NaN for a task without any)."""

    def __init__(self, names):
        self.sums = {k: 0.0 for k in names}
        self.counts = {k: 0 for k in names}

    def add(self, losses: dict, masks: dict) -> None:
        for k, v in losses.items():
            n = int(masks[k].sum())  # weight by labelled samples: the mean is per sample, not per batch
            self.sums[k] += float(v) * n
            self.counts[k] += n

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.counts[k] if self.counts[k] else math.nan for k in self.sums}


def train_one_epoch(net, criterion, optimizer, loader, device, cfg: TrainConfig, augment=None) -> dict:
    """One pass over the train split: features once per batch, then the criterion's backward (its
    method's), then the optimizer. Returns the mean unweighted loss per task (over labelled samples)."""
    net.train()
    meter = LossMeter(criterion.task_names)

    def heads(z):
        with autocast(device, cfg.amp):
            return net.heads_forward(z)
    for x, targets, masks in batches(loader, device, augment):
        with autocast(device, cfg.amp):
            features = net.features(x)
        optimizer.zero_grad(set_to_none=True)
        meter.add(criterion.backward(features, heads, targets, masks), masks)
        optimizer.step()
        if criterion.needs_losses_after_step:
            with torch.no_grad(), autocast(device, cfg.amp):
                criterion.after_step(criterion.losses(net(x), targets, masks))
    return meter.means()


@torch.no_grad()
def evaluate(net, loader, device, tasks: list[Task], cfg: TrainConfig, keep: dict | None = None) -> dict[str, float]:
    """Metrics ({'<task>/<metric>'}) and mean losses ({'<task>/loss'}) over a split. With `keep`, the
    per-sample outputs are stored in it (task -> CPU tensor, split order) for intervals and ensembles."""
    net.eval()
    metrics, meter = TaskMetrics(tasks), LossMeter([t.name for t in tasks])
    kept: dict[str, list] = {t.name: [] for t in tasks}
    for x, targets, masks in batches(loader, device):
        with autocast(device, cfg.amp):
            outputs = net(x)
        metrics.update(outputs, targets, masks)
        meter.add(task_losses(tasks, outputs, targets, masks, cfg.kind_options), masks)
        if keep is not None:
            for t in tasks:
                kept[t.name].append(outputs[t.name].detach().float().cpu())
    if keep is not None:
        keep.update({k: torch.cat(v) for k, v in kept.items()})
    out = metrics.compute()
    out.update({f"{k}/loss": v for k, v in meter.means().items()})
    return out


def make_loaders(cfg: TrainConfig, manifest: Manifest, model: HydraNet, device: torch.device):
    """(train batches, val batches, the module the loop calls, the batch augmentation or None).

    Splits come from the decode-once cache as in-memory batches; with a frozen prefix, augmentation off
    and `feature_cache`, the batches hold the prefix's outputs and the loop runs only what follows."""
    tv = {}
    for split in ("train", "val"):
        t, m = manifest.targets(split)
        tv[split] = ({k: torch.from_numpy(v) for k, v in t.items()}, {k: torch.from_numpy(v) for k, v in m.items()})
    augment = BatchAugment(cfg.seed) if cfg.augment else None
    if cfg.num_workers > 0:  # a set too large to hold: decode per sample in worker processes
        pin = device.type == "cuda"
        train_ds = MultiTaskDataset(manifest, "train", cfg.image_size, cache=False)
        train = DataLoader(train_ds, cfg.batch_size, shuffle=True, generator=torch.Generator().manual_seed(cfg.seed),
                           num_workers=cfg.num_workers, pin_memory=pin, drop_last=len(train_ds) > cfg.batch_size)
        val = DataLoader(MultiTaskDataset(manifest, "val", cfg.image_size, cache=False), max(cfg.batch_size, 64),
                         num_workers=cfg.num_workers, pin_memory=pin)
        return train, val, model, augment
    x = {split: cached_images(manifest.image_paths(split), cfg.image_size) for split in ("train", "val")}
    net = model
    if cached(cfg):
        x = {split: prefix_features(model, cfg.freeze, imgs, device,
                                    (hash(tuple(map(str, manifest.image_paths(split)))), cfg.image_size))
             for split, imgs in x.items()}
        net = FromPrefix(model, cfg.freeze)
    n = len(x["train"])  # BatchNorm needs batches > 1: drop a last batch of one
    train = TensorBatches(x["train"], *tv["train"], cfg.batch_size, shuffle=True, seed=cfg.seed,
                          drop_last=n > cfg.batch_size)
    val = TensorBatches(x["val"], *tv["val"], max(cfg.batch_size, 64))
    return train, val, net, augment


def make_optimizer(cfg: TrainConfig, model: HydraNet, criterion) -> torch.optim.Optimizer:
    trainable = lambda ps: [p for p in ps if p.requires_grad]  # noqa: E731
    groups = [{"params": trainable(model.backbone.parameters()), "lr": cfg.lr_backbone},
              {"params": trainable(list(model.trunk.parameters()) + list(model.heads.parameters())),
               "lr": cfg.lr_heads},
              {"params": trainable(criterion.parameters()), "lr": cfg.lr_heads, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=cfg.weight_decay)


@dataclass
class FitResult:
    history: list[dict]  # one dict per epoch: epoch, train/<task>/loss, val/<task>/<metric>, weight/<task>
    best: dict[str, dict]  # task -> {"epoch", "score"}
    checkpoint_dir: Path | None
    stopped_early: bool = False
    val_outputs: dict = field(default_factory=dict)  # task -> val outputs at that task's best epoch
    trainable_params: int = 0  # parameters the optimiser updated (the model's size as tuning sees it)


def fit(cfg: TrainConfig, manifest: Manifest, out_dir: Path | None = None, on_epoch=None,
        resume: dict | None = None, init: dict | None = None, finetune: str | None = None,
        only: list[str] | None = None, resumable: bool = False, half: bool = False) -> FitResult:
    """Train `cfg.epochs` epochs; keep the best state per task (by its primary val metric) and the last.

    `resume`: the last checkpoint of a resumable run (`train --from`): its model, method state, optimizer,
    schedule, epoch, RNG states and per-task bests are restored and training continues with the next epoch,
    as if it had never stopped. `init`: a checkpoint whose whole model (and method state) a new run starts
    from at epoch 1 with a fresh optimizer (`train --init`, a warm start); `cfg.init` only says where a fresh
    model's backbone starts. `finetune=TASK` trains that head only, the rest frozen; `only=[TASK]` builds and
    trains a model with just those heads (single-task baselines). `resumable`: the checkpoint directory is
    written after every epoch, its last epoch with everything `resume` needs. `half`: the checkpoints store
    the model's parameters in float16 (study trials: many runs, each kept for ranking and serving; training
    and its val outputs stay float32; not with `resumable`, whose continuation must be exact).
    """
    if half and resumable:
        raise ValueError("fit: half-precision checkpoints cannot be resumed exactly (half=True with resumable=True)")
    cfg = cfg.replace(init=canonical(cfg.init))
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model, tasks, criterion = setup(cfg, manifest, device, resume or init, finetune, only)
    optimizer = make_optimizer(cfg, model, criterion)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
                 if cfg.scheduler == "cosine" else None)
    train_loader, val_loader, net, augment = make_loaders(cfg, manifest, model, device)
    history, best, stopped = [], BestStates(tasks, cfg.patience, cfg.best_epoch == "per_task"), False
    generators = [g for g in (getattr(train_loader, "generator", None), getattr(augment, "generator", None)) if g]
    first = 1
    if resume:
        history = restore_progress(resume, optimizer, scheduler, best, generators)
        first = history[-1]["epoch"] + 1 if history else 1

    def save(last_epoch: int, progress: bool) -> Path:
        state = _cpu_state(model, criterion)
        if progress:
            state["progress"] = progress_state(optimizer, scheduler, best, generators, history)
        return save_checkpoints(Path(out_dir), cfg, tasks, best.states, best.best, state, last_epoch,
                                half=frozenset(n for n, _ in model.named_parameters()) if half else frozenset())
    for epoch in range(first, cfg.epochs + 1):
        train_losses = train_one_epoch(net, criterion, optimizer, train_loader, device, cfg, augment)
        criterion.end_epoch(train_losses)
        if scheduler:
            scheduler.step()
        val_outputs: dict = {}
        val = evaluate(net, val_loader, device, tasks, cfg, keep=val_outputs)
        row = {"epoch": epoch, **{f"train/{k}/loss": v for k, v in train_losses.items()},
               **{f"val/{k}": v for k, v in val.items()}, **criterion.epoch_stats()}
        out_of_patience = best.update(epoch, val, val_outputs, lambda: _cpu_state(model, criterion))
        history.append(row)
        if resumable and out_dir is not None:
            save(epoch, progress=True)
        if on_epoch:
            on_epoch(epoch, row)
        if out_of_patience and epoch < cfg.epochs:
            stopped = True
            break
    ckpt_dir = None
    if out_dir is not None:
        ckpt_dir = save(history[-1]["epoch"], progress=resumable)
        write_val_outputs(ckpt_dir, [str(p) for p in manifest.rows("val")["image"]], best.outputs)
    return FitResult(history, best.best, ckpt_dir, stopped, best.outputs,
                     sum(p.numel() for p in model.parameters() if p.requires_grad))


def setup(cfg: TrainConfig, manifest: Manifest, device, start: dict | None, finetune: str | None,
          only: list[str] | None) -> tuple[HydraNet, list[Task], methods.Criterion]:
    """The model (restored from `start`, a checkpoint to resume or warm-start from, else its backbone
    warm-started from `cfg.init`; frozen as
    configured; on the device), its tasks and the criterion (with the learned state `start` holds,
    when the method is the same)."""
    tasks = [Task.from_dict(t) for t in start["tasks"]] if start else manifest.tasks
    if only:
        tasks = [t for t in tasks if t.name in only]
    train_tasks = [t for t in tasks if finetune is None or t.name == finetune]
    model = build_model(cfg, tasks)
    if start:
        restore(model, start, TrainConfig.from_dict(start["config"]).init)
    elif cfg.init:
        load_backbone(model, cfg.init)
    freeze_backbone(model, cfg.freeze)
    if finetune:
        freeze_all_but(model, finetune)
    model.to(device)
    criterion = methods.make_criterion(cfg.replace(loss_weights={}) if finetune else cfg, train_tasks,
                                       shared_params(model)).to(device)
    if start and start.get("criterion") and TrainConfig.from_dict(start["config"]).method == cfg.method and not finetune:
        try:  # learned log-variances, DWA's loss history
            criterion.load_state_dict(start["criterion"])
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0][:200]
            raise UserError(f"{start.get('source', 'checkpoint')}: its {cfg.method} state does not fit "
                            f"these tasks ({first})") from None
    return model, tasks, criterion


class BestStates:
    """Per task, its best epoch so far (by its primary val metric) and that epoch's val outputs; the
    model states those epochs need (tasks that peak together share one); and patience on the mean score."""

    def __init__(self, tasks: list[Task], patience: int, per_task: bool = True):
        self.tasks, self.patience, self.per_task = tasks, patience, per_task
        self.best: dict[str, dict] = {}
        self.states: dict[int, dict] = {}
        self.outputs: dict = {}
        self.best_mean, self.since_best = -math.inf, 0

    def update(self, epoch: int, val: dict, val_outputs: dict, state) -> bool:
        """Record an epoch (`state()` copies the model's state, called only if some task improved); with
        `per_task=False` (best_epoch="mean") every task takes the epoch with the best mean score, so a run
        keeps one model. True when patience has run out."""
        ms = task_mean_score(self.tasks, val)
        improved_mean = ms > self.best_mean or (not self.best and not self.per_task)
        for t in self.tasks:
            score = val.get(t.metric_key, math.nan)
            if (improved_mean if not self.per_task else
                    t.name not in self.best or t.better(score, self.best[t.name]["score"])):
                self.best[t.name] = {"epoch": epoch, "score": score}
                self.outputs[t.name] = val_outputs[t.name]
                self.states[epoch] = self.states.get(epoch) or state()
        needed = {b["epoch"] for b in self.best.values()}
        self.states = {e: s for e, s in self.states.items() if e in needed}
        if ms > self.best_mean:
            self.best_mean, self.since_best = ms, 0
        else:
            self.since_best += 1
        return bool(self.patience) and self.since_best >= self.patience


def _cpu_state(model, criterion) -> dict:
    """The model's weights and the criterion's state (learned log-variances, DWA's loss history)."""
    cpu = lambda sd: {k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v for k, v in sd.items()}  # noqa: E731
    return {"model": cpu(model.state_dict()), "criterion": cpu(criterion.state_dict())}
