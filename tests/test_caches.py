"""The process-wide caches are bounded (least recently used go first) and can be cleared."""

from __future__ import annotations

import torch

from mtl.data import dataset
from mtl.data.manifest import load_manifest
from mtl.model import prefix as features
from mtl.model.hydranet import HydraNet
from mtl.tasks import Task


def test_the_decoded_image_cache_keeps_within_its_bytes(fgo_small, monkeypatch):
    paths = load_manifest(fgo_small).image_paths("train")[:6]
    dataset.clear_cache()
    monkeypatch.setattr(dataset, "CACHE_BYTES", 4 * 3 * 16 * 16)  # four 16 px images
    first = dataset.cached_images(paths, 16)
    n, size = dataset.cache_info()
    assert n == 4 and size <= dataset.CACHE_BYTES
    assert torch.equal(dataset.cached_images(paths, 16), first)  # evicted images decode again, the same
    dataset.clear_cache()
    assert dataset.cache_info() == (0, 0)


def test_the_feature_cache_keeps_its_latest_entries(monkeypatch):
    features.clear_cache()
    monkeypatch.setattr(features, "CACHE_SIZE", 2)
    net = HydraNet([Task("g", "binary", ("a", "b"))], "resnet18").eval()
    images = torch.randint(0, 255, (3, 3, 32, 32), dtype=torch.uint8)
    for split in ("train", "val", "test"):
        out = features.prefix_features(net, "all", images, torch.device("cpu"), (split, 32))
    assert features.cache_info() == 2 and out.shape[0] == 3
    features.clear_cache()
    assert features.cache_info() == 0
