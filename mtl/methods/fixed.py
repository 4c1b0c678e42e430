"""Fixed weights: a constant weight per task (`loss_weights`, default 1: the write-ups' plain sum)."""

from __future__ import annotations

from mtl.errors import UserError
from mtl.methods.base import LossWeighting, register


@register
class Fixed(LossWeighting):
    name = "fixed"
    cite = "the sum of task losses (Caruana 1997, Multitask Learning), optionally weighted"

    def __init__(self, tasks, options=None, loss_weights: dict | None = None, **args):
        super().__init__(tasks, options, **args)
        weights = dict(loss_weights or {})  # tasks the model lacks: TrainConfig.validate's one line
        bad = {k: v for k, v in weights.items() if not float(v) >= 0}
        if bad:
            raise UserError(f"loss weights must be >= 0: {bad}")
        self._w = {k: float(weights.get(k, 1.0)) for k in self.task_names}

    @classmethod
    def from_config(cls, cfg, tasks, shared_params=None):
        return cls(tasks, cfg, dict(cfg.loss_weights), **dict(cfg.method_args))

    @classmethod
    def suggest(cls, trial, task_names):
        return {"method": cls.name, "method_args": {},
                "loss_weights": {t: trial.suggest_float(f"loss_weight.{t}", 0.03, 3.0, log=True) for t in task_names}}

    def weights(self):
        return dict(self._w)
