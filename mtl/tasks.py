"""A task of a multi-task dataset: its kind, classes, label encoding/decoding and primary metric."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where tensors are used, so `python -m mtl check` starts fast
    import torch

from mtl import kinds
from mtl.kinds import LabelError
from mtl.kinds.base import MULTILABEL_SEP

TASK_KEYS = ("name", "kind", "classes", "center", "scale", "title")
__all__ = ["LabelError", "MULTILABEL_SEP", "Task"]


@dataclass(frozen=True)
class Task:
    """A task of a dataset. What its kind means lives in mtl/kinds/<kind>.py; `kind_impl` is that kind's object."""

    name: str
    kind: str
    classes: tuple[str, ...] = ()
    # regression only: the head predicts center + scale * z, so it starts at the train mean and
    # the loss and metric stay in the target's own unit (years for age)
    center: float = 0.0
    scale: float = 1.0
    title: str = ""  # how captions name the task (the dataset spec's word, e.g. "Main Colors")

    def __post_init__(self):
        self.kind_impl.validate(self)
        if len(set(self.classes)) != len(self.classes):
            raise LabelError(f"task '{self.name}': duplicate class names")

    def replace(self, **changes) -> Task:
        return dataclasses.replace(self, **changes)

    @property
    def kind_impl(self) -> kinds.Kind:
        """The `Kind` that `kind` names (mtl/kinds/<kind>.py): encoding, head, loss, metrics, decoding."""
        return kinds.get(self.kind)

    # --- shape and metric -------------------------------------------------------------------
    @property
    def out_dim(self) -> int:
        return self.kind_impl.out_dim(self)

    @property
    def primary_metric(self) -> str:
        return self.kind_impl.primary_metric

    @property
    def direction(self) -> str:
        return self.kind_impl.direction

    @property
    def metric_key(self) -> str:
        return f"{self.name}/{self.primary_metric}"

    @property
    def score_scale(self) -> float:
        return self.kind_impl.score_scale(self)

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
        return self.kind_impl.missing_target(self)

    def encode(self, cell: str):
        """Manifest cell (non-empty string) -> target value; raises LabelError on a bad label."""
        return self.kind_impl.encode(self, cell)

    def target_dtype(self) -> torch.dtype:
        return self.kind_impl.target_dtype()

    def predict(self, output: torch.Tensor):
        """One sample's head output -> the prediction the metrics score (class, list of classes, or number)."""
        return self.kind_impl.decode(self, output)

    @property
    def display_name(self) -> str:
        """How captions and tables name the task: the spec's `title`, else 'fighting_style' -> 'Fighting Style'."""
        return self.title or self.name.replace("_", " ").title()

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        if not d["title"]:
            d.pop("title")
        if self.kind_impl.has_classes:
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
        known = ", ".join(kinds.names())
        if "kind" not in d:
            raise LabelError(f"task '{name}': no 'kind' (one of {known})")
        if not isinstance(d["kind"], str) or d["kind"] not in kinds.names():
            raise LabelError(f"task '{name}': unknown kind {d['kind']!r} (expected one of {known})")
        classes = d.get("classes", [])
        if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
            raise LabelError(f"task '{name}': 'classes' must be a list of strings, got {classes!r} "
                             f"(write numbers as strings: [\"0\", \"1\"])")
        for c in classes:
            if c != c.strip() or not c:
                raise LabelError(f"task '{name}': class {c!r} is empty or has surrounding spaces")
            if MULTILABEL_SEP in c:
                raise LabelError(f"task '{name}': class {c!r} contains the label separator '{MULTILABEL_SEP}'")
        center, scale = d.get("center", 0.0), d.get("scale", 1.0)
        for key, v in (("center", center), ("scale", scale)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise LabelError(f"task '{name}': '{key}' must be a finite number, got {v!r}")
        if scale <= 0:
            raise LabelError(f"task '{name}': 'scale' must be positive, got {scale!r}")
        title = d.get("title", "")
        if not isinstance(title, str):
            raise LabelError(f"task '{name}': 'title' must be a string, got {title!r}")
        return cls(name=name, kind=d["kind"], classes=tuple(classes), center=float(center), scale=float(scale),
                   title=title.strip())
