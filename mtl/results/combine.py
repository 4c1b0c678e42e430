"""Ways to combine several models' outputs for one task, chosen on val (nothing here reads test):
- routing: the member that was best for the task on val (its best-epoch checkpoint);
- averaging: mean probabilities (mean value for regression) over the candidates;
- greedy: forward ensemble selection with replacement (Caruana et al., ICML 2004): start empty, add
  the candidate that most improves the val metric of the averaged ensemble, keep the best prefix.
The method used for a task is the one with the best val score (ties go to the simpler one).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mtl.bootstrap import point, sample_stats
from mtl.errors import UserError
from mtl.tasks import Task

GREEDY_STEPS = 25


def to_prob(task: Task, out: torch.Tensor) -> torch.Tensor:
    return task.kind_impl.to_prob(out)


def from_prob(task: Task, p: torch.Tensor) -> torch.Tensor:
    """Back to the head's output space (logits), so metrics and captions treat ensembles like models."""
    return task.kind_impl.from_prob(p)


def average(task: Task, outputs: list[torch.Tensor], weights: list[float] | None = None) -> torch.Tensor:
    """(Weighted) mean probability (mean value for regression) over members, returned as logits."""
    probs = torch.stack([to_prob(task, o) for o in outputs])
    w = torch.ones(len(outputs)) if weights is None else torch.as_tensor(weights, dtype=probs.dtype)
    w = (w / w.sum()).reshape(-1, *([1] * (probs.dim() - 1)))
    return from_prob(task, (probs * w).sum(0))


def greedy_select(task: Task, candidates: list[torch.Tensor], targets, mask, steps: int = GREEDY_STEPS) -> list[int]:
    """Caruana et al. 2004: forward selection with replacement on one split's labels; returns how often
    each candidate was picked in the best prefix (the smallest one on ties)."""
    if not np.asarray(mask, dtype=bool).any():
        raise UserError(f"task '{task.name}': no labelled sample in the split ensembles are chosen on (val), so no "
                        f"ensemble can be chosen for it; label some val rows of the manifest")
    counts = np.zeros(len(candidates), dtype=int)
    probs = [to_prob(task, c) for c in candidates]
    total = torch.zeros_like(probs[0])
    best_score, best_counts = None, counts.copy()
    for step in range(1, steps + 1):
        scores = [point(task, sample_stats(task, from_prob(task, (total + p) / step), targets, mask)) for p in probs]
        i = int(np.nanargmin(scores) if task.direction == "minimize" else np.nanargmax(scores))
        counts[i] += 1
        total = total + probs[i]
        if best_score is None or task.better(scores[i], best_score):
            best_score, best_counts = scores[i], counts.copy()
    return best_counts.tolist()


@dataclass
class Choice:
    """How one task is answered: a method and its members' weights (trial number -> weight)."""
    method: str
    weights: dict[int, float]
    val: float

    def describe(self) -> str:
        if len(self.weights) == 1:
            return f"{self.method} (trial {next(iter(self.weights))})"
        parts = ", ".join(f"t{n}x{w:g}" for n, w in sorted(self.weights.items()))
        return f"{self.method} ({parts})"

    def combine(self, task: Task, outputs_by_member: dict[int, dict]) -> torch.Tensor:
        nums = list(self.weights)
        return average(task, [outputs_by_member[n][task.name] for n in nums], [self.weights[n] for n in nums])


def choose(task: Task, candidates: list, routed: int, val_out: dict[int, dict], targets, mask) -> dict[str, Choice]:
    """Routing, averaging and greedy for one task, each scored on val; key 'chosen' holds the best of them
    (ties go to the simpler method, in that order). `candidates` are trial numbers."""
    def val_score(weights: dict[int, float]) -> float:
        out = Choice("", weights, 0.0).combine(task, val_out)
        return point(task, sample_stats(task, out, targets, mask))

    counts = greedy_select(task, [val_out[n][task.name] for n in candidates], targets, mask)
    options = {"routing": {routed: 1.0}, "averaging": {n: 1.0 for n in candidates},
               "greedy": {n: float(c) for n, c in zip(candidates, counts) if c}}
    out = {name: Choice(name, w, val_score(w)) for name, w in options.items()}
    chosen = out["routing"]
    for name in ("averaging", "greedy"):
        if task.better(out[name].val, chosen.val):
            chosen = out[name]
    out["chosen"] = chosen
    return out


def select_on_val(tasks, manifest, cache, front, best, values_of, top_k: int) -> dict[str, dict[str, Choice]]:
    """Every selection step: candidates, routing, averaging, greedy and the choice, from val alone."""
    targets, masks = manifest.targets("val")
    val_out = {m.number: cache.member(m.run_id, tasks) for m in front}
    choices = {}
    for i, t in enumerate(tasks):
        ranked = sorted(front, key=lambda m: values_of(m)[i], reverse=t.direction == "maximize")
        candidates = [m.number for m in (ranked[:top_k] if top_k else ranked)]
        choices[t.name] = choose(t, candidates, best[t.name].number, val_out, targets[t.name], masks[t.name])
    return choices
