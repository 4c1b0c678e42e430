"""Task kinds (mtl/kinds): every registered kind keeps its contract, and nothing outside mtl/kinds
branches on a kind's name, so a new kind is one file plus this test's example of it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl import kinds
from mtl.bootstrap import point, sample_stats
from mtl.model.metrics import TaskMetrics, best_constant
from mtl.tasks import Task

EXAMPLES = {  # kind -> (task, labelled cells); a new kind adds its example here
    "binary": (Task("gender", "binary", ("F", "M")), ["F", "M", "M", "F", "M", "M"]),
    "multiclass": (Task("race", "multiclass", ("a", "b", "c")), ["a", "b", "c", "c", "b", "c"]),
    "multilabel": (Task("colors", "multilabel", ("r", "g", "b")), ["r", "g|b", "r|g|b", "b", "g", "r|b"]),
    "regression": (Task("age", "regression", center=40.0, scale=20.0), ["21", "35.5", "60", "44", "18", "70"]),
}


def test_every_kind_has_an_example():
    assert set(kinds.names()) == set(EXAMPLES)


@pytest.mark.parametrize("kind", sorted(EXAMPLES))
def test_kind_contract(kind):
    task, cells = EXAMPLES[kind]
    spec = task.kind_impl
    n = len(cells)
    targets = torch.as_tensor(np.asarray([task.encode(c) for c in cells] + [task.missing_target()],
                                         dtype=spec.numpy_dtype))
    assert targets.dtype == task.target_dtype()
    mask = torch.tensor([True] * n + [False])
    g = torch.Generator().manual_seed(0)
    out = spec.head_output(task, torch.randn(n + 1, task.out_dim, generator=g))
    assert out.shape[0] == n + 1

    # loss: one value per sample, finite, differentiable
    per = spec.loss(task, out.requires_grad_(True), targets, spec.resolve_options(None))
    assert per.shape == (n + 1,) and torch.isfinite(per).all()
    per.sum().backward()

    # the bootstrap's sufficient statistics give the same primary metric as torchmetrics
    out = out.detach()
    m = TaskMetrics([task])
    m.update({task.name: out}, {task.name: targets}, {task.name: mask})
    want = m.compute()[task.metric_key]
    got = point(task, sample_stats(task, out.numpy(), targets.numpy(), mask.numpy()))
    assert got == pytest.approx(want, rel=1e-5)

    # the best constant is a valid head output and no worse than this random predictor on its own split
    const = best_constant(task, targets, mask)
    assert const.shape == out.shape
    c = point(task, sample_stats(task, const.numpy(), targets.numpy(), mask.numpy()))
    assert not task.better(got, c) or kind == "regression"

    # probabilities round-trip to the same readable prediction; ground truth reads like a prediction
    back = spec.from_prob(spec.to_prob(out))
    for i in range(n):
        a, b = task.predict(back[i]), task.predict(out[i])
        assert a == (pytest.approx(b, rel=1e-4) if isinstance(b, float) else b)
        assert isinstance(spec.format(spec.cell_value(cells[i])), str)
    assert spec.describe(task, cells)


def test_unknown_kind_is_one_line():
    with pytest.raises(kinds.LabelError, match="unknown kind 'ordinal'"):
        Task("x", "ordinal", ("a", "b"))


def test_no_module_outside_kinds_branches_on_a_kind_name():
    names = "|".join(kinds.names())
    pattern = re.compile(rf"""kind\s*(==|!=|in)\s*[\("'].*({names})""")
    root = Path(kinds.__file__).parents[1]
    hits = [f"{p.relative_to(root)}:{i}" for p in root.rglob("*.py") if "kinds" not in p.parts
            for i, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []
