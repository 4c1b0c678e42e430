"""Masked losses and the weighting strategies against hand-computed values of the papers' formulas."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mtl.methods.dwa import DWA
from mtl.methods.fixed import Fixed
from mtl.methods.uncertainty import Uncertainty
from mtl.model.losses import masked_loss
from mtl.tasks import Task

BIN = Task("gender", "binary", ("Female", "Male"))
MC = Task("race", "multiclass", ("a", "b", "c"))
ML = Task("colors", "multilabel", ("r", "g", "b", "k"))
REG = Task("age", "regression")


def test_masked_loss_equals_loss_over_labelled_subset():
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([True, False, True, True, False, True])
    cases = [
        (MC, torch.randn(6, 3, generator=g), torch.tensor([0, 2, 1, 1, 0, 2]),
         lambda o, t: F.cross_entropy(o, t)),
        (BIN, torch.randn(6, generator=g), torch.tensor([1., 0, 0, 1, 1, 0]),
         lambda o, t: F.binary_cross_entropy_with_logits(o, t)),
        (ML, torch.randn(6, 4, generator=g), (torch.rand(6, 4, generator=g) > 0.5).float(),
         lambda o, t: F.binary_cross_entropy_with_logits(o, t)),
        (REG, torch.randn(6, generator=g) * 10, torch.rand(6, generator=g) * 80, lambda o, t: F.l1_loss(o, t)),
    ]
    for task, out, tgt, ref in cases:
        got = masked_loss(task, out, tgt, mask)
        want = ref(out[mask], tgt[mask])
        assert torch.allclose(got, want, atol=1e-6), task.kind


def test_all_missing_batch_gives_zero_not_nan_and_no_gradient():
    for task, out, tgt in [(MC, torch.randn(4, 3), torch.zeros(4, dtype=torch.long)),
                           (ML, torch.randn(4, 4), torch.zeros(4, 4)),
                           (REG, torch.randn(4), torch.full((4,), float("nan")))]:
        out.requires_grad_(True)
        loss = masked_loss(task, out, tgt, torch.zeros(4, dtype=torch.bool))
        assert loss.item() == 0.0 and not torch.isnan(loss)
        loss.backward()
        assert torch.all(out.grad == 0)


def test_fixed_weighting_sums_with_weights():
    w = Fixed([BIN, REG], loss_weights={"age": 0.1})
    total = w({"gender": torch.tensor(2.0), "age": torch.tensor(30.0)})
    assert math.isclose(total.item(), 2.0 + 3.0, rel_tol=1e-6)


def test_uncertainty_weighting_matches_kendall():
    w = Uncertainty([BIN, REG])
    with torch.no_grad():
        w.log_var["gender"].fill_(0.7)
        w.log_var["age"].fill_(-0.3)
    l_cls, l_reg = 0.8, 12.0
    total = w({"gender": torch.tensor(l_cls), "age": torch.tensor(l_reg)})
    s1, s2 = 0.7, -0.3
    sig2_1, sig2_2 = math.exp(s1), math.exp(s2)
    # classification: L/sigma^2 + log sigma; regression: L/(2 sigma^2) + log sigma
    want = l_cls / sig2_1 + math.log(math.sqrt(sig2_1)) + l_reg / (2 * sig2_2) + math.log(math.sqrt(sig2_2))
    assert math.isclose(total.item(), want, rel_tol=1e-5)
    assert math.isclose(w.weights()["age"], 1 / (2 * sig2_2), rel_tol=1e-5)
    total.backward()
    # d/ds of exp(-s) L + s/2 = -exp(-s) L + 1/2
    assert math.isclose(w.log_var["gender"].grad.item(), -math.exp(-s1) * l_cls + 0.5, rel_tol=1e-5)


def test_dwa_matches_liu_et_al():
    tasks = [BIN, MC, REG]
    w = DWA(tasks, temperature=2.0)
    seq = [{"gender": 1.0, "race": 2.0, "age": 20.0},
           {"gender": 0.5, "race": 1.8, "age": 18.0},
           {"gender": 0.4, "race": 1.0, "age": 18.0}]
    assert w.weights() == {"gender": 1.0, "race": 1.0, "age": 1.0}  # epoch 1
    w.end_epoch(seq[0])
    assert w.weights() == {"gender": 1.0, "race": 1.0, "age": 1.0}  # epoch 2
    w.end_epoch(seq[1])
    r = [0.5 / 1.0, 1.8 / 2.0, 18.0 / 20.0]
    e = [math.exp(x / 2.0) for x in r]
    want = [3 * x / sum(e) for x in e]
    got = w.weights()
    for k, v in zip(["gender", "race", "age"], want):
        assert math.isclose(got[k], v, rel_tol=1e-6)
    w.end_epoch(seq[2])
    r = [0.4 / 0.5, 1.0 / 1.8, 18.0 / 18.0]
    e = [math.exp(x / 2.0) for x in r]
    assert math.isclose(w.weights()["race"], 3 * e[1] / sum(e), rel_tol=1e-6)
    assert math.isclose(sum(w.weights().values()), 3.0, rel_tol=1e-6)
