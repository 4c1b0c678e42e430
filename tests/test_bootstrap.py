"""Group bootstrap, paired differences, the best constant predictor, greedy ensemble selection, and the
rule that no selection step reads a test label."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from mtl.bootstrap import GroupBootstrap, Score, point, sample_stats, verdict
from mtl.model.metrics import TaskMetrics, best_constant, constant_score
from mtl.results.combine import choose, greedy_select
from mtl.tasks import Task

BIN = Task("gender", "binary", ("F", "M"))
MC = Task("race", "multiclass", ("a", "b", "c", "d"))
ML = Task("colors", "multilabel", ("r", "g", "b", "w", "k"))
REG = Task("age", "regression", center=40.0, scale=20.0)


def random_case(task: Task, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    if task.kind == "binary":
        return torch.randn(n, generator=g), torch.randint(0, 2, (n,), generator=g).float()
    if task.kind == "multiclass":
        return torch.randn(n, 4, generator=g), torch.randint(0, 4, (n,), generator=g)
    if task.kind == "multilabel":
        return torch.randn(n, 5, generator=g), (torch.rand(n, 5, generator=g) < 0.3).float()
    return torch.rand(n, generator=g) * 80, torch.rand(n, generator=g) * 80


@pytest.mark.parametrize("task", [BIN, MC, ML, REG], ids=lambda t: t.kind)
def test_point_estimate_equals_torchmetrics(task):
    out, tgt = random_case(task, 60, 1)
    mask = torch.arange(60) % 7 != 0  # some samples unlabelled
    m = TaskMetrics([task])
    m.update({task.name: out}, {task.name: tgt}, {task.name: mask})
    expected = m.compute()[task.metric_key]
    assert point(task, sample_stats(task, out, tgt, mask)) == pytest.approx(expected, rel=1e-6)  # float32 vs 64


def test_group_bootstrap_is_wider_when_renderings_agree():
    """50 groups x 4 renderings, each group all right or all wrong: the images are not independent, and
    resampling groups (not images) must say so with a wider interval."""
    rng = np.random.default_rng(0)
    right = rng.random(50) < 0.7
    groups = np.repeat(np.arange(50), 4)
    correct = np.repeat(right, 4)
    stats = np.stack([correct, np.ones_like(correct)], 1).astype(float)
    by_group = GroupBootstrap(groups.astype(str)).interval(BIN, stats)
    by_image = GroupBootstrap(np.arange(200).astype(str)).interval(BIN, stats)
    assert by_group.value == by_image.value == pytest.approx(correct.mean())
    assert by_group.half_width > 1.6 * by_image.half_width  # ~sqrt(4) = 2 for perfectly agreeing groups
    assert by_group.lo < correct.mean() < by_group.hi


def test_interval_covers_the_truth_in_most_repeats():
    """Groups drawn from a known accuracy: the 95 % interval covers it in roughly 95 % of 200 repeats."""
    rng = np.random.default_rng(1)
    covered = 0
    for _ in range(200):
        p_group = rng.beta(7, 3, 40)  # groups differ in difficulty; the mean accuracy is 0.7
        correct = (rng.random((40, 3)) < p_group[:, None]).ravel()
        stats = np.stack([correct, np.ones_like(correct)], 1).astype(float)
        s = GroupBootstrap(np.repeat(np.arange(40), 3).astype(str), n_resamples=500,
                           seed=int(rng.integers(1 << 30))).interval(BIN, stats)
        covered += s.lo <= 0.7 <= s.hi
    assert 0.88 <= covered / 200 <= 0.99


def test_paired_difference_and_verdict():
    groups = np.repeat(np.arange(40), 3).astype(str)
    boot = GroupBootstrap(groups)
    out, tgt = random_case(MC, 120, 2)
    mask = torch.ones(120, dtype=torch.bool)
    a = sample_stats(MC, out, tgt, mask)
    assert boot.paired(MC, a, a) == Score(0.0, 0.0, 0.0) and verdict(MC, Score(0, 0, 0)) == "no clear difference"
    perfect = sample_stats(MC, torch.nn.functional.one_hot(tgt, 4).float(), tgt, mask)
    d = boot.paired(MC, perfect, a)
    assert d.lo > 0 and verdict(MC, d) == "better" and verdict(MC, boot.paired(MC, a, perfect)) == "worse"
    # lower is better for MAE: a smaller error is "better" even though the difference is negative
    tgt_r = torch.rand(120) * 50
    good = sample_stats(REG, tgt_r + 1, tgt_r, mask)
    bad = sample_stats(REG, tgt_r + 10, tgt_r, mask)
    assert verdict(REG, boot.paired(REG, good, bad)) == "better"


def test_best_constant_is_the_best_constant():
    tgt = torch.tensor([2, 2, 1, 0, 2, 1])
    out = best_constant(MC, tgt, torch.ones(6, dtype=torch.bool))
    assert out.argmax(1).tolist() == [2] * 6
    assert constant_score(MC, tgt, torch.ones(6, dtype=torch.bool)) == pytest.approx(0.5)
    y = (torch.rand(30, 5, generator=torch.Generator().manual_seed(3)) < torch.tensor([0.8, 0.6, 0.3, 0.1, 0.5])).float()
    mask = torch.ones(30, dtype=torch.bool)
    got = constant_score(ML, y, mask)
    brute = 0.0
    for bits in itertools.product([0, 1], repeat=5):  # every constant label set
        if any(bits):
            pred = torch.tensor(bits, dtype=torch.float).expand(30, -1)
            brute = max(brute, point(ML, sample_stats(ML, pred * 20 - 10, y, mask)))
    assert got == pytest.approx(brute)
    ages = torch.tensor([10.0, 20.0, 30.0, 90.0])
    assert best_constant(REG, ages, torch.ones(4, dtype=torch.bool))[0] == pytest.approx(20.0)


def test_greedy_selection_picks_the_complementary_members():
    """Four candidates on 3 classes: A is right on the first half, B on the second half, C is A's twin
    and D is noise. Each alone scores 0.5; averaging A and B is right everywhere."""
    n = 40
    tgt = torch.arange(n) % 3
    onehot = torch.nn.functional.one_hot(tgt, 3).float()
    wrong = torch.nn.functional.one_hot((tgt + 1) % 3, 3).float()
    half = (torch.arange(n) < n // 2).float()[:, None]
    a = torch.log(0.05 + 0.9 * (half * onehot + (1 - half) * wrong * 0.6))
    b = torch.log(0.05 + 0.9 * ((1 - half) * onehot + half * wrong * 0.6))
    d = torch.randn(n, 3, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(n, dtype=torch.bool)
    task = Task("t", "multiclass", ("x", "y", "z"))
    counts = greedy_select(task, [a, b, a.clone(), d], tgt, mask)
    assert counts[3] == 0 and counts[0] + counts[2] >= 1 and counts[1] >= 1
    res = choose(task, [0, 1, 2, 3], 0, {i: {"t": o} for i, o in enumerate([a, b, a.clone(), d])}, tgt, mask)
    assert res["greedy"].val == pytest.approx(1.0) and res["chosen"].method == "greedy"
    assert res["routing"].val == pytest.approx(0.5)


def test_choice_prefers_the_simpler_method_on_ties():
    task = Task("t", "binary", ("x", "y"))
    tgt = torch.tensor([0.0, 1.0, 1.0, 0.0])
    perfect = torch.tensor([-5.0, 5.0, 5.0, -5.0])
    res = choose(task, [0, 1], 0, {0: {"t": perfect}, 1: {"t": perfect.clone()}}, tgt, torch.ones(4, dtype=torch.bool))
    assert res["chosen"].method == "routing" and not math.isnan(res["averaging"].val)


def test_delta_m_matches_maninis_and_is_paired():
    """Δm % = 100/T Σ s_t (M_t - B_t)/B_t with s = -1 for lower-is-better; a model equal to its baselines
    gives exactly 0 on every resample."""
    import numpy as np

    from mtl.bootstrap import GroupBootstrap, delta_m, sample_stats
    from mtl.tasks import Task
    acc, mae = Task("g", "binary", ("a", "b")), Task("age", "regression")
    groups = np.repeat(np.arange(20), 3)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    age = rng.uniform(10, 70, 60)
    m = np.ones(60, dtype=bool)
    out_m = {"g": np.where(rng.random(60) < 0.9, 2 * y - 1, 1 - 2 * y) * 3.0, "age": age + rng.normal(0, 4, 60)}
    out_b = {"g": np.where(rng.random(60) < 0.8, 2 * y - 1, 1 - 2 * y) * 3.0, "age": age + rng.normal(0, 6, 60)}
    st = lambda o: {"g": sample_stats(acc, o["g"], y, m), "age": sample_stats(mae, o["age"], age, m)}  # noqa: E731
    boot = GroupBootstrap(groups, seed=0)
    dm = delta_m(boot, [acc, mae], st(out_m), st(out_b))
    acc_m, acc_b = np.mean(np.sign(out_m["g"]) == 2 * y - 1), np.mean(np.sign(out_b["g"]) == 2 * y - 1)
    mae_m, mae_b = np.mean(np.abs(out_m["age"] - age)), np.mean(np.abs(out_b["age"] - age))
    assert dm.value == pytest.approx(50 * ((acc_m - acc_b) / acc_b - (mae_m - mae_b) / mae_b))
    assert dm.lo < dm.value < dm.hi and dm.value > 0
    same = delta_m(boot, [acc, mae], st(out_b), st(out_b))
    assert same.value == 0 and same.lo == 0 and same.hi == 0
