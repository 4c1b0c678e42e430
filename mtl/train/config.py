"""`TrainConfig`: every setting of one training run, saved with each run and checkpoint, and `--set`.

Unknown keys fail loudly (as nanoGPT's configurator does). A method's parameters live in
`method_args` and a task kind's options in `kind_options`, each declared (typed, checked) in that
method's or kind's own file, so adding either never touches this one.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
import types
import typing
from dataclasses import dataclass, field

from mtl import kinds, methods
from mtl.errors import UserError

SCHEDULERS = ("cosine", "none")
BEST_EPOCHS = ("per_task", "mean")
JACOBIAN_ON = ("features", "params")
# old names still read, each with one line saying the new one (for one release)
DEPRECATED = {"weighting": "method", "weighting_args": "method_args"}


@dataclass
class TrainConfig:
    backbone: str = "resnet18"
    weights: str | None = None  # torchvision weights name ("DEFAULT"); None: nothing is downloaded here
    image_size: int = 64
    trunk_dims: list[int] = field(default_factory=list)  # shared dense layers after the backbone
    head_dims: list[int] = field(default_factory=list)  # per-task dense layers ([] = plain linear head)
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5
    batchnorm: bool = True  # dense layers (trunk, heads) carry BatchNorm1d; False: Linear -> ReLU only
    dropout: float = 0.0
    method: str = "fixed"  # the multi-task method (mtl/methods): fixed, uncertainty, dwa, upgrad, mgda, pcgrad, ...
    method_args: dict = field(default_factory=dict)  # its parameters (`--set method_args.c=0.4`)
    loss_weights: dict[str, float] = field(default_factory=dict)  # method=fixed only; missing task = 1
    jacobian_on: str = "features"  # gradient methods (not the loss weightings): Jacobian w.r.t. the shared features or params
    kind_options: dict = field(default_factory=dict)  # per task kind, its options: {"regression": {"loss": "l1"}}
    lr_backbone: float = 1e-3  # the FGO notebook fine-tuned pretrained weights at 1e-4; from scratch needs more
    lr_heads: float = 1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # cosine | none
    epochs: int = 15
    batch_size: int = 32
    augment: bool = True  # batched on the device: flips, resized crops, small rotations, erasing
    init: str | None = None  # where the backbone starts: a file, checkpoint dir, models:/ or runs:/ URI (mtl/train/checkpoints.py)
    freeze: str = "none"  # none | all | a backbone stage (resnet: layer1..layer4): it and all before it frozen
    feature_cache: bool = True  # with freeze and augment=False: compute the frozen prefix once per process
    patience: int = 0  # stop after this many epochs without a better mean per-task val score (0 = off)
    best_epoch: str = "per_task"  # per_task: each task its own best val epoch; mean: one epoch for all (one network)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # CUDA only: bf16/fp16 autocast
    num_workers: int = 0  # > 0: decode images per sample in DataLoader workers instead of the in-memory cache

    def validate(self, task_names: list[str] | None = None) -> TrainConfig:
        """Every check a config can have before a model exists (the backbone, its weights, `init` and `freeze`
        need one: `check_config` in mtl/train/loop.py); `task_names`: the tasks it trains, for per-task
        settings. Each problem is one UserError line. Returns the config."""
        choices = {"scheduler": SCHEDULERS, "best_epoch": BEST_EPOCHS, "jacobian_on": JACOBIAN_ON}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise UserError(f"{name}={getattr(self, name)!r}: expected one of {', '.join(allowed)}")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise UserError(f"device={self.device!r}: expected auto, cpu, cuda or cuda:<index>")
        for name, ok, what in (("epochs", self.epochs >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
                               ("image_size", self.image_size >= 8, ">= 8"), ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
                               ("bn_momentum", 0 < self.bn_momentum <= 1, "in (0, 1]"), ("bn_eps", self.bn_eps > 0, "> 0"),
                               ("lr_backbone", self.lr_backbone >= 0, ">= 0"), ("lr_heads", self.lr_heads > 0, "> 0"),
                               ("weight_decay", self.weight_decay >= 0, ">= 0"), ("patience", self.patience >= 0, ">= 0"),
                               ("num_workers", self.num_workers >= 0, ">= 0")):
            if not ok:
                raise UserError(f"{name}={getattr(self, name)!r}: must be {what}")
        methods.get(self.method).coerce_args(dict(self.method_args), task_names)
        if self.loss_weights and self.method != "fixed":
            raise UserError(f"loss_weights are for method=fixed; method '{self.method}' sets its own weights")
        bad = {k: v for k, v in self.loss_weights.items() if not float(v) >= 0}
        if bad:
            raise UserError(f"loss weights must be >= 0: {bad}")
        unknown = set(self.loss_weights) - set(task_names) if task_names is not None else set()
        if unknown:
            raise UserError(f"loss weights for unknown task(s): {', '.join(sorted(unknown))}")
        for kind, options in self.kind_options.items():
            try:
                spec = kinds.get(kind)
            except kinds.LabelError as e:
                raise UserError(f"kind_options: {e}") from None
            spec.resolve_options(options)
        return self

    def replace(self, **changes) -> TrainConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A saved config; those written by earlier versions (weighting, regression_loss, dwa_temperature) read too."""
        d = dict(d)
        for old, new in DEPRECATED.items():
            if old in d:
                d[new] = d.pop(old)
        if "dwa_temperature" in d:  # configs written before methods took their parameters in method_args
            t = d.pop("dwa_temperature")
            if d.get("method") == "dwa":
                d["method_args"] = {"temperature": t, **d.get("method_args", {})}
        if "regression_loss" in d:  # configs written before kinds declared their own options
            loss = d.pop("regression_loss")
            if loss != "l1":
                d["kind_options"] = {"regression": {"loss": loss}, **d.get("kind_options", {})}
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise UserError(f"unknown config key(s): {', '.join(sorted(unknown))} (known: {', '.join(sorted(names))})")
        return cls(**d)

    def with_overrides(self, items: list[str]) -> TrainConfig:
        """Apply `key=value` strings (`head_dims=256,256`, `loss_weights.age=0.1`, `method_args.c=0.4`,
        `kind_options.regression.loss=mse`); unknown keys fail loudly."""
        hints = typing.get_type_hints(TrainConfig)
        cfg = copy.deepcopy(self)
        for item in items:
            key, sep, value = item.partition("=")
            if not sep:
                raise UserError(f"--set {item!r}: expected key=value")
            head, _, rest = key.partition(".")
            if head in DEPRECATED:
                print(f"warning: --set {head}... is now {DEPRECATED[head]}...; the old name goes in the next release",
                      file=sys.stderr)
                head = DEPRECATED[head]
            if head == "regression_loss" and not rest:
                print("warning: --set regression_loss=... is now kind_options.regression.loss=...; the old name "
                      "goes in the next release", file=sys.stderr)
                cfg.kind_options.setdefault("regression", {})["loss"] = value
            elif head == "loss_weights" and rest:
                cfg.loss_weights[rest] = _parse(item, value, float)
            elif head == "method_args" and rest:  # typed by the method, below; `<name>.<task>` for a per-task one
                name, _, task = rest.partition(".")
                if task:
                    cfg.method_args.setdefault(name, {})[task] = value
                else:
                    cfg.method_args[name] = value
            elif head == "kind_options" and "." in rest:
                kind, _, option = rest.partition(".")
                cfg.kind_options.setdefault(kind, {})[option] = value
            elif head in hints and not rest and typing.get_origin(hints[head]) is not dict:
                setattr(cfg, head, _parse(item, value, hints[head]))
            else:
                raise UserError(f"--set {item!r}: unknown config key '{key}' (known: {', '.join(sorted(hints))}; "
                                f"loss_weights.<task>, method_args.<name>, kind_options.<kind>.<option>)")
        if cfg.method != self.method:  # another method (e.g. over a --from checkpoint's config): the old
            # method's parameters and fixed weights do not carry over; those set in this command do
            cfg.method_args = {k: v for k, v in cfg.method_args.items() if k not in self.method_args
                               or any(i.startswith((f"method_args.{k}=", f"method_args.{k}.")) for i in items)}
            if cfg.method != "fixed" and not any(i.startswith("loss_weights.") for i in items):
                cfg.loss_weights = {}
        if cfg.method_args:
            given = methods.get(cfg.method).coerce_args(cfg.method_args)
            cfg.method_args = {k: v for k, v in given.items() if k in cfg.method_args}
        for kind, options in cfg.kind_options.items():
            try:
                spec = kinds.get(kind)
            except kinds.LabelError as e:
                raise UserError(f"--set kind_options.{kind}...: {e}") from None
            resolved = spec.resolve_options(options)
            cfg.kind_options[kind] = {k: resolved[k] for k in options}
        return cfg


def _parse(item: str, value: str, typ):
    origin = typing.get_origin(typ)
    try:
        if origin is list:
            return [int(v) for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
        if origin in (typing.Union, types.UnionType):  # str | None
            return None if value.lower() in ("", "none", "null") else value
        if typ is bool:
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError
            return value.lower() in ("true", "1", "yes")
        return typ(value)
    except ValueError:
        raise UserError(f"--set {item!r}: cannot read '{value}' as {getattr(typ, '__name__', typ)}") from None
