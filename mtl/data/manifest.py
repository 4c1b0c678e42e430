"""Manifest CSV + task spec: loading, per-task label encoding, and validation (`python -m mtl check`).

A manifest is `<name>.csv` (columns `image`, `group`, `split`, one per task) with a task spec
`<name>.tasks.json` beside it: `{"root": "<dataset root, relative to the spec>", "tasks": [{"name",
"kind", "classes"}, ...]}`. An empty cell means the sample has no label for that task.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from mtl.errors import UserError
from mtl.tasks import LabelError, Task

REQUIRED = ("image", "group", "split")
SPLITS = ("train", "val", "test")
MAX_PROBLEMS = 50


class ManifestError(UserError):
    """A manifest that cannot be used; the message lists the problems one per line."""


def spec_path_for(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.stem + ".tasks.json")


@dataclass
class Manifest:
    path: Path
    spec_path: Path
    root: Path
    tasks: list[Task]
    table: pd.DataFrame  # all cells as str; empty string = missing label
    warnings: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.path.stem

    def task(self, name: str) -> Task:
        for t in self.tasks:
            if t.name == name:
                return t
        raise UserError(f"{self.path}: no task '{name}' (tasks: {', '.join(t.name for t in self.tasks)})")

    def rows(self, split: str) -> pd.DataFrame:
        return self.table[self.table["split"] == split]

    def image_paths(self, split: str) -> list[Path]:
        return [self.root / p for p in self.rows(split)["image"]]

    def targets(self, split: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per-task target arrays and boolean label masks for one split (missing -> placeholder, mask False)."""
        rows = self.rows(split)
        targets, masks = {}, {}
        for t in self.tasks:
            cells = rows[t.name].tolist()
            mask = np.array([c.strip() != "" for c in cells], dtype=bool)
            values = [t.encode(c) if m else t.missing_target() for c, m in zip(cells, mask)]
            dtype = np.int64 if t.kind == "multiclass" else np.float32
            targets[t.name] = np.asarray(values, dtype=dtype)
            masks[t.name] = mask
        return targets, masks


def _line(path: Path, index: int) -> str:
    # CSV line number: header is line 1, so data row i (0-based) is line i + 2
    return f"{path}:{index + 2}"


def read_manifest(path: str | Path) -> tuple[Manifest | None, list[str]]:
    """Read CSV + spec. Returns the manifest (None if unusable) and the problems found while reading."""
    path = Path(path)
    if not path.is_file():
        return None, [f"{path}: manifest not found"]
    spec_path = spec_path_for(path)
    if not spec_path.is_file():
        return None, [f"{spec_path}: task spec not found (expected beside {path.name})"]
    try:
        spec = json.loads(spec_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, [f"{spec_path}: not valid JSON ({e})"]
    if not isinstance(spec, dict) or not isinstance(spec.get("tasks"), list) or "root" not in spec:
        return None, [f"{spec_path}: expected an object with 'root' and a list 'tasks'"]
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except pd.errors.EmptyDataError:
        return None, [f"{path}: empty manifest (no header, no rows)"]
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        return None, [f"{path}: not a readable CSV ({str(e).splitlines()[0]})"]

    problems, warnings = [], []
    missing_cols = [c for c in REQUIRED if c not in table.columns]
    if missing_cols:
        return None, [f"{path}: missing required column(s) {', '.join(missing_cols)}"]
    if table.empty:
        return None, [f"{path}: empty manifest (header but no rows)"]

    tasks = []
    for i, td in enumerate(spec["tasks"]):
        name = td.get("name") if isinstance(td, dict) else None
        if not name:
            problems.append(f"{spec_path}: task #{i + 1} has no name")
            continue
        if name in REQUIRED:
            problems.append(f"{spec_path}: task name '{name}' clashes with a required column")
            continue
        try:
            task = Task.from_dict(td)
        except (LabelError, KeyError, TypeError, ValueError) as e:
            problems.append(f"{spec_path}: {e}")
            continue
        if name not in table.columns:
            problems.append(f"{spec_path}: task '{name}' is in the spec but not a column of {path.name}")
            continue
        tasks.append(task)
    if not spec["tasks"]:
        problems.append(f"{spec_path}: no tasks")
    for col in table.columns:
        if col not in REQUIRED and col not in {t.name for t in tasks} and \
                col not in {td.get("name") for td in spec["tasks"] if isinstance(td, dict)}:
            warnings.append(f"{path}: warning: column '{col}' is no task in the spec; it is ignored")

    root = (spec_path.parent / spec["root"]).resolve()
    tasks = [_fit_regression_scale(t, table) for t in tasks]
    return Manifest(path, spec_path, root, tasks, table, warnings), problems


def _fit_regression_scale(task: Task, table: pd.DataFrame) -> Task:
    """Regression heads predict center + scale*z; center/scale come from the train split unless the spec sets them."""
    if task.kind != "regression" or task.center != 0.0 or task.scale != 1.0:
        return task
    values = []
    for c in table.loc[table["split"] == "train", task.name]:
        try:
            v = float(c)
        except ValueError:
            continue
        if math.isfinite(v):
            values.append(v)
    if len(values) < 2:
        return task
    std = float(np.std(values)) or 1.0
    return Task(task.name, task.kind, task.classes, center=float(np.mean(values)), scale=std)


def validate(m: Manifest, check_images: bool = True) -> list[str]:
    """Every problem of a readable manifest, one line each (file:line: problem)."""
    problems: list[str] = []
    t = m.table
    for i, split in enumerate(t["split"]):
        if split not in SPLITS:
            problems.append(f"{_line(m.path, i)}: split '{split}' is not one of train/val/test")
    for split in SPLITS:
        if not (t["split"] == split).any():
            problems.append(f"{m.path}: split '{split}' is empty")

    first_seen: dict[str, int] = {}
    for i, img in enumerate(t["image"]):
        if img in first_seen:
            problems.append(f"{_line(m.path, i)}: duplicate image '{img}' (first on line {first_seen[img] + 2})")
        else:
            first_seen[img] = i

    group_split: dict[str, tuple[str, int]] = {}
    for i, (g, s) in enumerate(zip(t["group"], t["split"])):
        if g.strip() == "":
            problems.append(f"{_line(m.path, i)}: empty group")
        elif g in group_split and group_split[g][0] != s:
            first_split, first_i = group_split[g]
            problems.append(f"{_line(m.path, i)}: group '{g}' is in split '{s}' but also in "
                            f"'{first_split}' (line {first_i + 2})")
        else:
            group_split.setdefault(g, (s, i))

    for task in m.tasks:
        for i, cell in enumerate(t[task.name]):
            if cell.strip() == "":
                continue
            try:
                task.encode(cell)
            except LabelError as e:
                problems.append(f"{_line(m.path, i)}: {e}")
        if not (t.loc[t["split"] == "train", task.name].str.strip() != "").any():
            problems.append(f"{m.path}: task '{task.name}' has no label at all in the train split")

    root = m.root
    for i, img in enumerate(t["image"]):
        if len(problems) > MAX_PROBLEMS:
            break
        p = Path(img)
        full = (root / p).resolve()
        if p.is_absolute() or not full.is_relative_to(root):
            problems.append(f"{_line(m.path, i)}: image path '{img}' escapes the dataset root {root}")
            continue
        if not check_images:
            continue
        if not full.is_file():
            problems.append(f"{_line(m.path, i)}: image file not found: {full}")
            continue
        try:
            with Image.open(full) as im:
                im.load()
        except Exception as e:  # PIL raises several types for broken files
            problems.append(f"{_line(m.path, i)}: cannot decode image {full} ({type(e).__name__})")
    return problems


def load_manifest(path: str | Path, check_images: bool = False) -> Manifest:
    """Read and validate; raise ManifestError listing the problems (capped) if there are any."""
    m, problems = read_manifest(path)
    if m is not None:
        problems += validate(m, check_images=check_images)
    if problems:
        raise ManifestError(format_problems(problems))
    return m


def format_problems(problems: list[str]) -> str:
    shown = problems[:MAX_PROBLEMS]
    more = len(problems) - len(shown)
    return "\n".join(shown + ([f"... and {more} more problem(s)"] if more > 0 else []))


def summary(m: Manifest) -> str:
    """Rows per split, and labelled/missing/class counts per task."""
    t = m.table
    lines = [f"{m.path}: {len(t)} rows, {t['group'].nunique()} groups, {len(m.tasks)} tasks, root {m.root}"]
    counts = Counter(t["split"])
    lines.append("  splits: " + ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS))
    for task in m.tasks:
        cells = t[task.name].str.strip()
        labelled = cells[cells != ""]
        head = f"  {task.name} ({task.kind}): {len(labelled)} labelled, {len(cells) - len(labelled)} missing"
        if task.kind == "regression":
            vals = labelled.astype(float)
            head += f"; min {vals.min():.3g}, mean {vals.mean():.3g}, max {vals.max():.3g}"
        else:
            c = Counter(x.strip() for cell in labelled for x in (cell.split("|") if task.kind == "multilabel" else [cell]))
            head += "; " + ", ".join(f"{k} {c.get(k, 0)}" for k in task.classes)
        lines.append(head)
    return "\n".join(lines)
