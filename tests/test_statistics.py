"""How results are compared, on constructed data: front-safe early stopping, Holm over a family of paired
differences, the per-method table of means, best-vs-runner-up, and what the test tables may not say."""

from __future__ import annotations

import math

import mlflow
import numpy as np
import optuna
import pytest
import torch
from optuna.distributions import CategoricalDistribution

from mtl.bootstrap import Family, GroupBootstrap, holm, p_value, sample_stats
from mtl.errors import UserError
from mtl.results.combine import greedy_select
from mtl.results.selection import Member
from mtl.results.tables import best_vs_runner_up, methods_table
from mtl.tasks import Task
from mtl.tune.early_stop import Curve, EarlyStop, best_mean_so_far, completed_curves, curve_key, should_stop
from mtl.tune.front import dominates

MAX2 = ["maximize", "maximize"]


# ---- early stopping -------------------------------------------------------------------------------------

def test_a_tie_is_never_stopped():
    """A running trial equal to k completed trials at an epoch ties them: weak dominance must not stop it."""
    curve = [[0.6, 0.5], [0.7, 0.6], [0.8, 0.7]]
    done = [Curve(curve, [0.0, 0.0]), Curve(curve, [0.0, 0.0])]
    for rule in (EarlyStop(k=1, margin=0.0, ci_margin=0.0, min_epoch=1), EarlyStop(k=2, ci_margin=0.5, min_epoch=1)):
        assert not any(should_stop(e, curve[:e], done, MAX2, rule) for e in (1, 2, 3))
    better = [[r[0] + 1e-3, r[1] + 1e-3] for r in curve]  # strictly ahead everywhere, no margin asked: stopped
    assert should_stop(2, curve[:2], [Curve(better, [0.0, 0.0])], MAX2,
                       EarlyStop(k=1, margin=0.0, ci_margin=0.0, min_epoch=1))


def test_with_one_epoch_for_all_tasks_curves_compare_the_epochs_a_trial_would_serve():
    """best_epoch="mean": a trial's objective is one epoch's whole vector, so the rule compares those. Per-task
    bests so far would mix the completed trial's two epochs into a point it never reached and stop a
    running trial whose own best-mean epoch no completed trial dominates (it ends on the one-epoch front)."""
    done = [Curve([[0.9, 0.1], [0.1, 0.9]], [0.0, 0.0])]  # each epoch's mean is 0.5: the first epoch stays
    running = [[0.5, 0.5], [0.6, 0.6]]
    rule = EarlyStop(k=1, margin=0.0, ci_margin=0.0, min_epoch=1)
    assert best_mean_so_far(done[0].rows, MAX2) == [[0.9, 0.1], [0.9, 0.1]]
    assert should_stop(2, running, done, MAX2, rule)  # per task: [0.9, 0.9] leads [0.6, 0.6]
    assert not should_stop(2, running, done, MAX2, rule, per_task=False)
    assert should_stop(2, running, [Curve([[0.7, 0.7], [0.8, 0.8]], [0.0, 0.0])], MAX2, rule, per_task=False)
    # lower-is-better scores count as -score/scale in the mean, as in training's patience
    assert best_mean_so_far([[0.5, 3.0], [0.6, 5.0]], ["maximize", "minimize"], [1.0, 10.0])[1] == [0.5, 3.0]
    nan = float("nan")  # an epoch with no score at all stands only until a scored one (as in training's BestStates)
    assert best_mean_so_far([[nan, nan], [0.2, 0.1], [0.1, 0.1]], MAX2)[1:] == [[0.2, 0.1], [0.2, 0.1]]


def test_a_slow_starter_that_ends_on_the_front_is_not_stopped():
    """Two fast starters plateau; the slow starter trails both on every task at epoch 4 by less than half their
    val half-width (0.03), then overtakes them. The old rule (any strict lead, k=2) stops it and loses a front
    member; the interval-margin rule does not."""
    fast_a = [[0.60, 0.60], [0.70, 0.69], [0.74, 0.73], [0.76, 0.75], [0.77, 0.76], [0.77, 0.77]]
    fast_b = [[0.61, 0.59], [0.70, 0.70], [0.75, 0.72], [0.76, 0.755], [0.765, 0.76], [0.77, 0.765]]
    slow = [[0.40, 0.40], [0.60, 0.60], [0.70, 0.70], [0.755, 0.745], [0.79, 0.78], [0.81, 0.80]]
    done = [Curve(fast_a, [0.03, 0.03]), Curve(fast_b, [0.03, 0.03])]
    finals = [c.rows[-1] for c in done]
    assert not any(dominates(f, slow[-1], MAX2) for f in finals)  # it ends on the front
    old = EarlyStop(k=2, margin=0.0, ci_margin=0.0, min_epoch=4)
    assert should_stop(4, slow[:4], done, MAX2, old)  # what the margin-free rule would have done
    new = EarlyStop(k=2, ci_margin=0.5, min_epoch=4)
    assert not any(should_stop(e, slow[:e], done, MAX2, new) for e in range(1, len(slow) + 1))
    # far behind (more than the margin on every task) is still stopped: the rule saves epochs
    hopeless = [[r[0] - 0.1, r[1] - 0.1] for r in slow[:4]]
    assert should_stop(4, hopeless, done, MAX2, new)


def test_curves_of_another_schedule_are_ignored():
    """A study resumed with other EPOCHS (or another scheduler) compares only curves of its own schedule."""
    rows = [[0.9, 0.9]] * 4
    trials = [optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=[0.9, 0.9], user_attrs=attrs)
              for attrs in ({"val_curve": rows, "schedule": "cosine/10", "epochs": 10, "ci.a": [0.88, 0.92]},
                            {"val_curve": rows, "schedule": "none/15", "epochs": 15},
                            {"val_curve": rows, "epochs": 10})]  # stored before schedules were recorded
    key = curve_key(15, "cosine")
    assert completed_curves(trials, key, ["a", "b"]) == []
    running = [[0.1, 0.1]] * 4
    assert not should_stop(4, running, completed_curves(trials, key, ["a", "b"]), MAX2, EarlyStop(k=1, min_epoch=1))
    same = completed_curves(trials, curve_key(10, "cosine"), ["a", "b"])
    assert len(same) == 2 and same[0].half_widths == pytest.approx([0.02, 0.0])  # the attr-less one: by epochs
    assert should_stop(4, running, same, MAX2, EarlyStop(k=2, min_epoch=1))


# ---- Holm and bootstrap p-values -----------------------------------------------------------------------

def test_holm_matches_a_hand_computation():
    # sorted: 0.005 x4 = 0.02; 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> monotone 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, math.nan, 0.01]) == pytest.approx([0.5, math.nan, 0.02], nan_ok=True)  # NaN not counted
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # 0.8 x 2 capped at 1; 0.9 x 1 made monotone


def test_family_judges_with_the_adjusted_level():
    """Three differences whose replicates give p = 0.02, 0.03 and 0.001: alone each would be 'better' at 5 %;
    with Holm the smallest is 0.003 (kept), then 0.02 x 2 = 0.04 (kept), then 0.03 x 1 -> 0.04 (kept); a
    fourth null comparison pushes the other two to 0.06 (dropped)."""
    def reps(neg_share, n=1999):  # n replicates, a share of them at or below 0
        k = round(neg_share * (n + 1) / 2) - 1  # p = 2 (k + 1) / (n + 1)
        return np.r_[np.full(k, -0.01), np.full(n - k, 0.02)]
    assert p_value(reps(0.02)) == pytest.approx(0.02)
    fam = Family("constructed")
    for key, share in (("a", 0.02), ("b", 0.03), ("c", 0.001)):
        fam.add(key, "maximize", 0.02, reps(share))
    j = fam.judge()
    assert [j[k].verdict for k in "abc"] == ["better"] * 3
    assert j["c"].p_adj == pytest.approx(0.003) and j["a"].p_adj == pytest.approx(0.04)
    assert j["c"].level == pytest.approx(1 - 0.05 / 3) and j["b"].level == pytest.approx(0.95)
    fam.add("null", "maximize", 0.0, np.linspace(-1, 1, 1999))
    j = fam.judge()
    assert j["c"].verdict == "better" and j["a"].verdict == j["b"].verdict == "no clear difference"
    assert j["a"].p_adj == pytest.approx(0.06)
    fam2 = Family("lower is better")
    fam2.add("mae", "minimize", 0.02, reps(0.001))
    assert fam2.judge()["mae"].verdict == "worse" and "Holm" in fam2.statement()


# ---- constructed manifests: val splits of groups ---------------------------------------------------------

class Split:
    """A duck-typed manifest with one val split: `groups` groups of `per` images, one binary task per name."""

    def __init__(self, names, groups=40, per=3, seed=0):
        rng = np.random.default_rng(seed)
        self.tasks = [Task(n, "binary", ("n", "y")) for n in names]
        self.group = np.repeat(np.arange(groups), per).astype(str)
        self.y = {n: rng.integers(0, 2, groups * per).astype(np.float32) for n in names}

    def task(self, name):
        return next(t for t in self.tasks if t.name == name)

    def targets(self, split):
        return dict(self.y), {n: np.ones(len(v), dtype=bool) for n, v in self.y.items()}

    def groups(self, split):
        return self.group

    def outputs(self, correct: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Logits right where `correct` is True."""
        return {n: torch.tensor(np.where(c, 1.0, -1.0) * np.where(self.y[n] > 0, 5.0, -5.0), dtype=torch.float32)
                for n, c in correct.items()}


def _study(params: list[dict]):
    s = optuna.create_study(directions=MAX2)
    for p in params:
        s.add_trial(optuna.trial.create_trial(params=p, distributions={
            k: CategoricalDistribution(["fixed", "steady", "noisy", "twin"]) for k in p}, values=[0.5, 0.5]))
    return s


class _Spec:
    objectives = ["a", "b"]


def test_the_method_table_reports_means_and_holm_differences_against_fixed():
    """Three repeats per method. `noisy` has one lucky repeat (its best beats everything) but the lowest mean;
    `steady` is right on 80 % of images in every repeat; `twin` repeats fixed's outputs. Cells are means; the
    ranking follows the Holm-adjusted paired differences."""
    m = Split(["a", "b"], groups=60)
    n = len(m.group)
    rng = np.random.default_rng(1)

    def correct(share):
        return {t: rng.random(n) < share for t in ("a", "b")}
    plan = {"fixed": [0.6, 0.6, 0.6], "steady": [0.8, 0.8, 0.8], "noisy": [0.3, 0.95, 0.3], "twin": None}
    outs, params = {}, []
    fixed_outs = [m.outputs(correct(s)) for s in plan["fixed"]]
    for method, shares in plan.items():
        for r in range(3):
            outs[len(params)] = fixed_outs[r] if method == "twin" else (
                fixed_outs[r] if method == "fixed" else m.outputs(correct(shares[r])))
            params.append({"method": method})
    s = _study(params)
    members = [Member(i, f"run{i}", [0.5, 0.5]) for i in range(len(params))]
    table = methods_table(_Spec(), s, members, m, outs)
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    score = {i: sample_stats(m.task("a"), outs[i]["a"], m.y["a"], np.ones(n, bool)) for i in outs}
    mean_noisy = np.mean([score[i][:, 0].sum() / score[i][:, 1].sum() for i in (6, 7, 8)])
    assert f"{mean_noisy:.3f} ±" in table  # the mean over repeats, not the lucky best (about 0.95)
    assert "| noisy | 3 |" in table and "| fixed | 3 |" in table
    diffs = table.split("Paired difference")[1]
    steady = next(line for line in diffs.splitlines() if line.startswith("| steady |"))
    noisy = next(line for line in diffs.splitlines() if line.startswith("| noisy |"))
    twin = next(line for line in diffs.splitlines() if line.startswith("| twin |"))
    assert steady.count("▲") == 2 and "▲" not in twin and "▼" not in twin and twin.count("+0.000 [") == 2
    assert "▲" not in noisy  # one lucky repeat of three does not make a win
    assert "Holm" in table and "(6 paired comparisons)" in table
    assert "steady above fixed" in table and rows["fixed"]


def test_best_vs_runner_up_decides_where_intervals_overlap():
    """The issue's case: two models whose 95 % intervals overlap, one right on a few more images of several
    groups: the paired difference excludes 0 (and Holm over one task keeps it)."""
    m = Split(["a"], groups=50, per=4, seed=3)
    n = len(m.group)
    rng = np.random.default_rng(0)
    base = rng.random(n) < 0.7
    better = base.copy()
    flip = np.flatnonzero(~base)[:8]  # right on 8 images the other gets wrong (+0.04)
    better[flip] = True
    outs = {"r0": m.outputs({"a": base}), "r1": m.outputs({"a": better})}
    boot = GroupBootstrap(m.group)
    task = m.task("a")
    iv = [boot.interval(task, sample_stats(task, outs[r]["a"], m.y["a"], np.ones(n, bool))) for r in ("r0", "r1")]
    assert iv[0].hi > iv[1].lo  # the intervals overlap
    members = [Member(0, "r0", [iv[0].value]), Member(1, "r1", [iv[1].value])]

    class Spec:
        objectives = ["a"]
    text = best_vs_runner_up(Spec(), m, {"a": members[1]}, members, lambda run, t: outs[run][t])
    assert "trial 1 - trial 0 +" in text and "a clear lead" in text and "overlapping intervals" in text


def test_greedy_selection_without_val_labels_is_one_clear_error():
    task = Task("colors", "multilabel", ("r", "g"))
    with pytest.raises(UserError, match="'colors': no labelled sample") as e:
        greedy_select(task, [torch.zeros(4, 2)], torch.zeros(4, 2), torch.zeros(4, dtype=torch.bool))
    assert "\n" not in str(e.value)


def test_tune_summary_and_pareto_aliases_break_ties_alike(isolated_stores, fgo_small):
    """Trial 0 ties trial 1 on gender but is dominated by it; trials 1 and 2 tie on gender on the front. The
    tune summary's ^ and pareto's best-per-task (what the aliases point at) both name trial 1."""
    from mtl.commands.tune import summary_table
    from mtl.results.selection import select
    from mtl.tune.storage import make_storage
    (isolated_stores / "experiments").mkdir()
    (isolated_stores / "experiments" / "ties.py").write_text(
        f'MANIFEST = "{fgo_small}"\nOBJECTIVES = ["gender", "region"]\nfrom mtl.train.config import TrainConfig\n'
        'BASE = TrainConfig()\n\ndef search_space(trial, base):\n    return base\n')
    (isolated_stores / "optuna").mkdir()
    s = optuna.create_study(study_name="ties", directions=MAX2, storage=make_storage("optuna/ties.log"))
    client = mlflow.MlflowClient()
    exp = client.create_experiment("ties")
    for values in ([0.9, 0.1], [0.9, 0.5], [0.9, 0.5], [0.5, 0.6]):
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "best_val/gender/acc", values[0])
        client.log_metric(run.info.run_id, "best_val/region/acc", values[1])
        s.add_trial(optuna.trial.create_trial(values=values, user_attrs={"mlflow_run_id": run.info.run_id}))
    s.set_metric_names(["val/gender/acc", "val/region/acc"])
    _, _, front, best, _ = select("ties")
    assert {m.number for m in front} == {1, 2, 3} and best["gender"].number == 1 and best["region"].number == 3
    tasks = [Task("gender", "binary", ("F", "M")), Task("region", "multiclass", ("a", "b"))]
    rows = {int(line.split()[0]): line for line in summary_table(s, tasks).splitlines()[1:-1]}
    gender_best = [n for n, line in rows.items() if line.split("]")[1].startswith("^")]
    region_best = [n for n, line in rows.items() if line.split("]")[2].startswith("^")]
    assert gender_best == [1] and region_best == [3]


def test_tied_with_best_and_prefer_simplest_on_a_constructed_case():
    """Trial 0 is the best; trial 1 is one image worse (tied), trial 2 far worse (not tied), trial 3 equal to
    trial 0. Simplest among the tied front members: the one with fewest trainable parameters, earliest on ties."""
    from mtl.results.selection import simplest, tied_with_best
    m = Split(["a"], groups=50, per=4, seed=5)
    n = len(m.group)
    rng = np.random.default_rng(2)
    best = rng.random(n) < 0.8
    one_worse = best.copy()
    one_worse[np.flatnonzero(best)[0]] = False
    far = rng.random(n) < 0.4
    outs = {f"r{i}": m.outputs({"a": c}) for i, c in enumerate([best, one_worse, far, best.copy()])}
    members = [Member(i, f"r{i}", [0.0]) for i in range(4)]
    tied = tied_with_best(m.tasks, m, members, {"a": members[0]}, lambda run, t: outs[run][t])
    assert [x.number for x in tied["a"]] == [0, 1, 3]
    trainable = {0: 5_000, 1: 1_000, 2: 10, 3: 1_000}
    assert simplest(tied["a"], trainable, members).number == 1  # fewest parameters, earliest of 1 and 3
    assert simplest(tied["a"], trainable, [members[0], members[3]]).number == 3  # only front members qualify
    assert simplest(tied["a"], {}, members).number == 0  # unknown sizes: the nominal order


def test_the_score_rule_normalises_direction_and_scale_and_leaves_nan_out():
    from mtl.score import mean_score
    nan = float("nan")
    assert mean_score([0.8, 4.0], ["maximize", "minimize"], [1.0, 10.0]) == pytest.approx((0.8 - 0.4) / 2)
    assert mean_score([0.8, nan], ["maximize", "maximize"]) == 0.8  # a task without a score is left out
    assert math.isnan(mean_score([nan, nan], ["maximize", "minimize"]))
