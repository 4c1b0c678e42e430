"""Importers for the real data the seeds used: the FGO notebook's one-hot CSV and UTKFace file names."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from mtl.data.manifest import spec_path_for
from mtl.data.render import FGO_TASKS, UTK_RACES, assign_splits, fgo_task_spec, write_manifest
from mtl.errors import UserError

# FGO notebook column prefixes -> our task names; colours are bare lower-case columns
FGO_PREFIX = {"gender": "gender_", "region": "region_", "fighting_style": "fighting_type_", "alignment": "alignment_"}
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def default_group(image_name: str) -> str:
    """A character id from a file name: the stem without trailing digits (`saber_alter_03.png` -> `saber_alter`)."""
    stem = Path(image_name).stem
    return re.sub(r"[\W_]*\d+$", "", stem) or stem


def import_fgo(labels_csv: Path, images_dir: Path, out_csv: Path, seed: int = 0) -> str:
    """FGO notebook CSV (image_name + one-hot columns) -> manifest + spec with our task names."""
    if not labels_csv.is_file():
        raise UserError(f"{labels_csv}: labels CSV not found")
    if not images_dir.is_dir():
        raise UserError(f"{images_dir}: images directory not found")
    try:
        src = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as e:
        raise UserError(f"{labels_csv}: not a readable CSV ({type(e).__name__})") from None
    if "image_name" not in src.columns:
        raise UserError(f"{labels_csv}: no 'image_name' column")
    columns = {}
    for task, prefix in FGO_PREFIX.items():
        classes = FGO_TASKS[task][1]
        cols = {c: f"{prefix}{c}" for c in classes}
        missing = [col for col in cols.values() if col not in src.columns]
        if missing:
            raise UserError(f"{labels_csv}: missing one-hot column(s) {', '.join(missing)}")
        columns[task] = cols
    colours = FGO_TASKS["colors"][1]
    missing = [c.lower() for c in colours if c.lower() not in src.columns]
    if missing:
        raise UserError(f"{labels_csv}: missing colour column(s) {', '.join(missing)}")

    def flag(cell: str, line: int, col: str) -> bool:
        v = cell.strip()
        if v in ("1", "1.0", "True", "true"):
            return True
        if v in ("0", "0.0", "", "False", "false"):
            return False
        raise UserError(f"{labels_csv}:{line}: column '{col}' holds '{cell}', expected 0 or 1")

    rows = []
    for i, r in src.iterrows():
        line = i + 2
        name = r["image_name"].strip()
        if not (images_dir / name).is_file():
            raise UserError(f"{labels_csv}:{line}: image '{name}' not found in {images_dir}")
        row = {"image": name, "group": default_group(name)}
        for task, cols in columns.items():
            hot = [c for c, col in cols.items() if flag(r[col], line, col)]
            if len(hot) > 1:
                raise UserError(f"{labels_csv}:{line}: task '{task}' has several classes set ({', '.join(hot)})")
            row[task] = hot[0] if hot else ""  # all-zero one-hot = label missing
        row["colors"] = "|".join(c for c in colours if flag(r[c.lower()], line, c.lower()))
        rows.append(row)
    if not rows:
        raise UserError(f"{labels_csv}: no rows")
    table = pd.DataFrame(rows)
    splits = assign_splits(table["group"].tolist(), seed)
    table.insert(2, "split", table["group"].map(splits))
    spec = {"root": _relative_root(images_dir, out_csv),
            "tasks": [fgo_task_spec(k) for k in FGO_TASKS]}
    write_manifest(table, spec, out_csv)
    return (f"wrote {out_csv} and {spec_path_for(out_csv).name}: {len(table)} images, "
            f"{table['group'].nunique()} characters (groups from file names)")


UTK_NAME = re.compile(r"^(\d+)_([01])_([0-4])_(\d+)\.jpg\.chip\.jpg$")


def import_utkface(images_dir: Path, out_csv: Path, seed: int = 0) -> str:
    """UTKFace `age_gender_race_datetime.jpg.chip.jpg` names -> manifest; malformed names are skipped and counted.

    UTKFace has no identity ids, so each image is its own group; gender 0 = Male, 1 = Female;
    race 0..4 = White, Black, Asian, Indian, Others (the dataset's documented coding).
    """
    if not images_dir.is_dir():
        raise UserError(f"{images_dir}: images directory not found")
    rows, skipped = [], []
    for p in sorted(images_dir.rglob("*")):
        if not p.is_file():
            continue
        m = UTK_NAME.match(p.name)
        if not m or not 1 <= int(m.group(1)) <= 120:
            skipped.append(p.name)
            continue
        rel = p.relative_to(images_dir).as_posix()
        rows.append({"image": rel, "group": p.name.split(".")[0], "age": m.group(1),
                     "gender": ["Male", "Female"][int(m.group(2))], "race": UTK_RACES[int(m.group(3))]})
    if not rows:
        raise UserError(f"{images_dir}: no file named like age_gender_race_datetime.jpg.chip.jpg "
                        f"({len(skipped)} skipped)")
    table = pd.DataFrame(rows)
    splits = assign_splits(table["group"].tolist(), seed)
    table.insert(2, "split", table["group"].map(splits))
    spec = {"root": _relative_root(images_dir, out_csv),
            "tasks": [{"name": "age", "kind": "regression"},
                      {"name": "gender", "kind": "binary", "classes": ["Male", "Female"]},
                      {"name": "race", "kind": "multiclass", "classes": UTK_RACES}]}
    write_manifest(table, spec, out_csv)
    note = f"; skipped {len(skipped)} malformed name(s), e.g. {skipped[0]}" if skipped else ""
    return f"wrote {out_csv}: {len(table)} images{note}"


def _relative_root(images_dir: Path, out_csv: Path) -> str:
    import os
    return os.path.relpath(images_dir.resolve(), out_csv.resolve().parent)
