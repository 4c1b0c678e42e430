"""Loss scalarizers from torchjd (`torchjd.scalarization`), each applied as a `ScalarizerMethod`: the
per-task losses of the labelled tasks, stacked in task order, go through the scalarizer and one
backward. One class per method, citing its paper. `weight/<task>` is what the method applied: the
derivative of the scalarized loss with respect to that task's loss on the step.

torchjd's Constant/Sum/Mean are `fixed` here, UW is `uncertainty` and DWA is `dwa` (own files, with
partial labels handled per task); its Random scalarizer is RLW, which `random` applies to the
gradients instead.

A task without a labelled sample in the batch takes no part: stateless scalarizers are called on the
labelled tasks' losses (preference vectors restricted to them and renormalised). IMTL-L keeps one
learned scale per task; its step on a batch that lacks a task is the restriction of torchjd's formula
to the labelled tasks. FAMO's weight update needs every task's loss before and after the step, so a
batch without some task's label is one line naming the method.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from mtl.errors import UserError
from mtl.methods.base import LossWeighting, register
from mtl.params import Param


class ScalarizerMethod(LossWeighting):
    """A torchjd scalarizer over the labelled tasks' losses. Subclasses name `scalarizer` (the class in
    torchjd.scalarization) or override `make_scalarizer(present)`; a `stateful` one is built once for
    every task (a submodule: its parameters train with the heads' learning rate and its state is in
    checkpoints), the others per set of labelled tasks."""

    scalarizer: ClassVar[str] = ""
    stateful: ClassVar[bool] = False

    def __init__(self, tasks, options=None, **args):
        super().__init__(tasks, options, **args)
        self._applied: dict[str, float] = {k: 1.0 for k in self.task_names}
        self._stateless: dict[tuple[str, ...], nn.Module] = {}
        if self.stateful:
            self.scalar = self.make_scalarizer(tuple(self.task_names))

    @classmethod
    def from_config(cls, cfg, tasks, shared_params=None):
        return cls(tasks, cfg, **dict(cfg.method_args))

    def make_scalarizer(self, present: tuple[str, ...]) -> nn.Module:
        import torchjd.scalarization
        return getattr(torchjd.scalarization, type(self).scalarizer)(**self.args)

    def scalarizer_for(self, present: tuple[str, ...]) -> nn.Module:
        if self.stateful:
            return self.scalar
        if present not in self._stateless:
            self._stateless[present] = self.make_scalarizer(present)
        return self._stateless[present]

    def scalarize(self, values: torch.Tensor, present: tuple[str, ...]) -> torch.Tensor:
        return self.scalarizer_for(present)(values)

    def preference(self, present) -> torch.Tensor:
        """The per-task `preference` parameter over the labelled tasks, on the simplex."""
        p = torch.tensor([float(self.task_arg("preference", k)) for k in present])
        return p / p.sum()

    def total(self, losses, present):
        values = torch.stack([losses[k].float() for k in present])
        total = self.scalarize(values, tuple(present))
        if values.requires_grad and total.requires_grad:
            (d,) = torch.autograd.grad(total, values, retain_graph=True)
            self._applied = {k: float(d[i]) for i, k in enumerate(present)}
        return total

    def weights(self):
        return dict(self._applied)


PREFERENCE = Param(1.0, 0.1, 10.0, log=True, positive=True, per_task=True, tune=False)


@register
class STCH(ScalarizerMethod):
    """Lin et al. 2024, "Smooth Tchebycheff Scalarization for Multi-Objective Optimization" (ICML): a
    smooth maximum of the preference-weighted losses, mu * logsumexp(w_i L_i / mu); small mu focuses the
    step on the worst task."""
    name = "stch"
    cite = "Lin, Zhang, Zhang, Liu & Zhang 2024 (ICML)"
    params = {"mu": Param(0.5, 0.01, 1.0, log=True, positive=True), "preference": PREFERENCE}

    def make_scalarizer(self, present):
        from torchjd.scalarization import STCH as S
        return S(mu=self.args["mu"], weights=self.preference(present))


@register
class GeometricMean(ScalarizerMethod):
    """Chennupati et al. 2019, "MultiNet++: Multi-Stream Feature Aggregation and Geometric Loss Strategy
    for Multi-Task Learning" (CVPR workshops), GLS: the geometric mean of the task losses, so each task's
    weight is inversely proportional to its loss."""
    name = "geometric_mean"
    cite = "Chennupati, Sistu, Yogamani & Rawashdeh 2019 (CVPRW)"
    scalarizer = "GeometricMean"


@register
class IMTLL(ScalarizerMethod):
    """Liu et al. 2021, "Towards Impartial Multi-task Learning" (ICLR), the loss part IMTL-L: one learned
    log-scale s_i per task, sum(exp(s_i) L_i - s_i), which drives every scaled loss towards 1.
    Stateful (the scales are in checkpoints; they train with the heads' learning rate)."""
    name = "imtl_l"
    cite = "Liu et al. 2021 (ICLR)"
    stateful = True

    def make_scalarizer(self, present):
        from torchjd.scalarization import IMTLL as S
        return S(len(present))

    def scalarize(self, values, present):
        if len(present) == len(self.task_names):
            return self.scalar(values)
        s = self.scalar.log_scale[[self.task_names.index(k) for k in present]]
        return (torch.exp(s) * values - s).sum()  # torchjd's formula restricted to the labelled tasks


@register
class FAMO(ScalarizerMethod):
    """Liu, Liu, Stone & Liu 2023, "FAMO: Fast Adaptive Multitask Optimization" (NeurIPS): a loss-only
    method that decreases every task's loss at about the same rate. Its task logits take one Adam step
    per batch from the change of the log-losses across the model's step, measured by recomputing the
    losses on the same batch after the step (one more forward, in train mode as in the official code).
    Stateful; the logits are in checkpoints, FAMO's own Adam moments are not (`--from` restarts them)."""
    name = "famo"
    cite = "Liu, Liu, Stone & Liu 2023 (NeurIPS)"
    stateful = True
    needs_losses_after_step = True
    params = {"lr": Param(0.025, 0.005, 0.1, log=True, positive=True),
              "weight_decay": Param(1e-3, 1e-5, 1e-2, log=True, minimum=0.0, tune=False)}

    def make_scalarizer(self, present):
        from torchjd.scalarization import FAMO as S
        return S(len(present), lr=self.args["lr"], weight_decay=self.args["weight_decay"])

    def scalarize(self, values, present):
        if len(present) != len(self.task_names):
            missing = sorted(set(self.task_names) - set(present))
            raise UserError(f"method 'famo' needs every task labelled in every batch; a batch has no label for "
                            f"{', '.join(missing)} (use a method that handles partial labels, e.g. fixed or upgrad)")
        return self.scalar(values)

    def after_step(self, losses: dict) -> None:
        self.scalar.update(torch.stack([losses[k].float().detach() for k in self.task_names]))


@register
class PBI(ScalarizerMethod):
    """Zhang & Li 2007, "MOEA/D: A Multiobjective Evolutionary Algorithm Based on Decomposition" (IEEE
    TEC), penalty-based boundary intersection: the losses' distance along a preference direction plus
    theta times their distance from it. `preference.<task>` sets the direction (default: equal)."""
    name = "pbi"
    cite = "Zhang & Li 2007 (IEEE TEC)"
    params = {"theta": Param(5.0, 0.5, 10.0, log=True, minimum=0.0), "preference": PREFERENCE}

    def make_scalarizer(self, present):
        from torchjd.scalarization import PBI as S
        return S(theta=self.args["theta"], weights=self.preference(present))


@register
class COSMOS(ScalarizerMethod):
    """Ruchte & Grabocka 2021, "Scalable Pareto Front Approximation for Deep Multi-Objective Learning"
    (ICDM), COSMOS's loss for one preference ray: the preference-weighted sum minus lambda times the
    cosine between the losses and the ray (the ray is fixed here, not sampled per batch and fed to the
    network as in the paper's conditioned model)."""
    name = "cosmos"
    cite = "Ruchte & Grabocka 2021 (ICDM)"
    params = {"lambda_": Param(1.0, 0.1, 10.0, log=True, minimum=0.0), "preference": PREFERENCE}

    def make_scalarizer(self, present):
        from torchjd.scalarization import COSMOS as S
        return S(lambda_=self.args["lambda_"], weights=self.preference(present))
