"""The frozen backbone prefix's outputs, computed once per process and reused by every trial that
shares the prefix (a frozen, warm-started backbone: the default study's 120 trials run only the trunk
and heads). Keyed on a digest of the prefix's weights, so another warm start or stage never reuses
them; bounded (least recently used go first) and clearable."""

from __future__ import annotations

import hashlib
from collections import OrderedDict

import torch

from mtl.data.batches import normalize
from mtl.model.hydranet import HydraNet

CACHE_SIZE = 8  # (prefix, split) entries kept per process: a study uses 2 (train, val) per warm start
_FEATURES: OrderedDict[tuple, torch.Tensor] = OrderedDict()


def clear_cache() -> None:
    _FEATURES.clear()


def cache_info() -> int:
    """Entries held (a frozen prefix's outputs on one split)."""
    return len(_FEATURES)


def prefix_digest(model: HydraNet, stage: str) -> str:
    """A digest of the backbone weights up to and including `stage` ("all": the whole backbone)."""
    digest = hashlib.sha1()
    stages = model.stage_names()
    for k, v in sorted(model.backbone.state_dict().items()):
        if stage == "all" or k.split(".")[0] in stages[:stages.index(stage) + 1]:
            digest.update(k.encode())
            digest.update(v.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@torch.no_grad()
def prefix_features(model: HydraNet, stage: str, images: torch.Tensor, device, key: tuple, batch: int = 256):
    """The frozen prefix's outputs on un-augmented uint8 images (`key` names the images: split, size)."""
    key = (prefix_digest(model, stage), stage, *key)
    if key in _FEATURES:
        _FEATURES.move_to_end(key)
        return _FEATURES[key]
    was = model.training
    model.eval()
    out = [model.prefix(normalize(images[i:i + batch].to(device)), stage).cpu() for i in range(0, len(images), batch)]
    model.train(was)
    _FEATURES[key] = torch.cat(out)
    while len(_FEATURES) > CACHE_SIZE:
        _FEATURES.popitem(last=False)
    return _FEATURES[key]
