"""Dynamic Weight Average: Liu, Johns & Davison 2019, "End-to-End Multi-Task Learning with Attention"
(CVPR), eq. 7.

lambda_k(t) = K exp(w_k(t-1)/T) / sum_i exp(w_i(t-1)/T),  w_k(t-1) = L_k(t-1) / L_k(t-2),
with L_k the epoch's mean unweighted train loss; lambda_k = 1 for the first two epochs. The paper
uses T = 2. A task without a labelled sample in either epoch has ratio 1. The loss history is part of
the criterion's state (checkpoints hold it; `--from` continues it)."""

from __future__ import annotations

import math

import torch

from mtl.methods.base import LossWeighting, register
from mtl.params import Param


@register
class DWA(LossWeighting):
    name = "dwa"
    cite = "Liu, Johns & Davison 2019 (CVPR)"
    params = {"temperature": Param(2.0, 0.5, 5.0, log=True, positive=True)}

    def __init__(self, tasks, options=None, **args):
        super().__init__(tasks, options, **args)
        self.history: list[dict[str, float]] = []
        self._w = {k: 1.0 for k in self.task_names}

    def weights(self):
        return dict(self._w)

    def end_epoch(self, mean_losses):
        self.history.append({k: float(mean_losses.get(k, math.nan)) for k in self.task_names})
        self._update()

    def _update(self):
        if len(self.history) < 2:
            self._w = {k: 1.0 for k in self.task_names}
            return
        prev, prev2 = self.history[-1], self.history[-2]

        def ratio(k):
            a, b = prev.get(k, math.nan), prev2.get(k, math.nan)
            return a / b if math.isfinite(a) and math.isfinite(b) and b > 0 else 1.0
        r = torch.tensor([ratio(k) for k in self.task_names], dtype=torch.float64)
        lam = len(self.task_names) * torch.softmax(r / self.args["temperature"], dim=0)
        self._w = {k: float(lam[i]) for i, k in enumerate(self.task_names)}

    def get_extra_state(self):
        return {"history": [dict(h) for h in self.history]}

    def set_extra_state(self, state):
        self.history = [dict(h) for h in state.get("history", [])]
        self._update()
