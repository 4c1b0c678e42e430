"""The frozen backbone prefix, in one place: what `freeze=` means, the backbone's stages, the check that a
backbone's forward is its stages in order, a digest per stage, the prefix's outputs cached once per process
(training), and the forward several served members share stage by stage (serving).

`freeze` is `none`, `all` or a stage name (resnet: conv1 ... layer4; MobileNetV2: features.0 ... features.18):
that stage and every one before it are frozen (BatchNorm kept in eval mode, mtl/model/hydranet.py `freeze`). A frozen prefix over un-augmented
images computes the same outputs every epoch and every trial that shares it, so training computes it once
(keyed on its digest: another warm start or stage never reuses it; bounded, least recently used first).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch
from torch import nn

from mtl.data.batches import normalize
from mtl.errors import UserError
from mtl.model.hydranet import HydraNet, freeze

NONE, ALL = "none", "all"  # freeze= values besides a stage name
CACHE_SIZE = 8  # (prefix, split) entries kept per process: a study uses 2 (train, val) per warm start
_FEATURES: OrderedDict[tuple, torch.Tensor] = OrderedDict()


def clear_cache() -> None:
    _FEATURES.clear()


def cache_info() -> int:
    """Entries held (a frozen prefix's outputs on one split)."""
    return len(_FEATURES)


_POOL = nn.AdaptiveAvgPool2d(1)  # MobileNetV2 pools with a function after its blocks: the same as a stage


def stages(backbone: nn.Module) -> list[tuple[str, nn.Module]]:
    """The backbone's stages, in order: its children (for the backbones whose forward is them in order), a
    `features` Sequential (MobileNets, EfficientNets) spelled out as its blocks `features.0`, `features.1`, ...;
    where the forward pools with a function rather than a child after them (MobileNetV2), that pooling is
    stage `pool`. `forward_is_stages` checks the list against the real forward."""
    children = dict(backbone.named_children())
    out: list[tuple[str, nn.Module]] = []
    for name, child in children.items():
        if name == "features" and isinstance(child, nn.Sequential):
            out += [(f"features.{i}", block) for i, block in child.named_children()]
            if "avgpool" not in children:
                out.append(("pool", _POOL))
        else:
            out.append((name, child))
    return out


def stage_names(backbone: nn.Module) -> list[str]:
    return [n for n, _ in stages(backbone)]


def frozen_stage(backbone: nn.Module, value: str) -> str:
    """`value` checked as a freeze= setting (none, all or a stage name): one line naming the choices."""
    names = stage_names(backbone)
    if value not in (NONE, ALL, *names):
        raise UserError(f"freeze={value}: no such backbone stage ({NONE}, {ALL}, {', '.join(names)})")
    return value


@torch.no_grad()
def forward_is_stages(backbone: nn.Module, generator: torch.Generator | None = None) -> bool:
    """Whether the backbone computes its stages in order and flattens (then a prefix can stand for it), checked
    on a random batch in eval mode at the backbone's own input size (MultiLeNet: 36 px); every module's mode is
    put back as it was. Without `generator` the batch is drawn from the global RNG, as training always has
    (a seeded run's later draws, dropout's among them, stay what they were)."""
    modes = {m: m.training for m in backbone.modules()}
    backbone.eval()
    size = getattr(backbone, "input_size", 64)
    x = torch.randn(2, 3, size, size, generator=generator)
    ok = torch.allclose(backbone(x), torch.flatten(run(backbone, x), 1), atol=1e-5)
    for m, mode in modes.items():
        m.training = mode
    return ok


def run(backbone: nn.Module, h: torch.Tensor, start: str | None = None, stop: str | None = None) -> torch.Tensor:
    """The stages after `start` (None: from the first) up to and including `stop` (None: to the last)."""
    names = stage_names(backbone)
    lo = names.index(start) + 1 if start else 0
    hi = names.index(stop) + 1 if stop else len(names)
    for _, child in stages(backbone)[lo:hi]:
        h = child(h)
    return h


def prefix(backbone: nn.Module, x: torch.Tensor, stage: str) -> torch.Tensor:
    """The backbone up to and including `stage` (`all`: the whole backbone, flattened)."""
    return backbone(x) if stage == ALL else run(backbone, x, stop=frozen_stage(backbone, stage))


def rest(backbone: nn.Module, h: torch.Tensor, stage: str) -> torch.Tensor:
    """What the backbone computes after `prefix(x, stage)`, flattened: the backbone's output."""
    return h if stage == ALL else torch.flatten(run(backbone, h, start=stage), 1)


def freeze_backbone(model: HydraNet, stage: str) -> None:
    """freeze=<stage>: the backbone's stages up to and including `stage` are frozen (BatchNorm kept in eval
    mode); `all` freezes the whole backbone, `none` nothing. A partial prefix needs a backbone whose forward
    is its stages in order (ResNets, MobileNets, EfficientNets): checked here, once."""
    stage = frozen_stage(model.backbone, stage)
    if stage == NONE:
        return
    if stage == ALL:
        freeze(model.backbone)
        return
    for name, child in stages(model.backbone):
        freeze(child)
        if name == stage:
            break
    if not forward_is_stages(model.backbone):
        raise UserError(f"freeze={stage}: this backbone's forward is not its stages in order; use freeze=all or none")


def digests(backbone: nn.Module) -> list[str]:
    """One digest per stage, cumulative (its name, then each parameter's and buffer's name, dtype, shape and
    bytes): two backbones that share the first k digests compute the same thing up to stage k."""
    out, h = [], hashlib.sha1()
    for name, child in stages(backbone):
        h.update(name.encode())
        for key, v in child.state_dict().items():
            h.update(key.encode() + str(v.dtype).encode() + str(tuple(v.shape)).encode())
            h.update(v.detach().contiguous().cpu().numpy().tobytes())
        out.append(h.copy().hexdigest())
    return out


def prefix_digest(backbone: nn.Module, stage: str) -> str:
    """The digest of the backbone's weights up to and including `stage` (`all`: every stage)."""
    d = digests(backbone)
    return d[-1] if stage == ALL else d[stage_names(backbone).index(stage)]


def cached(cfg) -> bool:
    """Whether training runs over the frozen prefix's cached outputs: a frozen prefix, no augmentation."""
    return cfg.freeze != NONE and cfg.feature_cache and not cfg.augment


@torch.no_grad()
def prefix_features(model: HydraNet, stage: str, images: torch.Tensor, device, key: tuple, batch: int = 256):
    """The frozen prefix's outputs on un-augmented uint8 images (`key` names the images: split, size)."""
    key = (prefix_digest(model.backbone, stage), stage, *key)
    if key in _FEATURES:
        _FEATURES.move_to_end(key)
        return _FEATURES[key]
    was = model.training
    model.eval()
    out = [prefix(model.backbone, normalize(images[i:i + batch].to(device)), stage).cpu()
           for i in range(0, len(images), batch)]
    model.train(was)
    _FEATURES[key] = torch.cat(out)
    while len(_FEATURES) > CACHE_SIZE:
        _FEATURES.popitem(last=False)
    return _FEATURES[key]


class FromPrefix(nn.Module):
    """What follows a cached frozen prefix: takes its outputs, returns the heads' outputs."""

    def __init__(self, model: HydraNet, stage: str):
        super().__init__()
        self.model, self.stage = model, stage

    def features(self, h: torch.Tensor) -> torch.Tensor:
        return self.model.trunk(rest(self.model.backbone, h, self.stage))

    def heads_forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model.heads_forward(h)

    def forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads_forward(self.features(h))


def member_digests(model: HydraNet) -> list[str] | None:
    """A served member's stage digests, or None when its backbone's forward is not its stages (it runs alone)."""
    ok = forward_is_stages(model.backbone, torch.Generator().manual_seed(0))
    return digests(model.backbone) if ok else None


@torch.no_grad()
def shared_forward(members: dict[str, tuple], digests_of: dict[str, list[str] | None],
                   images: dict[int, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """Every member's head outputs on one batch; a backbone stage that several members hold with the same
    weights (the same digests up to it) is computed once. `images`: image size -> uint8 batch."""
    done: dict[tuple, torch.Tensor] = {}
    out = {}
    for name, (model, cfg) in members.items():
        x = normalize(images[cfg.image_size])
        if digests_of.get(name) is None:
            out[name] = model(x)
            continue
        h = x
        for (_, child), d in zip(stages(model.backbone), digests_of[name]):
            key = (cfg.image_size, d)
            h = done[key] if key in done else done.setdefault(key, child(h))
        out[name] = model.heads_forward(model.trunk(torch.flatten(h, 1)))
    return out
