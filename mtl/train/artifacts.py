"""The files a training run leaves and the files of an mtl model package: one reader and one writer each.

A run's checkpoint directory (`checkpoints/` among a tracked run's artifacts, `checkpoints/<timestamp>/`
from `python -m mtl train`):
- `epoch-<e>.pt`: a plain dict (`model` weights, `criterion` state, `config`, `tasks`, `epoch`; a resumable
  last epoch also `optimizer`, `scheduler`, `rng`), loaded with `weights_only=True` (no pickled code runs);
- `index.json`: `{"best": {task: {"epoch", "score", "file"}}, "last": {"epoch", "file"}}`;
- `val_outputs.pt`: `{"split": "val", "images": [...], "outputs": {task: each task's val outputs at its best epoch}}`.

A model package's `artifacts/` (mtl/serve/pyfunc.py): `spec.json` (`{"tasks", "members": {name: {"base"?}},
"combine"}`), one `<member>.pt` checkpoint each and the warm-start backbones they were stored against.

`TrialArtifacts` reads a tracked run's files through an MLflow client (each at most once, downloaded into
a temporary directory that is removed: what is read stays in memory). Nothing here reads a label.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from mtl.errors import UserError

INDEX = "index.json"
VAL_OUTPUTS = "val_outputs.pt"
SPEC = "spec.json"
RUN_DIR = "checkpoints"  # a tracked run's checkpoint directory among its artifacts
MODEL_DIR = "artifacts"  # a model package's files inside a downloaded MLflow model
CHECKPOINT_KEYS = ("model", "config", "tasks")


def epoch_file(epoch: int) -> str:
    return f"epoch-{epoch}.pt"


# ------------------------------------------------------------------------------------------------
# a checkpoint directory
# ------------------------------------------------------------------------------------------------
def write_index(out_dir: Path, best: dict[str, dict], last_epoch: int) -> None:
    index = {"best": {k: {**v, "file": epoch_file(v["epoch"])} for k, v in best.items()},
             "last": {"epoch": last_epoch, "file": epoch_file(last_epoch)}}
    (Path(out_dir) / INDEX).write_text(json.dumps(index, indent=2))


def parse_index(text: str, source) -> dict:
    """An index's JSON, checked to name a last file; anything else is one line naming `source`."""
    try:
        index = json.loads(text)
        index["last"]["file"]
    except (ValueError, KeyError, TypeError):
        raise UserError(f"{source}: not a checkpoint index (no last.file)") from None
    return index


def read_index(ckpt_dir: Path) -> dict:
    path = Path(ckpt_dir) / INDEX
    try:
        return parse_index(path.read_text(), path)
    except FileNotFoundError:
        raise UserError(f"{ckpt_dir}: no {INDEX}: not a checkpoint directory written by mtl") from None


def is_checkpoint_dir(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / INDEX).is_file()


def last_checkpoint_path(ckpt_dir: Path) -> Path:
    return Path(ckpt_dir) / read_index(ckpt_dir)["last"]["file"]


def write_val_outputs(out_dir: Path, images: list[str], outputs: dict) -> None:
    torch.save({"split": "val", "images": list(images), "outputs": outputs}, Path(out_dir) / VAL_OUTPUTS)


def read_val_outputs(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict, loaded safely (weights_only: no pickled code runs) and checked to be ours;
    a directory means its last epoch (`index.json`). Anything else is one clear line."""
    path = Path(path)
    if path.is_dir():
        path = last_checkpoint_path(path)
    if not path.is_file():
        raise UserError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, tampered, not a torch file, or a payload weights_only refuses
        raise UserError(f"{path}: not a readable checkpoint ({type(e).__name__})") from None
    if not isinstance(ckpt, dict):
        raise UserError(f"{path}: holds a {type(ckpt).__name__}, not an mtl checkpoint (a dict with "
                        f"{', '.join(CHECKPOINT_KEYS)})")
    missing = [k for k in CHECKPOINT_KEYS if k not in ckpt]
    if missing:
        raise UserError(f"{path}: not an mtl checkpoint (no {', '.join(missing)})")
    ckpt["source"] = str(path)
    return ckpt


# ------------------------------------------------------------------------------------------------
# a model package
# ------------------------------------------------------------------------------------------------
def write_spec(out_dir: Path, tasks, members: dict[str, dict], combine: dict) -> Path:
    """The package's spec: its tasks, each member's entry (`base`: the backbone file it was stored against)
    and, per task, the members it combines with their weights."""
    path = Path(out_dir) / SPEC
    path.write_text(json.dumps({"tasks": [t.to_dict() for t in tasks], "members": members, "combine": combine}, indent=2))
    return path


def read_spec(path: Path) -> dict:
    """A package's spec from its file (`spec.json`) or from a downloaded model's folder."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_DIR / SPEC
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path.parent.parent}: not an mtl model (no {MODEL_DIR}/{SPEC})") from None
    except ValueError:
        raise UserError(f"{path}: not a readable model spec") from None


def is_model_package(path: Path) -> bool:
    """Whether `path` is a downloaded mtl MLflow model (its `artifacts/spec.json`)."""
    return Path(path).is_dir() and (Path(path) / MODEL_DIR / SPEC).is_file()


# ------------------------------------------------------------------------------------------------
# a tracked run's files
# ------------------------------------------------------------------------------------------------
class TrialArtifacts:
    """One tracked run's checkpoint directory, read through an MLflow client: its index (each task's best epoch
    and file, the last), its checkpoints and its saved val outputs, each downloaded at most once."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id
        self._index: dict | None = None
        self._val: dict | None = None

    def _read(self, name: str, reader):
        with tempfile.TemporaryDirectory(prefix="mtl-artifact-") as tmp:
            return reader(Path(self.client.download_artifacts(self.run_id, f"{RUN_DIR}/{name}", tmp)))

    @property
    def index(self) -> dict:
        if self._index is None:
            self._index = self._read(INDEX, lambda p: parse_index(p.read_text(), f"run {self.run_id}: {RUN_DIR}/{INDEX}"))
        return self._index

    def best(self, task: str) -> dict:
        """The task's best epoch, its val score and its file."""
        return self.index["best"][task]

    def best_file(self, task: str) -> str:
        return self.best(task)["file"]

    def best_epochs(self) -> dict[str, int]:
        return {t: int(b["epoch"]) for t, b in self.index["best"].items()}

    def checkpoint(self, file: str) -> dict:
        return self._read(file, load_checkpoint)

    def best_checkpoint(self, task: str) -> dict:
        return self.checkpoint(self.best_file(task))

    def val_outputs(self) -> dict:
        """What training saved of its val outputs (`{}` for a run that saved none)."""
        if self._val is None:
            try:
                self._val = self._read(VAL_OUTPUTS, read_val_outputs)
            except Exception:  # runs of older versions have none
                self._val = {}
        return self._val
