"""HydraNet: one torchvision backbone computed once per batch, an optional shared trunk, one head per task.

Also `freeze`, which stops gradients *and* keeps frozen BatchNorm/Dropout layers in eval mode across
`model.train()` calls. `requires_grad=False` alone is not enough: BatchNorm still updates
`running_mean/var` in train mode, silently changing what every other head sees (seed 004).
"""

from __future__ import annotations

import socket
import threading
import urllib.request
from collections import OrderedDict

import torch
import torchvision
from torch import nn

from mtl.errors import UserError
from mtl.model.weights import offline_source, weights_cache_path
from mtl.tasks import Task


def dense_block(in_dim: int, dims: list[int], bn_momentum: float, bn_eps: float, dropout: float,
                batchnorm: bool = True) -> nn.Sequential:
    """Linear -> BatchNorm1d(momentum, eps) -> ReLU -> Dropout, once per entry of `dims`; `batchnorm=False`:
    Linear -> ReLU -> Dropout (the seed's round 2: plain dense layers)."""
    layers: list[nn.Module] = []
    for d in dims:
        norm = [nn.BatchNorm1d(d, eps=bn_eps, momentum=bn_momentum)] if batchnorm else []
        layers += [nn.Linear(in_dim, d), *norm, nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_dim = d
    return nn.Sequential(*layers)


CONNECT_TIMEOUT = 5.0  # seconds to reach the weights' server (name lookup included) before saying offline
READ_TIMEOUT = 60.0  # a stalled download fails instead of hanging


def unreachable(url: str, timeout: float = CONNECT_TIMEOUT) -> str | None:
    """None when the server answers within `timeout` seconds, else why not (DNS included: the probe runs in a
    thread that is given up on at the deadline)."""
    result: dict[str, str] = {}

    def probe():
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
            result["ok"] = ""
        except Exception as e:  # noqa: BLE001 - any failure means: not reachable from here
            result["error"] = str(getattr(e, "reason", e))

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 1)
    return None if "ok" in result else result.get("error", f"no answer within {timeout:g} s")


def resolve_weights(backbone: str, weights: str | None):
    """torchvision weights enum for `weights` ('DEFAULT' or an enum name). Not cached yet: downloaded
    through torchvision's own path into the torch hub cache, after a short check that the server
    answers; offline, one line naming the file to copy there."""
    if not weights:
        return None
    try:
        enum = torchvision.models.get_model_weights(backbone)
        w = enum.DEFAULT if weights == "DEFAULT" else enum[weights]
    except (KeyError, ValueError):
        raise UserError(f"backbone '{backbone}' has no weights '{weights}'") from None
    cached = weights_cache_path(w)
    if not cached.is_file():
        why = unreachable(w.url)
        if why is not None:
            other = offline_source(w)
            raise UserError(f"weights {w} are not cached at {cached} and cannot be downloaded from {w.url} ({why}); "
                            + (f"{other}, or copy" if other else "copy") + f" that file to {cached} or use weights=None")
    return w


class MultiLeNet(nn.Sequential):
    """The shared part of ParetoMTL's MultiMNIST network (Lin et al. 2019, github.com/Xi-L/ParetoMTL,
    multiMNIST/model_lenet.py; Pareto HyperNetworks uses the same kernels): conv 9x9 (10 maps) -> max-pool
    2 -> ReLU -> conv 5x5 (20) -> max-pool 2 -> ReLU -> linear 500 -> 50 -> ReLU, for 36 px inputs (max-pool
    and ReLU commute, so this is their ReLU-then-pool). Their heads are one linear layer 50 -> 10 each
    (head_dims=[]). It takes 3 input channels (images are decoded to RGB here; a grey digit is the same
    in each), where theirs takes 1."""

    input_size = 36
    out_features = 50

    def __init__(self):
        super().__init__(OrderedDict(
            conv1=nn.Conv2d(3, 10, kernel_size=9), pool1=nn.MaxPool2d(2), relu1=nn.ReLU(),
            conv2=nn.Conv2d(10, 20, kernel_size=5), pool2=nn.MaxPool2d(2), relu2=nn.ReLU(),
            flatten=nn.Flatten(), fc=nn.Linear(5 * 5 * 20, self.out_features), relu3=nn.ReLU()))


LOCAL_BACKBONES = {"multi_lenet": MultiLeNet}  # small networks the benchmarks' papers use; no weights


def make_backbone(name: str, weights: str | None = None) -> tuple[nn.Module, int]:
    """A torchvision classifier by name with its classifier replaced by identity, and its feature size
    (or one of LOCAL_BACKBONES, trained from scratch)."""
    if name in LOCAL_BACKBONES:
        if weights:
            raise UserError(f"backbone '{name}' has no pretrained weights (weights={weights!r}); use weights=None")
        net = LOCAL_BACKBONES[name]()
        return net, net.out_features
    if name not in torchvision.models.list_models(module=torchvision.models):
        raise UserError(f"unknown backbone '{name}' (try resnet18, resnet50, mobilenet_v3_small, efficientnet_b0, "
                        f"{', '.join(LOCAL_BACKBONES)})")
    w = resolve_weights(name, weights)
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(READ_TIMEOUT)  # torch.hub's download has no timeout of its own
    try:
        net = torchvision.models.get_model(name, weights=w)
    except OSError as e:  # a download that broke off: torch.hub removes its partial file
        raise UserError(f"downloading {w} to {weights_cache_path(w)} failed ({e}); try again or copy the file there") from None
    finally:
        socket.setdefaulttimeout(old)
    for attr in ("fc", "classifier", "heads", "head"):
        head = getattr(net, attr, None)
        if head is None:
            continue
        linears = [m for m in head.modules() if isinstance(m, nn.Linear)] if not isinstance(head, nn.Linear) else [head]
        if linears:
            setattr(net, attr, nn.Identity())
            return net, linears[0].in_features
    raise UserError(f"backbone '{name}': cannot find its classifier to replace")


class HydraNet(nn.Module):
    """Backbone -> trunk -> {task: head}. `forward` returns dict[task, Tensor]: (B,) for binary and
    regression, (B, C) for multiclass and multilabel (each kind's `head_output`, mtl/kinds)."""

    def __init__(self, tasks: list[Task], backbone: str = "resnet18", trunk_dims: list[int] = (),
                 head_dims: list[int] = (), bn_momentum: float = 0.1, bn_eps: float = 1e-5,
                 dropout: float = 0.0, weights: str | None = None, batchnorm: bool = True):
        super().__init__()
        self.tasks = {t.name: t for t in tasks}
        self.backbone, feat = make_backbone(backbone, weights)
        self.trunk = dense_block(feat, list(trunk_dims), bn_momentum, bn_eps, dropout, batchnorm)
        feat = trunk_dims[-1] if trunk_dims else feat
        self.heads = nn.ModuleDict({
            t.name: nn.Sequential(dense_block(feat, list(head_dims), bn_momentum, bn_eps, dropout, batchnorm),
                                  nn.Linear(head_dims[-1] if head_dims else feat, t.out_dim))
            for t in tasks})
        for t in tasks:
            t.kind_impl.init_head(t, self.heads[t.name][-1])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.backbone(x))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.heads_forward(self.features(x))  # features computed once, shared by every head

    def heads_forward(self, h: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for name, head in self.heads.items():
            task = self.tasks[name]
            out[name] = task.kind_impl.head_output(task, head(h))
        return out

    def train(self, mode: bool = True):
        super().train(mode)
        if mode:  # frozen layers behave as at inference: BatchNorm stats fixed, no dropout or stochastic depth
            for m in self.modules():
                if getattr(m, "_mtl_frozen", False):
                    m.eval()
        return self


def freeze(module: nn.Module) -> None:
    """Stop gradients through `module` and keep it in eval mode across `model.train()` (see HydraNet.train):
    BatchNorm statistics fixed, no dropout or stochastic depth."""
    for p in module.parameters():
        p.requires_grad_(False)
    for m in module.modules():
        m._mtl_frozen = True
    module.eval()


def freeze_all_but(model: HydraNet, task: str) -> None:
    """Fine-tune one head: freeze backbone, trunk and every other head."""
    if task not in model.heads:
        raise UserError(f"no head '{task}' to fine-tune (heads: {', '.join(model.heads)})")
    freeze(model.backbone)
    freeze(model.trunk)
    for name, head in model.heads.items():
        if name != task:
            freeze(head)


def build_model(cfg, tasks: list[Task]) -> HydraNet:
    """The HydraNet a TrainConfig describes (backbone, trunk and heads; weights as `cfg.weights` names)."""
    size = getattr(LOCAL_BACKBONES.get(cfg.backbone), "input_size", None)
    if size is not None and cfg.image_size != size:
        raise UserError(f"backbone '{cfg.backbone}' takes {size} px images; image_size={cfg.image_size}")
    return HydraNet(tasks, cfg.backbone, cfg.trunk_dims, cfg.head_dims, cfg.bn_momentum, cfg.bn_eps,
                    cfg.dropout, cfg.weights, cfg.batchnorm)
