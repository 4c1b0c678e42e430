"""Gradient methods from torchjd (`torchjd.aggregation`), each applied as a `JacobianMethod` (base.py)
to the Jacobian of the per-task losses. One class per method, citing its paper; parameters are
settable with `--set method_args.<name>=<value>` and searched by `suggest()` in studies; they are
passed to the aggregator `torchjd.aggregation.<aggregator>` by name."""

from __future__ import annotations

from mtl.errors import UserError
from mtl.methods.base import JacobianMethod, register
from mtl.params import Param


@register
class UPGrad(JacobianMethod):
    """Quinton & Rey 2024, "Jacobian Descent for Multi-Objective Optimization" (arXiv:2406.16232):
    each task gradient projected onto the dual cone of all of them, then averaged."""
    name = "upgrad"
    cite = "Quinton & Rey 2024 (arXiv:2406.16232)"
    aggregator = "UPGrad"


@register
class MGDA(JacobianMethod):
    """Sener & Koltun 2018, "Multi-Task Learning as Multi-Objective Optimization" (NeurIPS): the
    minimum-norm point of the convex hull of the task gradients (Frank-Wolfe)."""
    name = "mgda"
    cite = "Sener & Koltun 2018 (NeurIPS)"
    params = {"epsilon": Param(1e-3, 1e-4, 1e-2, log=True, positive=True, tune=False),
              "max_iters": Param(100, 10, 200, minimum=1, tune=False)}
    aggregator = "MGDA"


@register
class PCGrad(JacobianMethod):
    """Yu et al. 2020, "Gradient Surgery for Multi-Task Learning" (NeurIPS): conflicting task
    gradients projected onto each other's normal planes."""
    name = "pcgrad"
    cite = "Yu et al. 2020 (NeurIPS)"
    aggregator = "PCGrad"


@register
class CAGrad(JacobianMethod):
    """Liu et al. 2021, "Conflict-Averse Gradient Descent for Multi-task Learning" (NeurIPS): the
    update that maximises the worst task's improvement within a ball of radius c around the mean."""
    name = "cagrad"
    cite = "Liu, Liu, Jin, Stone & Liu 2021 (NeurIPS)"
    params = {"c": Param(0.5, 0.1, 0.9, minimum=0.0)}
    aggregator = "CAGrad"


@register
class NashMTL(JacobianMethod):
    """Navon et al. 2022, "Multi-Task Learning as a Bargaining Game" (ICML): the Nash bargaining
    solution over the task gradients. Stateful: one state per set of tasks present in a batch."""
    name = "nash_mtl"
    cite = "Navon et al. 2022 (ICML)"
    params = {"max_norm": Param(1.0, 0.5, 5.0, log=True, minimum=0.0, tune=False),
              "update_weights_every": Param(1, 1, 4, minimum=1),
              "optim_niter": Param(20, 5, 40, minimum=1, tune=False)}

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import NashMTL as A
        return A(n_tasks=n_tasks, max_norm=self.args["max_norm"],
                 update_weights_every=self.args["update_weights_every"], optim_niter=self.args["optim_niter"])


@register
class IMTLG(JacobianMethod):
    """Liu et al. 2021, "Towards Impartial Multi-task Learning" (ICLR), the gradient part IMTL-G: the
    combination whose projection on every task's unit gradient is equal."""
    name = "imtl_g"
    cite = "Liu et al. 2021 (ICLR)"
    aggregator = "IMTLG"


@register
class AlignedMTL(JacobianMethod):
    """Senushkin et al. 2023, "Independent Component Alignment for Multi-Task Learning" (CVPR): the
    task gradients made orthogonal and equally scaled (condition number 1) before summing."""
    name = "aligned_mtl"
    cite = "Senushkin et al. 2023 (CVPR)"
    params = {"scale_mode": Param("min", choices=("min", "median", "rmse"))}
    aggregator = "AlignedMTL"


@register
class DualProj(JacobianMethod):
    """Quinton & Rey 2024 (arXiv:2406.16232), after GEM (Lopez-Paz & Ranzato 2017, NeurIPS): the mean
    gradient projected onto the dual cone of the task gradients (no task's loss goes up, to first order)."""
    name = "dualproj"
    cite = "Lopez-Paz & Ranzato 2017 (NeurIPS); Quinton & Rey 2024"
    aggregator = "DualProj"


@register
class GradDrop(JacobianMethod):
    """Chen et al. 2020, "Just Pick a Sign: Optimizing Deep Multitask Models with Gradient Sign
    Dropout" (NeurIPS): per coordinate, gradients of one sign kept at random by their sign purity.
    Not a weighted combination: `weight/<task>` is the least-squares fit of its update on the rows."""
    name = "graddrop"
    cite = "Chen et al. 2020 (NeurIPS)"
    aggregator = "GradDrop"


@register
class ConFIG(JacobianMethod):
    """Liu, Chu & Thuerey 2025, "ConFIG: Towards Conflict-free Training of Physics Informed Neural
    Networks" (ICLR): the direction with equal positive cosine to every task gradient. Not a weighted
    combination: `weight/<task>` is the least-squares fit of its update on the rows."""
    name = "config"
    cite = "Liu, Chu & Thuerey 2025 (ICLR)"
    aggregator = "ConFIG"


@register
class RandomWeighting(JacobianMethod):
    """Lin et al. 2022, "Reasonable Effectiveness of Random Weighting: A Litmus Test for Multi-Task
    Learning" (TMLR), RLW: task gradients combined with fresh random (softmax-normal) weights each step."""
    name = "random"
    cite = "Lin et al. 2022 (TMLR)"
    aggregator = "Random"


@register
class ExcessMTL(JacobianMethod):
    """Lv et al. 2024, "Robust Multi-Task Learning with Excess Risks" (ICML): task weights raised by each
    task's estimated excess risk (its loss above what it could reach), so noisy tasks do not dominate.
    Stateful (one state per set of present tasks)."""
    name = "excess_mtl"
    cite = "Lv et al. 2024 (ICML)"
    params = {"robust_step_size": Param(1.0, 0.1, 10.0, log=True, positive=True),
              "n_warmup_steps": Param(0, 0, 10, minimum=0, tune=False)}
    aggregator = "ExcessMTL"


@register
class FairGrad(JacobianMethod):
    """Ban & Ji 2024, "Fair Resource Allocation in Multi-Task Learning" (ICML): the update that gives the
    tasks alpha-fair shares of improvement (alpha=0: the plain sum; alpha -> infinity: max-min fairness)."""
    name = "fairgrad"
    cite = "Ban & Ji 2024 (ICML)"
    params = {"alpha": Param(1.0, 0.1, 5.0, log=True, positive=True)}
    aggregator = "FairGrad"


@register
class GradVac(JacobianMethod):
    """Wang et al. 2021, "Gradient Vaccine: Investigating and Improving Multi-task Optimization in
    Massively Multilingual Models" (ICLR): each pair of task gradients moved towards an exponential moving
    average of their cosine similarity. Stateful."""
    name = "gradvac"
    cite = "Wang, Tsvetkov, Firat & Cao 2021 (ICLR)"
    params = {"beta": Param(0.5, 0.01, 0.99, minimum=0.0)}
    aggregator = "GradVac"



@register
class CRMOGM(JacobianMethod):
    """Zhou et al. 2022, "On the Convergence of Stochastic Multi-Objective Gradient Manipulation and
    Beyond" (NeurIPS), CR-MOGM: MGDA's task weights smoothed by an exponential moving average across
    steps (lambda_k = alpha lambda_{k-1} + (1 - alpha) lambda_hat_k), which makes stochastic MGDA
    converge. Stateful."""
    name = "cr_mogm"
    cite = "Zhou et al. 2022 (NeurIPS)"
    params = {"alpha": Param(0.9, 0.5, 0.99, minimum=0.0)}

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import CRMOGMWeighting, GramianWeightedAggregator, MGDAWeighting
        return GramianWeightedAggregator(CRMOGMWeighting(MGDAWeighting(), alpha=self.args["alpha"]))


@register
class PCD(JacobianMethod):
    """"Not All Objectives Are Born Equal: Priority-Constrained Descent for Hierarchical Multi-Objective
    Optimization" (TMLR 2026, arXiv:2606.29521), PCD: follow the primary
    task's gradient as closely as possible while every other task keeps at least a fraction tau of the
    progress its own normalised gradient would give. Not symmetric: `primary` names the primary task
    (default: the first task); the others are auxiliaries. Stateful (a moving average of gradient norms)."""
    name = "pcd"
    cite = "Priority-Constrained Descent, TMLR 2026 (arXiv:2606.29521)"
    params = {"tau": Param(0.02, 0.005, 0.2, log=True, minimum=0.0),
              "beta": Param(0.999, 0.9, 0.9999, minimum=0.0, tune=False),
              "primary": Param("", tune=False)}

    def __init__(self, tasks, options=None, shared_params=None, **args):
        super().__init__(tasks, options, shared_params, **args)
        if self.args["primary"] and self.args["primary"] not in self.task_names:
            raise UserError(f"method 'pcd': primary={self.args['primary']!r} is not a task "
                            f"({', '.join(self.task_names)})")
        self.primary = self.args["primary"] or self.task_names[0]

    def order(self, present):
        return [k for k in present if k == self.primary] + [k for k in present if k != self.primary]

    def make_aggregator(self, n_tasks):
        from torchjd.aggregation import PCD as A
        return A(tau=self.args["tau"], beta=self.args["beta"])
