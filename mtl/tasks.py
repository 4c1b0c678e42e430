"""A task of a multi-task dataset: its kind, classes, label encoding/decoding and primary metric."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are used, so `python -m mtl check` starts fast
    import torch

KINDS = ("binary", "multiclass", "multilabel", "regression")
PRIMARY_METRIC = {"binary": "acc", "multiclass": "acc", "multilabel": "f1", "regression": "mae"}
MULTILABEL_SEP = "|"
TASK_KEYS = ("name", "kind", "classes", "center", "scale")


class LabelError(ValueError):
    """A manifest cell that is not a valid label for its task."""


@dataclass(frozen=True)
class Task:
    name: str
    kind: str
    classes: tuple[str, ...] = ()
    # regression only: the head predicts center + scale * z, so it starts at the train mean and
    # the loss and metric stay in the target's own unit (years for age)
    center: float = 0.0
    scale: float = 1.0

    def __post_init__(self):
        if self.kind not in KINDS:
            raise LabelError(f"task '{self.name}': unknown kind '{self.kind}' (expected one of {', '.join(KINDS)})")
        if self.kind == "binary" and len(self.classes) != 2:
            raise LabelError(f"task '{self.name}': a binary task needs exactly 2 classes, got {len(self.classes)}")
        if self.kind in ("multiclass", "multilabel") and len(self.classes) < 2:
            raise LabelError(f"task '{self.name}': a {self.kind} task needs at least 2 classes")
        if len(set(self.classes)) != len(self.classes):
            raise LabelError(f"task '{self.name}': duplicate class names")

    # --- shape and metric -------------------------------------------------------------------
    @property
    def out_dim(self) -> int:
        return len(self.classes) if self.kind in ("multiclass", "multilabel") else 1

    @property
    def primary_metric(self) -> str:
        return PRIMARY_METRIC[self.kind]

    @property
    def direction(self) -> str:
        return "minimize" if self.kind == "regression" else "maximize"

    @property
    def metric_key(self) -> str:
        return f"{self.name}/{self.primary_metric}"

    def better(self, a: float, b: float) -> bool:
        """True when score a beats score b for this task (NaN never wins)."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a < b if self.direction == "minimize" else a > b

    # --- labels -----------------------------------------------------------------------------
    def missing_target(self):
        """Placeholder target for a sample without this label (masked out of loss and metrics)."""
        return [0.0] * len(self.classes) if self.kind == "multilabel" else 0

    def encode(self, cell: str):
        """Manifest cell (non-empty string) -> target value; raises LabelError on a bad label."""
        cell = cell.strip()
        if self.kind == "regression":
            try:
                value = float(cell)
            except ValueError:
                raise LabelError(f"task '{self.name}': '{cell}' is not a number") from None
            if not math.isfinite(value):
                raise LabelError(f"task '{self.name}': value '{cell}' is not finite")
            return value
        if self.kind == "multilabel":
            labels = [p.strip() for p in cell.split(MULTILABEL_SEP)]
            bad = [p for p in labels if p not in self.classes]
            if bad:
                raise LabelError(f"task '{self.name}': unknown label '{bad[0]}' in '{cell}' "
                                 f"(known: {', '.join(self.classes)})")
            return [1.0 if c in labels else 0.0 for c in self.classes]
        if cell not in self.classes:
            raise LabelError(f"task '{self.name}': unknown class '{cell}' (known: {', '.join(self.classes)})")
        return self.classes.index(cell)

    def target_dtype(self) -> torch.dtype:
        import torch
        return torch.long if self.kind == "multiclass" else torch.float32

    def predict(self, output: torch.Tensor, top_k: int = 3):
        """One sample's head output -> a readable prediction (class, list of classes, or number)."""
        if self.kind == "regression":
            return float(output.reshape(()))
        if self.kind == "binary":
            return self.classes[int(output.reshape(()) > 0)]
        if self.kind == "multiclass":
            return self.classes[int(output.argmax())]
        order = output.argsort(descending=True)[:top_k]
        return [self.classes[int(i)] for i in order]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        if self.kind != "regression":
            d.pop("center"), d.pop("scale")
        return d

    @classmethod
    def from_dict(cls, d) -> Task:
        """A task spec entry (JSON object) -> Task; every malformed field raises one LabelError line."""
        if not isinstance(d, dict):
            raise LabelError(f"a task must be a JSON object with name, kind and classes, got {d!r}")
        name = d.get("name")
        if not isinstance(name, str) or not name.strip():
            raise LabelError(f"a task needs a non-empty string 'name', got {name!r}")
        unknown = sorted(set(d) - set(TASK_KEYS))
        if unknown:
            raise LabelError(f"task '{name}': unknown key(s) {', '.join(unknown)} (known: {', '.join(TASK_KEYS)})")
        if "kind" not in d:
            raise LabelError(f"task '{name}': no 'kind' (one of {', '.join(KINDS)})")
        if not isinstance(d["kind"], str):
            raise LabelError(f"task '{name}': 'kind' must be one of {', '.join(KINDS)}, got {d['kind']!r}")
        classes = d.get("classes", [])
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise LabelError(f"task '{name}': 'classes' must be a list of strings, got {classes!r} "
                             f"(write numbers as strings: [\"0\", \"1\"])")
        for c in classes:
            if c != c.strip() or not c:
                raise LabelError(f"task '{name}': class {c!r} is empty or has surrounding spaces")
            if MULTILABEL_SEP in c:
                raise LabelError(f"task '{name}': class {c!r} contains the label separator '{MULTILABEL_SEP}'")
        if d["kind"] == "regression" and classes:
            raise LabelError(f"task '{name}': a regression task has no classes")
        center, scale = d.get("center", 0.0), d.get("scale", 1.0)
        for key, v in (("center", center), ("scale", scale)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise LabelError(f"task '{name}': '{key}' must be a finite number, got {v!r}")
        if scale <= 0:
            raise LabelError(f"task '{name}': 'scale' must be positive, got {scale!r}")
        return cls(name=name, kind=d["kind"], classes=tuple(classes), center=float(center), scale=float(scale))

def display_name(task_name: str) -> str:
    """'fighting_style' -> 'Fighting Style' (captions); 'colors' reads 'Main Colors' as in the write-up."""
    return "Main Colors" if task_name == "colors" else task_name.replace("_", " ").title()
