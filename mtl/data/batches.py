"""Batches straight from a split's in-memory tensors, and the train augmentation applied to a whole batch.

A split that fits in memory (decoded once into uint8, or a frozen backbone prefix's cached outputs)
needs no per-sample `__getitem__`, collate or worker processes: `TensorBatches` slices it. The
augmentation then runs on the batch, on the training device (`BatchAugment`), with its own random
parameters per sample: a horizontal flip, a resized crop of 50-100 % of the area (aspect 0.8-1.25)
and a rotation of up to 10 degrees folded into one affine warp (`affine_grid` + `grid_sample`), then
random erasing of a small patch. Colour is never touched (colour is a label).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> float, ImageNet-normalised (what the torchvision backbones expect)."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x.float() / 255.0 - mean) / std


class TensorBatches:
    """Iterate (x, targets, masks) batches over in-memory tensors; uint8 images are normalised per batch."""

    def __init__(self, x: torch.Tensor, targets: dict, masks: dict, batch_size: int, shuffle: bool = False,
                 seed: int = 0, drop_last: bool = False):
        self.x, self.targets, self.masks = x, targets, masks
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last and n > self.batch_size else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.x[idx]
            yield (normalize(x) if x.dtype == torch.uint8 else x, {k: v[idx] for k, v in self.targets.items()},
                   {k: v[idx] for k, v in self.masks.items()})


class BatchAugment:
    """Per-sample random flip + resized crop + rotation (one affine warp) and random erasing, on a batch."""

    def __init__(self, seed: int = 0, scale=(0.5, 1.0), ratio=(0.8, 1.25), degrees: float = 10.0,
                 erase_p: float = 0.5, erase_scale=(0.02, 0.12)):
        self.generator = torch.Generator().manual_seed(seed)
        self.scale, self.ratio, self.degrees = scale, ratio, degrees
        self.erase_p, self.erase_scale = erase_p, erase_scale

    def _u(self, n: int, lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self.generator)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        area = self._u(b, *self.scale)
        log_r = self._u(b, math.log(self.ratio[0]), math.log(self.ratio[1]))
        sw = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)  # crop size as a fraction of the image
        sh = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
        tx = (self._u(b, -1, 1) * (1 - sw))  # crop centre, kept inside the image
        ty = (self._u(b, -1, 1) * (1 - sh))
        flip = torch.where(torch.rand(b, generator=self.generator) < 0.5, -1.0, 1.0)
        a = torch.deg2rad(self._u(b, -self.degrees, self.degrees))
        cos, sin = torch.cos(a), torch.sin(a)
        # output coords -> input coords: rotate, scale to the crop, flip, move to the crop centre
        theta = torch.stack([torch.stack([flip * sw * cos, -sw * sin, tx], 1),
                             torch.stack([flip * sh * sin, sh * cos, ty], 1)], 1).to(x.device, x.dtype)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return self._erase(x)

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        """RandomErasing(p, scale, ratio 0.3-3.3, value 0) per sample, as one mask."""
        b, _, h, w = x.shape
        area = self._u(b, *self.erase_scale) * h * w
        log_r = self._u(b, math.log(0.3), math.log(3.3))
        eh = torch.sqrt(area * torch.exp(log_r)).round().clamp(1, h)
        ew = torch.sqrt(area / torch.exp(log_r)).round().clamp(1, w)
        top = (torch.rand(b, generator=self.generator) * (h - eh + 1)).floor()
        left = (torch.rand(b, generator=self.generator) * (w - ew + 1)).floor()
        on = torch.rand(b, generator=self.generator) < self.erase_p
        rows = torch.arange(h).view(1, h, 1)
        cols = torch.arange(w).view(1, 1, w)
        mask = ((rows >= top.view(b, 1, 1)) & (rows < (top + eh).view(b, 1, 1)) & (cols >= left.view(b, 1, 1))
                & (cols < (left + ew).view(b, 1, 1)) & on.view(b, 1, 1))
        return x.masked_fill(mask.unsqueeze(1).to(x.device), 0.0)
