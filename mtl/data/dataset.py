"""Multi-task image dataset: decode once per process into a uint8 cache, normalise, yield targets + masks.

Memory: the cache holds 3*S*S bytes per image at image size S — 12.3 MB per 1,000 images at 64 px,
150 MB per 1,000 at 224 px — up to CACHE_BYTES (least recently used images go first). A set too large
for that passes `cache=False`: images are then decoded in `__getitem__` (use DataLoader workers to hide
the cost), so only a batch is ever held. Train augmentation runs on whole batches (mtl/data/batches.py).
"""

from __future__ import annotations

import io
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from mtl.data.batches import normalize
from mtl.data.images import to_rgb
from mtl.data.manifest import Manifest
from mtl.errors import UserError

CACHE_BYTES = 4 << 30  # decoded images kept per process (uint8): 4 GiB, about 330,000 images at 64 px
# process-wide: (absolute path, size) -> uint8 CHW tensor; the trials of one worker share it
_CACHE: OrderedDict[tuple[str, int], torch.Tensor] = OrderedDict()
_cached_bytes = 0


def clear_cache() -> None:
    global _cached_bytes
    _CACHE.clear()
    _cached_bytes = 0


def cache_info() -> tuple[int, int]:
    """(images, bytes) held by the decode-once cache."""
    return len(_CACHE), _cached_bytes


def decode(path: Path | bytes, size: int) -> torch.Tensor:
    """One image (a file, or its encoded bytes) -> uint8 tensor (3, size, size)."""
    if isinstance(path, bytes | bytearray):
        source, path = io.BytesIO(path), "embedded image"
    else:
        source = path
    try:
        with Image.open(source) as im:
            im = to_rgb(im)
            if im.size != (size, size):
                im = im.resize((size, size), Image.Resampling.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: cannot decode image ({type(e).__name__}); run `python -m mtl check`") from None
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def cached_images(paths: list[Path], size: int) -> torch.Tensor:
    """All images of a split as one uint8 tensor (N, 3, S, S), decoding each path once per process."""
    global _cached_bytes
    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    for i, p in enumerate(paths):
        key = (str(p), size)
        if key in _CACHE:
            _CACHE.move_to_end(key)
        else:
            _CACHE[key] = decode(p, size)
            _cached_bytes += _CACHE[key].numel()
        out[i] = _CACHE[key]
    while _cached_bytes > CACHE_BYTES and _CACHE:
        _cached_bytes -= _CACHE.popitem(last=False)[1].numel()
    return out


class MultiTaskDataset(Dataset):
    """One split of a manifest: `(image, {task: target}, {task: label_mask})` per item."""

    def __init__(self, manifest: Manifest, split: str, image_size: int = 64, cache: bool = True):
        self.manifest, self.split, self.size = manifest, split, image_size
        self.paths = manifest.image_paths(split)
        targets, masks = manifest.targets(split)
        self.targets = {k: torch.from_numpy(v) for k, v in targets.items()}
        self.masks = {k: torch.from_numpy(v) for k, v in masks.items()}
        self.images = cached_images(self.paths, image_size) if cache else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        img = self.images[i] if self.images is not None else decode(self.paths[i], self.size)
        return (normalize(img[None])[0], {k: v[i] for k, v in self.targets.items()},
                {k: v[i] for k, v in self.masks.items()})
