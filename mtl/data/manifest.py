"""Manifest CSV + task spec: loading, per-task label encoding, and validation (`python -m mtl check`).

A manifest is `<name>.csv` (columns `image`, `group`, `split`, one per task) with a task spec
`<name>.tasks.json` beside it: `{"root": "<dataset root, relative to the spec>", "tasks": [{"name",
"kind", "classes"}, ...]}`. An empty cell means the sample has no label for that task.
"""

from __future__ import annotations

import csv
import json
import os
import unicodedata
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
SPEC_KEYS = ("root", "tasks", "render")
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
    lines: list[int] | None = None  # CSV line of each table row (quoted newlines and blank lines counted)

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

    def groups(self, split: str) -> np.ndarray:
        """Normalised group key of each row of a split (what the group bootstrap resamples)."""
        return np.array([group_key(g) for g in self.rows(split)["group"]], dtype=object)

    def line(self, index: int) -> str:
        """`file:line` of table row `index` (0-based)."""
        n = self.lines[index] if self.lines is not None else index + 2
        return f"{self.path}:{n}"

    def targets(self, split: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per-task target arrays and boolean label masks for one split (missing -> placeholder, mask False)."""
        rows = self.rows(split)
        targets, masks = {}, {}
        for t in self.tasks:
            cells = rows[t.name].tolist()
            mask = np.array([c.strip() != "" for c in cells], dtype=bool)
            values = [t.encode(c) if m else t.missing_target() for c, m in zip(cells, mask)]
            targets[t.name] = np.asarray(values, dtype=t.kind_impl.numpy_dtype)
            masks[t.name] = mask
        return targets, masks


def group_key(group: str) -> str:
    """Identity of a group as compared across splits: Unicode-normalised (NFKC), whitespace collapsed,
    case-folded, so `g0 `, `G0` and `g0` are one character and cannot sit in two splits."""
    return " ".join(unicodedata.normalize("NFKC", group).split()).casefold()


def _read_csv(path: Path) -> tuple[list[str], list[list[str]], list[int], list[str]]:
    """Header, rows, each row's line number and the problems of the CSV's shape. The csv module (not
    pandas) so that a short row or a repeated column is reported, not silently padded or renamed."""
    problems: list[str] = []
    header: list[str] = []
    rows, lines = [], []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            end = 0  # line where the previous record ended (a quoted cell may span lines)
            for row in reader:
                start, end = end + 1, reader.line_num
                if not row:  # a blank line
                    continue
                if not header:
                    header = [c.strip() for c in row]
                elif len(row) != len(header):
                    problems.append(f"{path}:{start}: {len(row)} field(s) but the header has {len(header)}")
                else:
                    rows.append(row)
                    lines.append(start)
    except UnicodeDecodeError:
        return [], [], [], [f"{path}: not UTF-8 text"]
    except csv.Error as e:
        return [], [], [], [f"{path}:{reader.line_num}: not a readable CSV ({e})"]
    seen: dict[str, int] = {}
    for i, col in enumerate(header):
        if col in seen:
            problems.append(f"{path}:1: column '{col}' appears twice (columns {seen[col] + 1} and {i + 1})")
        elif col == "":
            problems.append(f"{path}:1: column {i + 1} has no name")
        seen.setdefault(col, i)
    return header, rows, lines, problems


def _read_spec(spec_path: Path) -> tuple[dict | None, list[str]]:
    """The task spec as a dict with a string 'root' and a list 'tasks', or the problems."""
    try:
        spec = json.loads(spec_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, [f"{spec_path}: not valid JSON ({e})"]
    if not isinstance(spec, dict) or not isinstance(spec.get("tasks"), list) or "root" not in spec:
        return None, [f"{spec_path}: expected an object with 'root' and a list 'tasks'"]
    problems = []
    if not isinstance(spec["root"], str) or not spec["root"].strip() or "\x00" in spec["root"]:
        problems.append(f"{spec_path}: 'root' must be a non-empty path string, got {json.dumps(spec['root'])}")
    unknown = sorted(set(spec) - set(SPEC_KEYS))
    if unknown:
        problems.append(f"{spec_path}: unknown key(s) {', '.join(unknown)} (known: {', '.join(SPEC_KEYS)})")
    if not spec["tasks"]:
        problems.append(f"{spec_path}: no tasks")
    return (None if problems else spec), problems


def read_manifest(path: str | Path) -> tuple[Manifest | None, list[str]]:
    """Read CSV + spec. Returns the manifest (None if unusable) and the problems found while reading."""
    path = Path(path)
    if not path.is_file():
        hint = ("" if not path.parent.name.startswith("multimnist") else
                f" (make data-multimnist{' SIZE=full' if path.parent.name.endswith('_full') else ''} writes it)")
        return None, [f"{path}: manifest not found{hint}"]
    spec_path = spec_path_for(path)
    if not spec_path.is_file():
        return None, [f"{spec_path}: task spec not found (expected beside {path.name})"]
    spec, problems = _read_spec(spec_path)
    if spec is None:
        return None, problems
    header, rows, lines, problems = _read_csv(path)
    if not header:
        return None, problems or [f"{path}: empty manifest (no header, no rows)"]
    missing_cols = [c for c in REQUIRED if c not in header]
    if missing_cols:
        return None, problems + [f"{path}: missing required column(s) {', '.join(missing_cols)}"]
    if problems:  # short rows or repeated columns: nothing below could be trusted
        return None, problems
    if not rows:
        return None, [f"{path}: empty manifest (header but no rows)"]
    table = pd.DataFrame(rows, columns=header, dtype=str)

    warnings, tasks, first = [], [], {}
    for i, td in enumerate(spec["tasks"]):
        try:
            task = Task.from_dict(td)
        except LabelError as e:
            problems.append(f"{spec_path}: task #{i + 1}: {e}")
            continue
        if task.name in first:
            problems.append(f"{spec_path}: task '{task.name}' is listed twice (#{first[task.name] + 1} and #{i + 1})")
            continue
        first[task.name] = i
        if task.name in REQUIRED:
            problems.append(f"{spec_path}: task name '{task.name}' clashes with a required column")
        elif task.name not in table.columns:
            problems.append(f"{spec_path}: task '{task.name}' is in the spec but not a column of {path.name}")
        else:
            tasks.append(task)
    for col in table.columns:
        if col not in REQUIRED and col not in first:
            warnings.append(f"{path}: warning: column '{col}' is no task in the spec; it is ignored")

    root = (spec_path.parent / spec["root"]).resolve()
    tasks = [_fit_regression_scale(t, table) for t in tasks]
    return Manifest(path, spec_path, root, tasks, table, warnings, lines), problems


def _fit_regression_scale(task: Task, table: pd.DataFrame) -> Task:
    """What the task's kind learns from the train split's labels (regression: center/scale, unless set)."""
    return task.kind_impl.fit(task, table.loc[table["split"] == "train", task.name].tolist())


def validate(m: Manifest, check_images: bool = True) -> list[str]:
    """Every problem of a readable manifest, one line each (file:line: problem)."""
    problems: list[str] = []
    t = m.table
    for i, split in enumerate(t["split"]):
        if split not in SPLITS:
            problems.append(f"{m.line(i)}: split '{split}' is not one of train/val/test")
    for split in SPLITS:
        if not (t["split"] == split).any():
            problems.append(f"{m.path}: split '{split}' is empty")
    problems += _group_problems(m)
    for task in m.tasks:
        for i, cell in enumerate(t[task.name]):
            if cell.strip() == "":
                continue
            try:
                task.encode(cell)
            except LabelError as e:
                problems.append(f"{m.line(i)}: {e}")
        if not (t.loc[t["split"] == "train", task.name].str.strip() != "").any():
            problems.append(f"{m.path}: task '{task.name}' has no label at all in the train split")
    return problems + _image_problems(m, check_images, budget=MAX_PROBLEMS - len(problems))


def _group_problems(m: Manifest) -> list[str]:
    """Empty groups, and one identity (compared by `group_key`) in two splits: a leak."""
    problems, first = [], {}
    for i, (g, s) in enumerate(zip(m.table["group"], m.table["split"])):
        key = group_key(g)
        if not key:
            problems.append(f"{m.line(i)}: empty group")
            continue
        j = first.setdefault(key, i)
        first_split = m.table["split"].iat[j]
        if first_split != s:
            same = "" if m.table["group"].iat[j] == g else f" (the same identity as '{m.table['group'].iat[j]}')"
            problems.append(f"{m.line(i)}: group '{g}' is in split '{s}' but also in '{first_split}' "
                            f"(line {m.line(j).rsplit(':', 1)[1]}){same}")
    return problems


def _file_key(full: Path):
    """What makes two paths the same image: the file itself (device, inode: symlinks, case-insensitive
    file systems and `./` all agree), or the normalised resolved path where the file does not exist."""
    try:
        st = os.stat(full)
        return ("file", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.normcase(str(full)))


def _image_problems(m: Manifest, check_images: bool, budget: int) -> list[str]:
    """Paths inside the root, each file named once (compared as files, not strings), files that decode."""
    problems: list[str] = []
    first: dict = {}
    for i, img in enumerate(m.table["image"]):
        if len(problems) > budget:
            break
        if "\x00" in img or not img.strip():
            problems.append(f"{m.line(i)}: image path {img!r} is empty or holds a NUL byte")
            continue
        p = Path(img)
        full = (m.root / p).resolve()
        if p.is_absolute() or not full.is_relative_to(m.root):
            problems.append(f"{m.line(i)}: image path '{img}' escapes the dataset root {m.root}")
            continue
        j = first.setdefault(_file_key(full), i)
        if j != i:
            other, s_i, s_j = m.table["image"].iat[j], m.table["split"].iat[i], m.table["split"].iat[j]
            line_j = m.line(j).rsplit(":", 1)[1]
            if s_i != s_j:
                problems.append(f"{m.line(i)}: image '{img}' ({s_i}) is the same file as '{other}' on line {line_j} "
                                f"({s_j}): one image in two splits")
            else:
                problems.append(f"{m.line(i)}: duplicate image '{img}' (same file as line {line_j})")
            continue
        if not check_images:
            continue
        if not full.is_file():
            problems.append(f"{m.line(i)}: image file not found: {full}")
            continue
        try:
            with Image.open(full) as im:
                im.load()
        except Exception as e:  # PIL raises several types for broken files
            problems.append(f"{m.line(i)}: cannot decode image {full} ({type(e).__name__})")
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
    lines = [f"{m.path}: {len(t)} rows, {t['group'].map(group_key).nunique()} groups, {len(m.tasks)} tasks, root {m.root}"]
    counts = Counter(t["split"])
    lines.append("  splits: " + ", ".join(f"{s} {counts.get(s, 0)}" for s in SPLITS))
    for task in m.tasks:
        cells = t[task.name].str.strip()
        labelled = cells[cells != ""]
        head = f"  {task.name} ({task.kind}): {len(labelled)} labelled, {len(cells) - len(labelled)} missing"
        head += "; " + task.kind_impl.describe(task, labelled.tolist())
        lines.append(head)
    return "\n".join(lines)
