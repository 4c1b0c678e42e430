"""Training: TrainConfig, train_one_epoch, evaluate, fit, and per-task best checkpoints.

The trainer knows nothing of Optuna or MLflow: `fit` takes an optional `on_epoch(epoch, metrics)`
callback (tracking, progress) and returns the per-epoch history.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import random
import typing
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from mtl import methods
from mtl.data.batches import BatchAugment, TensorBatches, normalize
from mtl.data.dataset import MultiTaskDataset, cached_images
from mtl.data.manifest import Manifest
from mtl.errors import UserError
from mtl.losses import task_losses
from mtl.metrics import TaskMetrics
from mtl.model import FromPrefix, HydraNet, freeze_all_but, freeze_backbone
from mtl.tasks import Task
from mtl.warmstart import backbone_state, canonical, immutable, load_backbone

CHECKPOINT_KEYS = ("model", "config", "tasks")
VAL_OUTPUTS = "val_outputs.pt"  # beside the checkpoints: each task's val outputs at its best epoch


@dataclass
class TrainConfig:
    backbone: str = "resnet18"
    weights: str | None = None  # torchvision weights name ("DEFAULT"); None: nothing is downloaded here
    image_size: int = 64
    trunk_dims: list[int] = field(default_factory=list)  # shared dense layers after the backbone
    head_dims: list[int] = field(default_factory=list)  # per-task dense layers ([] = plain linear head)
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    dropout: float = 0.0
    weighting: str = "fixed"  # a method of mtl/methods: fixed, uncertainty, dwa, upgrad, mgda, pcgrad, cagrad, ...
    weighting_args: dict = field(default_factory=dict)  # the method's parameters (`--set weighting_args.c=0.4`)
    loss_weights: dict[str, float] = field(default_factory=dict)  # weighting=fixed only; missing task = 1
    jacobian_on: str = "features"  # gradient methods (not the loss weightings): Jacobian w.r.t. the shared features or params
    regression_loss: str = "l1"  # l1 | mse | smooth_l1
    lr_backbone: float = 1e-3  # the FGO notebook fine-tuned pretrained weights at 1e-4; from scratch needs more
    lr_heads: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # cosine | none
    epochs: int = 15
    batch_size: int = 32
    augment: bool = True  # batched on the device: flips, resized crops, small rotations, erasing
    init: str | None = None  # backbone warm start: a file, checkpoint dir, models:/ or runs:/ URI (mtl/warmstart.py)
    freeze: str = "none"  # none | all | a backbone stage (resnet: layer1..layer4): it and all before it frozen
    feature_cache: bool = True  # with freeze and augment=False: compute the frozen prefix once per process
    patience: int = 0  # stop after this many epochs without a better mean per-task val score (0 = off)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # CUDA only: bf16/fp16 autocast
    num_workers: int = 0  # > 0: decode images per sample in DataLoader workers instead of the in-memory cache

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        d = dict(d)
        if "dwa_temperature" in d:  # configs written before methods took their parameters in weighting_args
            t = d.pop("dwa_temperature")
            if d.get("weighting") == "dwa":
                d["weighting_args"] = {"temperature": t, **d.get("weighting_args", {})}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UserError(f"unknown config key(s): {', '.join(sorted(unknown))} (known: {', '.join(sorted(names))})")
        return cls(**d)

    def with_overrides(self, items: list[str]) -> TrainConfig:
        """Apply `key=value` strings (`head_dims=256,256`, `loss_weights.age=0.1`); unknown keys fail loudly."""
        hints = typing.get_type_hints(TrainConfig)
        cfg = copy.deepcopy(self)
        for item in items:
            key, sep, value = item.partition("=")
            if not sep:
                raise UserError(f"--set {item!r}: expected key=value")
            if key.startswith("loss_weights."):
                cfg.loss_weights[key.split(".", 1)[1]] = _parse(item, value, float)
                continue
            if key.startswith("weighting_args."):
                cfg.weighting_args[key.split(".", 1)[1]] = value  # typed by the method, below
                continue
            if key not in hints:
                raise UserError(f"--set {item!r}: unknown config key '{key}' (known: {', '.join(sorted(hints))})")
            setattr(cfg, key, _parse(item, value, hints[key]))
        if cfg.weighting != self.weighting:  # another method (e.g. over a --from checkpoint's config): the old
            # method's parameters and fixed weights do not carry over; those set in this command do
            cfg.weighting_args = {k: v for k, v in cfg.weighting_args.items() if k not in self.weighting_args
                                  or any(i.startswith(f"weighting_args.{k}=") for i in items)}
            if cfg.weighting != "fixed" and not any(i.startswith("loss_weights.") for i in items):
                cfg.loss_weights = {}
        if cfg.weighting_args:
            cfg.weighting_args = methods.get(cfg.weighting).coerce_args(cfg.weighting_args)
        return cfg


def _parse(item: str, value: str, typ):
    origin = typing.get_origin(typ)
    try:
        if origin is list:
            return [int(v) for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):  # str | None
            return None if value.lower() in ("", "none", "null") else value
        if typ is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        if origin is dict:
            raise ValueError
        return typ(value)
    except ValueError:
        raise UserError(f"--set {item!r}: cannot read '{value}' as {getattr(typ, '__name__', typ)}") from None


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


def build_model(cfg: TrainConfig, tasks: list[Task]) -> HydraNet:
    return HydraNet(tasks, cfg.backbone, cfg.trunk_dims, cfg.head_dims, cfg.bn_momentum, cfg.bn_eps,
                    cfg.dropout, cfg.weights)


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
        meter.add(task_losses(tasks, outputs, targets, masks, cfg.regression_loss), masks)
        if keep is not None:
            for t in tasks:
                kept[t.name].append(outputs[t.name].detach().float().cpu())
    if keep is not None:
        keep.update({k: torch.cat(v) for k, v in kept.items()})
    out = metrics.compute()
    out.update({f"{k}/loss": v for k, v in meter.means().items()})
    return out


def mean_score(tasks: list[Task], metrics: dict[str, float]) -> float:
    """One higher-is-better number for patience: mean of primary scores, lower-is-better ones as -score/unit."""
    vals = []
    for t in tasks:
        v = metrics.get(t.metric_key, math.nan)
        vals.append(-v / t.score_scale if t.direction == "minimize" else v)
    vals = [v for v in vals if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


_FEATURES: dict[tuple, torch.Tensor] = {}  # (prefix state digest, stage, manifest, split, size) -> outputs


@torch.no_grad()
def prefix_features(model: HydraNet, stage: str, images: torch.Tensor, device, key: tuple, batch: int = 256):
    """The frozen prefix's outputs on un-augmented images, computed once per process for a given prefix
    state (its weights' digest is in the key, so another warm start or stage never reuses them)."""
    digest = hashlib.sha1()
    for k, v in sorted(model.backbone.state_dict().items()):
        if stage == "all" or k.split(".")[0] in model.stage_names()[:model.stage_names().index(stage) + 1]:
            digest.update(k.encode())
            digest.update(v.detach().cpu().contiguous().numpy().tobytes())
    key = (digest.hexdigest(), stage, *key)
    if key not in _FEATURES:
        was = model.training
        model.eval()
        out = [model.prefix(normalize(images[i:i + batch].to(device)), stage).cpu() for i in range(0, len(images), batch)]
        model.train(was)
        _FEATURES[key] = torch.cat(out)
    return _FEATURES[key]


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
    if cfg.freeze != "none" and cfg.feature_cache and not cfg.augment:
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


def fit(cfg: TrainConfig, manifest: Manifest, out_dir: Path | None = None, on_epoch=None,
        init: dict | None = None, finetune: str | None = None, only: list[str] | None = None) -> FitResult:
    """Train `cfg.epochs` epochs; keep the best state per task (by its primary val metric) and the last.

    `init` is a checkpoint dict to start from; `finetune=TASK` trains that head only, the rest frozen;
    `only=[TASK]` builds and trains a model with just those heads (single-task baselines).
    """
    cfg = cfg.replace(init=canonical(cfg.init))
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    model, tasks, criterion = setup(cfg, manifest, device, init, finetune, only)
    optimizer = make_optimizer(cfg, model, criterion)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(cfg.epochs, 1))
                 if cfg.scheduler == "cosine" else None)
    train_loader, val_loader, net, augment = make_loaders(cfg, manifest, model, device)
    history, best, stopped = [], BestStates(tasks, cfg.patience), False
    for epoch in range(1, cfg.epochs + 1):
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
        if on_epoch:
            on_epoch(epoch, row)
        if out_of_patience and epoch < cfg.epochs:
            stopped = True
            break
    ckpt_dir = None
    if out_dir is not None:
        ckpt_dir = save_checkpoints(Path(out_dir), cfg, tasks, best.states, best.best, _cpu_state(model, criterion),
                                    history[-1]["epoch"])
        torch.save({"split": "val", "images": [str(p) for p in manifest.rows("val")["image"]],
                    "outputs": best.outputs}, ckpt_dir / VAL_OUTPUTS)
    return FitResult(history, best.best, ckpt_dir, stopped, best.outputs)


def setup(cfg: TrainConfig, manifest: Manifest, device, init: dict | None, finetune: str | None,
          only: list[str] | None) -> tuple[HydraNet, list[Task], methods.Criterion]:
    """The model (warm-started or restored from `init`, frozen as configured, on the device), its tasks
    and the criterion (with the learned state `init` holds, when the method is the same)."""
    tasks = [Task.from_dict(t) for t in init["tasks"]] if init else manifest.tasks
    if only:
        tasks = [t for t in tasks if t.name in only]
    train_tasks = [t for t in tasks if finetune is None or t.name == finetune]
    model = build_model(cfg, tasks)
    if cfg.init and not init:
        load_backbone(model, cfg.init)
    if init:
        restore(model, init, TrainConfig.from_dict(init["config"]).init)
    freeze_backbone(model, cfg.freeze)
    if finetune:
        freeze_all_but(model, finetune)
    model.to(device)
    criterion = methods.make_criterion(cfg.replace(loss_weights={}) if finetune else cfg, train_tasks,
                                       shared_params(model)).to(device)
    if init and init.get("criterion") and TrainConfig.from_dict(init["config"]).weighting == cfg.weighting and not finetune:
        try:  # learned log-variances, DWA's loss history
            criterion.load_state_dict(init["criterion"])
        except RuntimeError as e:
            first = str(e).strip().splitlines()[0][:200]
            raise UserError(f"{init.get('source', 'checkpoint')}: its {cfg.weighting} state does not fit "
                            f"these tasks ({first})") from None
    return model, tasks, criterion


class BestStates:
    """Per task, its best epoch so far (by its primary val metric) and that epoch's val outputs; the
    model states those epochs need (tasks that peak together share one); and patience on the mean score."""

    def __init__(self, tasks: list[Task], patience: int):
        self.tasks, self.patience = tasks, patience
        self.best: dict[str, dict] = {}
        self.states: dict[int, dict] = {}
        self.outputs: dict = {}
        self.best_mean, self.since_best = -math.inf, 0

    def update(self, epoch: int, val: dict, val_outputs: dict, state) -> bool:
        """Record an epoch (`state()` copies the model's state, called only if some task improved);
        True when patience has run out."""
        for t in self.tasks:
            score = val.get(t.metric_key, math.nan)
            if t.name not in self.best or t.better(score, self.best[t.name]["score"]):
                self.best[t.name] = {"epoch": epoch, "score": score}
                self.outputs[t.name] = val_outputs[t.name]
                self.states[epoch] = self.states.get(epoch) or state()
        needed = {b["epoch"] for b in self.best.values()}
        self.states = {e: s for e, s in self.states.items() if e in needed}
        ms = mean_score(self.tasks, val)
        if ms > self.best_mean:
            self.best_mean, self.since_best = ms, 0
        else:
            self.since_best += 1
        return bool(self.patience) and self.since_best >= self.patience


def _cpu_state(model, criterion) -> dict:
    """The model's weights and the criterion's state (learned log-variances, DWA's loss history)."""
    cpu = lambda sd: {k: v.detach().to("cpu", copy=True) if torch.is_tensor(v) else v for k, v in sd.items()}  # noqa: E731
    return {"model": cpu(model.state_dict()), "criterion": cpu(criterion.state_dict())}


def save_checkpoints(out_dir: Path, cfg, tasks, states: dict, best: dict, last_state: dict, last_epoch: int) -> Path:
    """One file per distinct epoch (`epoch-<e>.pt`, plain dicts with the config) and `index.json`
    mapping each task to its best epoch's file, plus `last`. Tasks that peak together share a file.
    With a warm start (`init`) from a file or a run's checkpoint, backbone weights still equal to the base
    are not stored again: the checkpoint names its base in its config and `restore` puts them back (a
    frozen resnet18 backbone is 43 MB a file that 40 trials would otherwise each write several times).
    A registry model as base is stored whole: its versions are replaced and deleted."""
    out_dir.mkdir(parents=True, exist_ok=True)
    states = {**states, last_epoch: states.get(last_epoch) or last_state}
    try:
        base = backbone_state(cfg.init) if immutable(cfg.init) else {}
    except UserError:  # the base moved since training started: store every weight rather than lose them
        base = {}
    for epoch, state in states.items():
        kept = {k: v for k, v in state["model"].items()
                if not (k.startswith("backbone.") and k[9:] in base and torch.equal(v, base[k[9:]]))}
        torch.save({"model": kept, "criterion": state["criterion"], "config": cfg.to_dict(),
                    "tasks": [t.to_dict() for t in tasks], "epoch": epoch}, out_dir / f"epoch-{epoch}.pt")
    index = {"best": {k: {**v, "file": f"epoch-{v['epoch']}.pt"} for k, v in best.items()},
             "last": {"epoch": last_epoch, "file": f"epoch-{last_epoch}.pt"}}
    (out_dir / "index.json").write_text(json.dumps(index, indent=2))
    return out_dir


def restore(model: HydraNet, ckpt: dict, init: str | None) -> None:
    """Load a checkpoint's weights; backbone weights it left out come from its warm-start base `init`."""
    state = ckpt["model"]
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    if missing and init and all(k.startswith("backbone.") for k in missing) and all(k in own for k in state):
        load_backbone(model, init)
        model.load_state_dict(state, strict=False)
    else:
        model.load_state_dict(state)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict, loaded safely (weights_only: no pickled code runs) and checked to be ours;
    a directory means its last epoch (`index.json`). Anything else is one clear line."""
    path = Path(path)
    if path.is_dir():
        try:
            index = json.loads((path / "index.json").read_text())
            path = path / index["last"]["file"]
        except FileNotFoundError:
            raise UserError(f"{path}: no index.json: not a checkpoint directory written by mtl") from None
        except (ValueError, KeyError, TypeError):
            raise UserError(f"{path / 'index.json'}: not a checkpoint index (no last.file)") from None
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, tampered, not a torch file, or a payload weights_only refuses
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: holds a {type(ckpt).__name__}, not an mtl checkpoint (a dict with "
                        f"{', '.join(CHECKPOINT_KEYS)})")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise UserError(f"{path}: not an mtl checkpoint (no {', '.join(missing)})")
    ckpt["source"] = str(path)
    return ckpt


def model_from_checkpoint(ckpt: dict) -> tuple[HydraNet, TrainConfig, list[Task]]:
    """The model a checkpoint describes, in eval mode; a config, task list or state that does not fit is
    one clear line naming the file."""
    source = ckpt.get("source", "checkpoint")
    try:
        cfg = TrainConfig.from_dict(ckpt["config"])
        tasks = [Task.from_dict(t) for t in ckpt["tasks"]]
    except (TypeError, ValueError, AttributeError, UserError) as e:
        raise UserError(f"{source}: its config or tasks do not fit this version of mtl ({e})") from None
    model = build_model(cfg.replace(weights=None), tasks)
    try:
        restore(model, ckpt, cfg.init)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0][:200]
        raise UserError(f"{source}: its weights do not fit the model its config describes ({first})") from None
    return model.eval(), cfg, tasks
