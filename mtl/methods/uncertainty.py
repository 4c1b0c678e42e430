"""Uncertainty weighting: Kendall, Gal & Cipolla 2018, "Multi-Task Learning Using Uncertainty to Weigh
Losses for Scene Geometry and Semantics" (CVPR).

One learnable s_k = log sigma_k^2 per task (trained with the heads' learning rate, no weight decay).
With sigma^2 = exp(s):
  regression      L / (2 sigma^2) + log sigma  = 0.5 exp(-s) L + 0.5 s   (paper eq. 5/7)
  classification  L / sigma^2     + log sigma  = exp(-s) L + 0.5 s       (paper eq. 10, with eq. 12's
                                                                        approximation)
A task without a labelled sample in the batch adds no term, so its s gets no gradient and the
optimizer leaves it where it is (each s is its own parameter)."""

from __future__ import annotations

import math

import torch
from torch import nn

from mtl.methods.base import LossWeighting, register
from mtl.params import Param


@register
class Uncertainty(LossWeighting):
    name = "uncertainty"
    cite = "Kendall, Gal & Cipolla 2018 (CVPR)"
    params = {"init_log_var": Param(0.0, -2.0, 2.0, tune=False)}

    def __init__(self, tasks, options=None, **args):
        super().__init__(tasks, options, **args)
        self.factor = {t.name: t.kind_impl.uncertainty_factor for t in tasks}  # 0.5 regression, 1 classification
        self.log_var = nn.ParameterDict({k: nn.Parameter(torch.tensor(float(self.args["init_log_var"])))
                                         for k in self.task_names})

    def total(self, losses, present):
        return sum(self.factor[k] * torch.exp(-self.log_var[k]) * losses[k] + 0.5 * self.log_var[k] for k in present)

    def weights(self):
        return {k: self.factor[k] * math.exp(-float(self.log_var[k].detach())) for k in self.task_names}
