"""Label-free pretraining data: rotation prediction (Gidaris, Singh & Komodakis, ICLR 2018) on the train
split's images of a study's manifest, the offline stand-in for an ImageNet backbone.

A PRETRAIN stage that trained on the study's own target labels would hand every trial features that
already solve the tasks (and leave nothing for tuning to find). This one reads no label column and
no val or test image: every train image is written at 0, 90, 180 and 270 degrees, the rotation is
the only task, and the pretext's own train/val/test split divides the *train* groups (70/15/15), so
its monitoring never touches the study's val or test images. Written once into
`data/pretext/<manifest>-rotation-<digest>/` (about 4x the train images' size; `make clean` removes
it); the digest changes with the train images' names and bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
from PIL import Image

from mtl.data.images import to_rgb
from mtl.data.manifest import Manifest
from mtl.data.render import assign_splits, write_manifest

ROTATIONS = ("0", "90", "180", "270")
_TRANSPOSE = {"90": Image.Transpose.ROTATE_90, "180": Image.Transpose.ROTATE_180, "270": Image.Transpose.ROTATE_270}
CACHE = Path("data") / "pretext"


def train_images(m: Manifest) -> pd.DataFrame:
    """The only columns and rows the pretext reads: image and group of the train split."""
    return m.table.loc[m.table["split"] == "train", ["image", "group"]]


def rotation_manifest(m: Manifest, cache: Path = CACHE) -> Path:
    """The rotation pretext of `m`'s train images (written once, deterministic); returns its CSV path."""
    train = train_images(m)
    digest = hashlib.sha1()
    for image in train["image"]:
        digest.update(image.encode() + b"\0" + (m.root / image).read_bytes())
    name = f"{m.name}-rotation-{digest.hexdigest()[:10]}"
    csv = cache / f"{name}.csv"
    if csv.is_file():
        return csv
    out = cache / name
    splits = assign_splits(list(train["group"]), seed=0)
    rows = []
    for image, group in zip(train["image"], train["group"]):
        with Image.open(m.root / image) as im:
            rgb = to_rgb(im)
        for r in ROTATIONS:
            rel = f"{Path(image).with_suffix('')}-r{r}.png"
            dest = out / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(dest.name + ".tmp")
            (rgb if r == "0" else rgb.transpose(_TRANSPOSE[r])).save(tmp, format="PNG")
            os.replace(tmp, dest)
            rows.append({"image": rel, "group": group, "split": splits[group], "rotation": r})
    spec = {"root": name, "tasks": [{"name": "rotation", "kind": "multiclass", "classes": list(ROTATIONS)}]}
    tmp_csv = csv.with_name(csv.name + ".tmp")  # the CSV last: a half-written pretext is never found
    write_manifest(pd.DataFrame(rows), spec, tmp_csv)
    tmp_csv.with_name(tmp_csv.stem + ".tasks.json").replace(csv.with_name(csv.stem + ".tasks.json"))
    os.replace(tmp_csv, csv)
    return csv
