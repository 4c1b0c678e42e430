"""The `Kind` interface and its registry. Tensors are imported lazily so `python -m mtl check` stays fast."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from mtl.params import Param, resolve

if TYPE_CHECKING:
    import numpy as np
    import torch

    from mtl.tasks import Task

_REGISTRY: dict[str, Kind] = {}
MULTILABEL_SEP = "|"


class LabelError(ValueError):
    """A manifest cell or task spec entry that is not valid for its kind."""


def register(kind: Kind) -> Kind:
    _REGISTRY[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    """Remove a kind (a test's throwaway one)."""
    _REGISTRY.pop(name, None)


def registry() -> dict[str, Kind]:
    return dict(_REGISTRY)


class Kind:
    """One kind of task label. Methods take the `Task` (its name, classes, center/scale)."""

    name: str = ""
    primary_metric: str = ""
    direction: str = "maximize"  # of the primary metric
    has_classes: bool = True
    min_classes: int = 2
    max_classes: int | None = None
    # the kind's own settings (e.g. regression's `loss`), set with `--set kind_options.<kind>.<name>=<value>`
    options: ClassVar[dict[str, Param]] = {}

    # --- the spec --------------------------------------------------------------------------------
    def validate(self, task: Task) -> None:
        n = len(task.classes)
        if not self.has_classes:
            if n:
                raise LabelError(f"task '{task.name}': a {self.name} task has no classes")
            return
        if self.max_classes == self.min_classes and n != self.min_classes:
            raise LabelError(f"task '{task.name}': a {self.name} task needs exactly {self.min_classes} classes, got {n}")
        if n < self.min_classes:
            raise LabelError(f"task '{task.name}': a {self.name} task needs at least {self.min_classes} classes")

    def fit(self, task: Task, train_cells: list[str]) -> Task:
        """The task with anything learnt from the train split's labels (regression: center and scale)."""
        return task

    def describe(self, task: Task, cells: list[str]) -> str:
        """`make check`'s summary of a split's labelled cells."""
        from collections import Counter
        c = Counter(self.cell_labels(cells))
        return ", ".join(f"{k} {c.get(k, 0)}" for k in task.classes)

    def cell_labels(self, cells: list[str]) -> list[str]:
        return [c.strip() for c in cells]

    # --- targets ---------------------------------------------------------------------------------
    def encode(self, task: Task, cell: str) -> Any:
        """A non-empty manifest cell -> target value; raises LabelError on a bad label."""
        cell = cell.strip()
        if cell not in task.classes:
            raise LabelError(f"task '{task.name}': unknown class '{cell}' (known: {', '.join(task.classes)})")
        return task.classes.index(cell)

    def missing_target(self, task: Task) -> Any:
        """Placeholder for a sample without this label (masked out of loss and metrics)."""
        return 0

    numpy_dtype: str = "float32"

    def target_dtype(self) -> torch.dtype:
        import torch
        return getattr(torch, self.numpy_dtype.replace("int64", "long"))

    def random_targets(self, task: Task, n: int, generator) -> torch.Tensor:
        """Plausible random targets (benchmarks)."""
        raise NotImplementedError

    # --- the head --------------------------------------------------------------------------------
    def out_dim(self, task: Task) -> int:
        return len(task.classes)

    def init_head(self, task: Task, linear) -> None:
        """Initialise the head's last layer (default: PyTorch's)."""

    def head_output(self, task: Task, y: torch.Tensor) -> torch.Tensor:
        """The last layer's (B, out_dim) -> what the model returns for this task."""
        return y

    # --- loss and metrics ------------------------------------------------------------------------
    def resolve_options(self, values: dict | None) -> dict:
        """The kind's options with defaults filled in; an unknown or bad one is one UserError line."""
        return resolve(f"kind '{self.name}'", self.options, dict(values or {}))

    def loss(self, task: Task, output: torch.Tensor, target: torch.Tensor, options: dict) -> torch.Tensor:
        """Per-sample loss (B,); `options` are this kind's resolved options (`resolve_options`)."""
        raise NotImplementedError

    def metrics(self, task: Task) -> dict:
        """name -> torchmetrics metric; the primary metric first."""
        raise NotImplementedError

    def metric_inputs(self, metric_name: str, output: torch.Tensor, target: torch.Tensor):
        """(preds, target) as the metric `metric_name` takes them."""
        return output, target

    def sample_stats(self, task: Task, out: np.ndarray, tgt: np.ndarray, m: np.ndarray) -> np.ndarray:
        """Per-sample sufficient statistics of the primary metric (N, k); unlabelled rows 0 (bootstrap)."""
        raise NotImplementedError

    def metric_from_sums(self, sums: np.ndarray) -> np.ndarray:
        """The primary metric from summed statistics (..., k); NaN where nothing was labelled."""
        import numpy as np
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(sums[..., 1] > 0, sums[..., 0] / np.where(sums[..., 1] > 0, sums[..., 1], 1), np.nan)

    # Kendall et al. 2018: a softmax/Bernoulli likelihood weighs L / sigma^2, a Gaussian L / (2 sigma^2)
    uncertainty_factor: float = 1.0

    def score_scale(self, task: Task) -> float:
        """The primary metric's unit, to put tasks on one scale (hypervolume, patience)."""
        return 1.0

    def best_constant(self, task: Task, labelled: torch.Tensor, n: int) -> torch.Tensor:
        """Head outputs (n rows) of the best constant predictor given a split's labelled targets."""
        raise NotImplementedError

    # --- probabilities and reading ---------------------------------------------------------------
    def to_prob(self, output: torch.Tensor) -> torch.Tensor:
        """Head output -> what ensembles average (probabilities; values for regression)."""
        return output

    def class_probs(self, task: Task, output: torch.Tensor) -> torch.Tensor:
        """(N, number of classes): each class's probability (the served model's `<task>.<class>` columns)."""
        return self.to_prob(output).reshape(len(output), len(task.classes))

    def from_prob(self, p: torch.Tensor) -> torch.Tensor:
        """Back to the head's output space, so metrics and captions treat ensembles like models."""
        return p

    def decode(self, task: Task, output: torch.Tensor) -> Any:
        """One sample's head output -> the prediction the metrics score, readable (a class, a list of
        classes, a number). Captions, the gallery and the MLflow model all show this one."""
        raise NotImplementedError

    def cell_value(self, cell: str) -> Any:
        """A manifest cell as `decode` would return it (ground truth in captions)."""
        return cell.strip()

    def to_cell(self, value) -> Any:
        """A `decode` value as one table cell, written as the manifest writes it (the MLflow model's output)."""
        return value

    def format(self, value) -> str:
        return str(value)
