"""The `Criterion` interface, its two families and the method registry."""

from __future__ import annotations

import itertools
from typing import ClassVar

import torch
from torch import nn

from mtl.errors import UserError
from mtl.model.losses import task_losses
from mtl.params import Param, resolve

_REGISTRY: dict[str, type[Criterion]] = {}


def register(cls: type[Criterion]) -> type[Criterion]:
    _REGISTRY[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a method (a test's throwaway one)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    return list(_REGISTRY)


def get(name: str) -> type[Criterion]:
    if name not in _REGISTRY:
        raise UserError(f"unknown method '{name}' (methods: {', '.join(_REGISTRY)})")
    return _REGISTRY[name]


class DivergedError(RuntimeError):
    """A non-finite training loss: the trial is failed, not silently continued."""


class Criterion(nn.Module):
    """Per-task losses and the backward of one method. The loop calls `backward(features, heads,
    targets, masks)` once per batch (then `optimizer.step()`), `losses(...)` to evaluate, and
    `end_epoch(mean_losses)` / `epoch_stats()` once per epoch.

    `epoch_stats()` reports `weight/<task>` (mean weight the method applied over the epoch's steps
    where the task had labels) and the cosine between task gradients on the shared features,
    `grad/cosine` (mean over task pairs) and `grad/cosine/<a>-vs-<b>`."""

    name: ClassVar[str] = ""
    cite: ClassVar[str] = ""
    params: ClassVar[dict[str, Param]] = {}

    def __init__(self, tasks, options=None, **args):
        super().__init__()
        self.tasks = list(tasks)
        self.task_names = [t.name for t in tasks]
        self.kind_options = dict(getattr(options, "kind_options", None) or {})
        self.args = self.coerce_args(args, self.task_names)
        self._reset_stats()

    # --- construction from a config ---------------------------------------------------------
    @classmethod
    def from_config(cls, cfg, tasks, shared_params=None) -> Criterion:
        return cls(tasks, cfg, **dict(cfg.method_args))

    @classmethod
    def coerce_args(cls, args: dict, task_names: list[str] | None = None) -> dict:
        """`--set method_args.k=v` strings -> the parameters' types, defaults filled in; an unknown or bad
        parameter, or a per-task value for a task the model does not have: one line."""
        out = resolve(f"method '{cls.name}'", cls.params, args)
        if task_names is not None:
            for k, p in cls.params.items():
                unknown = set(out[k]) - set(task_names) if p.per_task else set()
                if unknown:
                    raise UserError(f"method '{cls.name}': {k} for unknown task(s) {', '.join(sorted(unknown))}")
        return out

    @classmethod
    def suggest(cls, trial, task_names: list[str]) -> dict:
        """The config changes for this method with its tunable parameters drawn; a per-task parameter is
        drawn once per task, named `<method>.<param>.<task>`."""
        args = {k: p.suggest(trial, f"{cls.name}.{k}", task_names) for k, p in cls.params.items() if p.tune}
        return {"method": cls.name, "method_args": args, "loss_weights": {}}

    def task_arg(self, name: str, task: str):
        """A per-task parameter's value for `task` (its default where the config names no value)."""
        return self.args[name].get(task, self.params[name].default)

    # --- losses -----------------------------------------------------------------------------
    def losses(self, outputs: dict, targets: dict, masks: dict) -> dict[str, torch.Tensor]:
        return task_losses(self.tasks, outputs, targets, masks, self.kind_options)

    @staticmethod
    def present(masks: dict, names: list[str]) -> list[str]:
        """Tasks with at least one labelled sample in the batch."""
        return [k for k in names if bool(masks[k].any())]

    def check_finite(self, losses: dict, total=None) -> None:
        bad = [k for k, v in losses.items() if not torch.isfinite(v)]
        if bad or (total is not None and not torch.isfinite(total)):
            raise DivergedError(f"non-finite loss (tasks: {', '.join(bad) or 'weighted total'})")

    def backward(self, features: torch.Tensor, heads, targets: dict, masks: dict) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def end_epoch(self, mean_losses: dict[str, float]) -> None:
        """Each epoch's mean *unweighted* train loss per task (NaN: no labelled sample that epoch)."""

    needs_losses_after_step: ClassVar[bool] = False  # True: the loop calls after_step once per batch

    def after_step(self, losses: dict[str, torch.Tensor]) -> None:
        """The same batch's per-task losses recomputed after the optimizer's step (FAMO's weight update)."""

    # --- what the UI shows ------------------------------------------------------------------
    def _reset_stats(self) -> None:
        self._w_sum = {k: 0.0 for k in self.task_names}
        self._w_n = {k: 0 for k in self.task_names}
        self._cos_sum: dict[tuple[str, str], float] = {}
        self._cos_n: dict[tuple[str, str], int] = {}

    def record(self, weights: dict[str, float], present: list[str], gramian: torch.Tensor | None) -> None:
        for k in present:
            self._w_sum[k] += float(weights[k])
            self._w_n[k] += 1
        if gramian is None:
            return
        g = gramian.detach().double().cpu()
        d = g.diagonal().sqrt()
        for i, j in itertools.combinations(range(len(present)), 2):
            if d[i] > 0 and d[j] > 0:
                pair = (present[i], present[j])
                self._cos_sum[pair] = self._cos_sum.get(pair, 0.0) + float(g[i, j] / (d[i] * d[j]))
                self._cos_n[pair] = self._cos_n.get(pair, 0) + 1

    def epoch_stats(self) -> dict[str, float]:
        out = {f"weight/{k}": self._w_sum[k] / self._w_n[k] for k in self.task_names if self._w_n[k]}
        pairs = {p: self._cos_sum[p] / self._cos_n[p] for p in self._cos_sum}
        for (a, b), v in pairs.items():
            out[f"grad/cosine/{a}-vs-{b}"] = v
        if pairs:
            out["grad/cosine"] = sum(pairs.values()) / len(pairs)
        self._reset_stats()
        return out


def _features_for_heads(features: torch.Tensor) -> torch.Tensor:
    """The heads' input: the shared features themselves when they carry a graph, else a leaf that
    does, so task gradients on the features exist even over a frozen, cached backbone."""
    return features if features.requires_grad else features.detach().requires_grad_(True)


class LossWeighting(Criterion):
    """Weighted sum of the per-task losses, one backward. `total(losses, present)` is the sum;
    `applied(present)` the weight each task got. Task-gradient cosines are measured on the first
    batch of each epoch (a Jacobian of the heads only: cheap, and the step itself stays one backward)."""

    def __init__(self, tasks, options=None, **args):
        super().__init__(tasks, options, **args)
        self._probe = True

    def weights(self) -> dict[str, float]:
        raise NotImplementedError

    def applied(self, present: list[str]) -> dict[str, float]:
        return self.weights()

    def total(self, losses: dict, present: list[str]) -> torch.Tensor:
        w = self.weights()
        return sum(w[k] * losses[k] for k in present)

    def forward(self, losses: dict) -> torch.Tensor:
        return self.total(losses, list(losses))

    def backward(self, features, heads, targets, masks):
        z = _features_for_heads(features)
        losses = self.losses(heads(z), targets, masks)
        present = self.present(masks, self.task_names)
        total = self.total(losses, present) if present else None
        self.check_finite(losses, total)
        gram = None
        if self._probe and len(present) > 1:
            grads = [torch.autograd.grad(losses[k], z, retain_graph=True)[0].reshape(-1) for k in present]
            j = torch.stack(grads).float()
            gram = j @ j.T
            self._probe = False
        if total is not None and total.requires_grad:
            total.backward()
        self.record(self.applied(present), present, gram)
        return {k: v.detach() for k, v in losses.items()}

    def epoch_stats(self):
        self._probe = True
        return super().epoch_stats()


class JacobianMethod(Criterion):
    """A torchjd aggregator on the Jacobian of the per-task losses. By default (`jacobian_on="features"`)
    the Jacobian is taken with respect to the shared features (one row per task, B x D columns):
    `torchjd.autojac.mtl_backward(losses, features=z)` fills each head's gradient and z's Jacobian,
    `jac_to_grad` aggregates it into z's gradient, and one ordinary backward carries that through the
    shared network, so a step costs about one backward however many heads. `jacobian_on="params"`
    aggregates the Jacobian with respect to the shared parameters instead (exact Jacobian descent,
    one backward per task through the backbone). Tasks without a labelled sample in the batch take no
    part in the step's aggregation. A stateful aggregator (Nash-MTL) keeps one state per set of tasks
    present; that state is not in checkpoints (`--from` restarts it)."""

    aggregator: ClassVar[str] = ""  # the class name in torchjd.aggregation

    def __init__(self, tasks, options=None, shared_params=None, **args):
        super().__init__(tasks, options, **args)
        self.jacobian_on = getattr(options, "jacobian_on", "features")
        self.shared_params = [p for p in (shared_params or []) if p.requires_grad]
        self._aggregators: dict[tuple[str, ...], nn.Module] = {}

    @classmethod
    def from_config(cls, cfg, tasks, shared_params=None):
        crit = cls(tasks, cfg, shared_params, **dict(cfg.method_args))
        crit.aggregator_for(tuple(crit.task_names))  # its optional dependencies, checked now
        return crit

    def order(self, present: list[str]) -> list[str]:
        """The labelled tasks in the order their rows enter the aggregator (PCD: the primary first)."""
        return present

    def make_aggregator(self, n_tasks: int) -> nn.Module:
        """`torchjd.aggregation.<aggregator>` with the method's parameters (override for other arguments)."""
        import torchjd.aggregation
        return getattr(torchjd.aggregation, type(self).aggregator)(**self.args)

    def aggregator_for(self, present: tuple[str, ...]) -> nn.Module:
        """One aggregator per set of present tasks (stateful ones keep a state of that size)."""
        if present not in self._aggregators:
            try:
                self._aggregators[present] = self.make_aggregator(len(present))
            except ImportError as e:
                raise UserError(f"method '{self.name}' needs optional packages: {e}") from None
        return self._aggregators[present]

    def backward(self, features, heads, targets, masks):
        from torchjd.autojac import jac_to_grad, mtl_backward
        params_mode = self.jacobian_on == "params" and features.requires_grad and self.shared_params
        leaf = None if params_mode else features.detach().float().requires_grad_(True)
        z = features if params_mode else leaf.view_as(leaf)  # torchjd wants features with a grad_fn
        losses = self.losses(heads(z), targets, masks)
        self.check_finite(losses)
        present = self.order(self.present(masks, self.task_names))
        if not present:
            return {k: v.detach() for k, v in losses.items()}
        agg = self.aggregator_for(tuple(present))
        wrt = self.shared_params if params_mode else [leaf]
        mtl_backward([losses[k] for k in present], features=z, shared_params=wrt)
        jacs = [p.jac.reshape(len(present), -1) for p in wrt]  # per tensor: no concatenated copy
        gram = sum(j.float() @ j.float().T for j in jacs)
        weights = jac_to_grad(wrt, agg, retain_jac=True)
        if weights is None:  # GradDrop, ConFIG: the least-squares weights w of their update g = J^T w
            jg = sum(j.float() @ p.grad.reshape(-1).float() for j, p in zip(jacs, wrt))
            weights = torch.linalg.pinv(gram.double().cpu()) @ jg.double().cpu()
        for p in wrt:
            del p.jac
        if not params_mode and features.requires_grad:
            features.backward(leaf.grad.to(features.dtype))
        self.record({k: float(w) for k, w in zip(present, weights)}, present, gram)
        return {k: v.detach() for k, v in losses.items()}
