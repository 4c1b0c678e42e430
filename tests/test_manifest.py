"""Manifest loading, `python -m mtl check` on good and bad input, rendering, importers, dataset."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mtl.__main__ import main
from mtl.data.dataset import MultiTaskDataset
from mtl.data.manifest import load_manifest, read_manifest, validate
from mtl.data.render import assign_splits, make_fgo_manifest, render_manifest
from tests.conftest import make_set


@pytest.fixture
def good(tmp_path, fgo_small) -> Path:
    """A private copy of the small FGO set that a test may break."""
    dst = tmp_path / "set"
    shutil.copytree(fgo_small.parent, dst)
    return dst / fgo_small.name


def edit_csv(csv: Path, fn) -> None:
    t = pd.read_csv(csv, dtype=str, keep_default_na=False)
    t = fn(t)
    t.to_csv(csv, index=False)


def edit_spec(csv: Path, fn) -> None:
    p = csv.with_name(csv.stem + ".tasks.json")
    p.write_text(json.dumps(fn(json.loads(p.read_text()))))


def check(csv: Path, capsys) -> tuple[int, str, str]:
    rc = main(["check", str(csv)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_good_manifest_summary(good, capsys):
    rc, out, err = check(good, capsys)
    assert rc == 0, err
    assert "splits: train" in out and "alignment (multiclass)" in out
    assert "missing" in out and "Female" in out


def set_cell(row, col, value):
    def fn(t):
        t.loc[row, col] = value
        return t
    return fn


BAD_CSV_CASES = {
    "unknown class": (set_cell(0, "region", "Atlantis"), "unknown class 'Atlantis'"),
    "unknown multilabel": (set_cell(1, "colors", "Red|Teal"), "unknown label 'Teal'"),
    "bad split": (set_cell(2, "split", "holdout"), "split 'holdout' is not one of"),
    "escape root": (set_cell(3, "image", "../../etc/passwd"), "escapes the dataset root"),
    "absolute path": (set_cell(3, "image", "/etc/passwd"), "escapes the dataset root"),
    "missing file": (set_cell(4, "image", "train/nope.png"), "image file not found"),
    "duplicate": (lambda t: pd.concat([t, t.iloc[[0]]], ignore_index=True), "duplicate image"),
    "group in two splits": (lambda t: t.assign(group=t["group"].where(t["split"] != "val", t["group"].iloc[0])),
                            "also in"),
    "empty split": (lambda t: t[t["split"] != "test"], "split 'test' is empty"),
    "no train label": (lambda t: t.assign(alignment=t["alignment"].where(t["split"] != "train", "")),
                       "task 'alignment' has no label at all in the train split"),
}


@pytest.mark.parametrize("case", list(BAD_CSV_CASES))
def test_bad_csv_gives_clear_line(good, capsys, case):
    fn, needle = BAD_CSV_CASES[case]
    edit_csv(good, fn)
    rc, out, err = check(good, capsys)
    assert rc != 0
    assert needle in err
    assert "Traceback" not in err
    line = next(x for x in err.splitlines() if needle in x)
    assert str(good) in line or good.name in line  # names the file
    if case in ("unknown class", "unknown multilabel", "bad split", "escape root", "missing file"):
        assert f"{good}:" in line and line.split(":")[1].isdigit()  # ... and the line


def test_row_number_is_csv_line(good, capsys):
    edit_csv(good, set_cell(0, "region", "Atlantis"))
    _, _, err = check(good, capsys)
    assert f"{good}:2: task 'region'" in err  # header is line 1, first row line 2


@pytest.mark.parametrize("value,needle", [("abc", "is not a number"), ("nan", "is not finite"),
                                          ("inf", "is not finite")])
def test_bad_regression_value(tmp_path, utk_small, capsys, value, needle):
    dst = tmp_path / "u"
    shutil.copytree(utk_small.parent, dst)
    csv = dst / utk_small.name
    edit_csv(csv, set_cell(5, "age", value))
    rc, _, err = check(csv, capsys)
    assert rc != 0 and needle in err and f"{csv}:7" in err


def test_undecodable_image(good, capsys):
    m = load_manifest(good)
    (m.root / m.table["image"].iloc[0]).write_bytes(b"not a png at all")
    rc, _, err = check(good, capsys)
    assert rc != 0 and "cannot decode image" in err


def test_unknown_kind_and_spec_task_missing(good, capsys):
    def fn(spec):
        spec["tasks"][0]["kind"] = "ordinal"
        spec["tasks"].append({"name": "rarity", "kind": "multiclass", "classes": ["a", "b"]})
        return spec
    edit_spec(good, fn)
    rc, _, err = check(good, capsys)
    assert rc != 0
    assert "unknown kind 'ordinal'" in err
    assert "task 'rarity' is in the spec but not a column" in err


def test_extra_column_is_a_warning(good, capsys):
    edit_csv(good, lambda t: t.assign(notes="x"))
    rc, out, err = check(good, capsys)
    assert rc == 0
    assert "warning: column 'notes' is no task" in err


def test_empty_manifest(good, capsys):
    good.write_text("image,group,split,gender,region,fighting_style,alignment,colors\n")
    rc, _, err = check(good, capsys)
    assert rc != 0 and "empty manifest" in err
    good.write_text("")
    rc, _, err = check(good, capsys)
    assert rc != 0 and "empty manifest" in err


def test_missing_manifest_and_spec(tmp_path, capsys):
    rc, _, err = check(tmp_path / "none.csv", capsys)
    assert rc != 0 and "manifest not found" in err
    (tmp_path / "x.csv").write_text("image,group,split\n")
    rc, _, err = check(tmp_path / "x.csv", capsys)
    assert rc != 0 and "task spec not found" in err


def test_problems_are_collected_and_capped(good, capsys):
    edit_csv(good, lambda t: t.assign(region="Atlantis"))
    rc, _, err = check(good, capsys)
    assert rc != 0
    assert err.count("unknown class 'Atlantis'") == 50
    assert "more problem(s)" in err


def test_check_cli_subprocess_exit_code(good):
    edit_csv(good, set_cell(0, "gender", "Robot"))
    p = subprocess.run([sys.executable, "-m", "mtl", "check", str(good)], capture_output=True, text=True)
    assert p.returncode != 0 and "unknown class 'Robot'" in p.stderr and "Traceback" not in p.stderr


def test_render_is_deterministic(tmp_path):
    a = make_set(tmp_path / "a", "fgo", n_chars=6, per_char=2)
    m = load_manifest(a)
    digest = lambda: {p: hashlib.sha256((m.root / p).read_bytes()).hexdigest() for p in m.table["image"]}  # noqa
    first = digest()
    render_manifest(m, "fgo", 32)
    assert digest() == first


def test_committed_manifests_are_valid_and_grouped():
    for name in ("fgo_synth", "utk_synth"):
        m, problems = read_manifest(f"data_manifests/{name}.csv")
        assert problems == []
        assert validate(m, check_images=False) == []
        for split in ("val", "test"):  # enough groups for a score to mean something
            assert m.rows(split)["group"].nunique() >= 40 and len(m.rows(split)) >= 160
    m = load_manifest("data_manifests/fgo_synth.csv")
    tasks = [t.name for t in m.tasks]
    assert 0.05 <= (m.table[tasks] == "").to_numpy().mean() <= 0.10  # partial labels
    assert 0.08 < (m.table["alignment"] == "").mean() < 0.16
    for t in m.tasks:
        if t.kind in ("binary", "multiclass"):
            counts = m.table.drop_duplicates("group")[t.name].value_counts()
            assert counts.max() - counts.min() <= 1  # balanced over characters


def test_assign_splits_never_splits_a_group():
    groups = [f"g{i % 37}" for i in range(500)]
    s = assign_splits(groups, seed=3)
    assert set(s.values()) == {"train", "val", "test"}
    assert len(s) == 37


def test_dataset_targets_masks_and_collate(fgo_small):
    m = load_manifest(fgo_small)
    ds = MultiTaskDataset(m, "train", image_size=32)
    x, targets, masks = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert targets["colors"].shape == (8,) and targets["alignment"].dtype == torch.int64
    loader = torch.utils.data.DataLoader(ds, batch_size=len(ds))
    xb, tb, mb = next(iter(loader))
    assert xb.shape[0] == len(ds)
    expected_missing = (m.rows("train")["alignment"] == "").to_numpy()
    assert np.array_equal(~mb["alignment"].numpy(), expected_missing)
    assert ds.images.dtype == torch.uint8  # decoded once into the uint8 cache


def test_import_fgo(tmp_path, capsys):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    table, _ = make_fgo_manifest(n_chars=8, per_char=2)
    rows = []
    from PIL import Image
    for i, r in table.iterrows():
        name = f"{r['group']}_{i % 2}.png"
        Image.new("RGB", (16, 16), (i, 0, 0)).save(imgs / name)
        row = {"image_name": name}
        for c in ["Female", "Male"]:
            row[f"gender_{c}"] = int(r["gender"] == c)
        for c in ["Asia", "Egypt", "Europe", "Middle East"]:
            row[f"region_{c}"] = int(r["region"] == c)
        for c in ["magic", "melee", "ranged"]:
            row[f"fighting_type_{c}"] = int(r["fighting_style"] == c)
        for c in ["LG", "NG", "CG", "LN", "TN", "CN", "LE", "NE", "CE"]:
            row[f"alignment_{c}"] = int(r["alignment"] == c)
        for c in ["White", "Red", "Green", "Black", "Blue", "Purple", "Gold", "Silver"]:
            row[c.lower()] = int(c in r["colors"].split("|"))
        rows.append(row)
    src = pd.DataFrame(rows)
    src.to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "fgo.csv"
    assert main(["data", "import-fgo", str(tmp_path / "labels.csv"), str(imgs), "--out", str(out)]) == 0
    m = load_manifest(out, check_images=True)
    assert [t.name for t in m.tasks] == ["gender", "region", "fighting_style", "alignment", "colors"]
    assert m.table.groupby("group")["split"].nunique().max() == 1
    first = m.table.iloc[0]
    assert first["colors"] == "|".join(c for c in ["White", "Red", "Green", "Black", "Blue", "Purple", "Gold", "Silver"]
                                       if c in table.iloc[0]["colors"].split("|"))
    assert (m.table["alignment"] == table["alignment"]).all()
    # two classes set at once: one clear line naming file and row
    src.loc[3, "gender_Female"] = 1
    src.loc[3, "gender_Male"] = 1
    src.to_csv(tmp_path / "labels.csv", index=False)
    capsys.readouterr()
    assert main(["data", "import-fgo", str(tmp_path / "labels.csv"), str(imgs), "--out", str(out)]) != 0
    assert "labels.csv:5: task 'gender' has several classes set" in capsys.readouterr().err


def test_import_utkface(tmp_path, capsys):
    from PIL import Image
    d = tmp_path / "UTKFace"
    d.mkdir()
    good = ["30_0_3_20170117145159065.jpg.chip.jpg", "1_1_0_20161219200338012.jpg.chip.jpg",
            "85_1_4_20170110123456789.jpg.chip.jpg"]
    bad = ["39_1_20170116174525125.jpg.chip.jpg", "notes.txt", "30_2_0_2017.jpg.chip.jpg"]
    for n in good + bad:
        Image.new("RGB", (8, 8)).save(d / n, format="JPEG")
    out = tmp_path / "utk.csv"
    assert main(["data", "import-utkface", str(d), "--out", str(out)]) == 0
    assert "skipped 3 malformed" in capsys.readouterr().out
    m, problems = read_manifest(out)
    t = m.table.set_index("image")
    assert t.loc[good[0], "age"] == "30" and t.loc[good[0], "gender"] == "Male" and t.loc[good[0], "race"] == "Indian"
    assert t.loc[good[1], "gender"] == "Female" and t.loc[good[1], "race"] == "White"
    assert m.task("age").kind == "regression"
