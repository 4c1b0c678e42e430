"""The val-side tables `make pareto` prints and logs: the front (with intervals and Δm %), each task's best
against its runner-up (paired, Holm over the tasks), and, for studies that search `method`, the
per-method table of means with Holm-judged differences against `fixed`. Nothing here reads test."""

from __future__ import annotations

import math

import numpy as np

from mtl.bootstrap import Family, GroupBootstrap, delta_m_reps, point, resamples_for, sample_stats


def front_table(study, front, attrs: dict, best_for: dict):
    """The Pareto members: trial, run, each task's val score with its interval, Δm %, best-for tasks."""
    import pandas as pd
    rows = []
    for m in front:
        row = {"trial": m.number, "run_id": m.run_id, "best_for": ",".join(best_for.get(m.number, []))}
        for task, v in zip(study.objectives, m.values):
            lo, hi = attrs[m.number].get(f"ci.{task}", (math.nan, math.nan))
            row.update({f"{task}": v, f"{task}_lo": lo, f"{task}_hi": hi})
        if "delta_m" in attrs[m.number]:
            row.update(dict(zip(("delta_m", "delta_m_lo", "delta_m_hi"), attrs[m.number]["delta_m"])))
        rows.append(row)
    return pd.DataFrame(rows)


def method_of(params: dict) -> str | None:
    return params.get("method", params.get("weighting"))  # studies run before the rename say `weighting`


def methods_table(study, s, members, manifest, val_outputs: dict[int, dict], single_stats: dict | None = None,
                  reference: str = "fixed", seed: int = 0) -> str | None:
    """Studies that search `method`: per method and task the mean val score over its trials (repeats), with a
    95 % interval of that mean from a bootstrap that resamples the val groups (the same resamples for every
    method: paired) and each method's repeats (seed noise); the paired difference of each method's mean
    against `reference`'s, judged with Holm over every difference of the table. A method ranks above or
    below the reference only where the adjusted p-value is below 0.05. Means, not each method's best
    repeat: the best of n noisy draws rewards noise. `val_outputs`: trial number -> task -> val outputs."""
    trials = {t.number: t for t in s.trials}
    by_method: dict[str, list[int]] = {}
    for m in members:
        method = method_of(trials[m.number].params)
        if method is not None and m.number in val_outputs:
            by_method.setdefault(method, []).append(m.number)
    if len(by_method) < 2:
        return None
    tasks = [manifest.task(n) for n in study.objectives]
    targets, masks = manifest.targets("val")
    n_cols = len(tasks) + bool(single_stats)
    boot = GroupBootstrap(manifest.groups("val"), resamples_for((len(by_method) - (reference in by_method)) * n_cols))
    n_reps = boot.weights.shape[0]
    per_trial = {}  # trial -> column -> (point, replicates)
    for n in (n for ns in by_method.values() for n in ns):
        stats = {t.name: sample_stats(t, val_outputs[n][t.name], targets[t.name], masks[t.name]) for t in tasks}
        per_trial[n] = {t.name: (point(t, stats[t.name]), boot.replicates(t, stats[t.name])) for t in tasks}
        if single_stats:
            with np.errstate(invalid="ignore"):
                per_trial[n][DM] = delta_m_reps(boot, tasks, stats, single_stats)
    cols = [t.name for t in tasks] + ([DM] if single_stats else [])
    means: dict[str, dict[str, tuple]] = {}  # method -> column -> (mean, sd over repeats, replicates of the mean)
    for i, (method, nums) in enumerate(by_method.items()):
        rng = np.random.default_rng([seed, i])
        pick = rng.integers(0, len(nums), size=(n_reps, len(nums)))  # each replicate redraws the repeats too
        means[method] = {}
        for c in cols:
            vals = np.array([per_trial[n][c][0] for n in nums])
            reps = np.stack([per_trial[n][c][1] for n in nums])[pick, np.arange(n_reps)[:, None]].mean(1)
            means[method][c] = (float(vals.mean()), float(vals.std(ddof=1)) if len(vals) > 1 else math.nan, reps)
    names = {t.name: f"{t.name} {t.primary_metric}" for t in tasks} | {DM: "Δm %"}
    digits = {c: 1 if c == DM else 3 for c in cols}
    lines = [f"Per method: mean val score over its trials ± sd over them [95 % interval of the mean: val groups and "
             f"the method's trials resampled, {n_reps} resamples]" + ("; Δm % vs the single-task baselines" if single_stats
                                                                       else "") + ".", "",
             "| method | trials | " + " | ".join(names[c] for c in cols) + " |", "|---|---:|" + "---:|" * len(cols)]
    for method, nums in by_method.items():
        cells = []
        for c in cols:
            mean, sd, reps = means[method][c]
            lo, hi = _quantiles(reps)
            d = digits[c]
            cells.append(f"{mean:.{d}f} ± {sd:.{d}f} [{lo:.{d}f}, {hi:.{d}f}]")
        lines.append(f"| {method} | {len(nums)} | " + " | ".join(cells) + " |")
    if reference not in by_method:
        return "\n".join(lines + ["", f"No `{reference}` trials: no paired differences."])
    family = Family(f"every method other than {reference} x every column of this table, on val")
    directions = {t.name: t.direction for t in tasks} | {DM: "maximize"}  # Δm %: positive is better
    for method in by_method:
        if method == reference:
            continue
        for c in cols:
            family.add((method, c), directions[c], means[method][c][0] - means[reference][c][0],
                       means[method][c][2] - means[reference][c][2])
    judged = family.judge()
    mark = {"better": " ▲", "worse": " ▼", "no clear difference": ""}
    lines += ["", f"Paired difference of the means against `{reference}` [interval at Holm's level]; ▲/▼: better/worse "
              f"than {reference} after Holm. " + family.statement(), "",
              "| method | " + " | ".join(names[c] for c in cols) + " |", "|---|" + "---:|" * len(cols)]
    for method in by_method:
        if method != reference:
            lines.append(f"| {method} | " + " | ".join(
                (f"{judged[(method, c)].diff.value:+.{digits[c]}f} [{judged[(method, c)].diff.lo:+.{digits[c]}f}, "
                 f"{judged[(method, c)].diff.hi:+.{digits[c]}f}]" + mark[judged[(method, c)].verdict]) for c in cols) + " |")
    ranked = [f"{names[c]}: " + ", ".join(f"{m} {'above' if j.verdict == 'better' else 'below'} {reference}"
                                          for (m, cc), j in judged.items() if cc == c and j.verdict != "no clear difference")
              for c in cols]
    ranked = [r for r in ranked if not r.endswith(": ")]
    lines += ["", "Ranking against " + reference + ": " + ("; ".join(ranked) if ranked else
              f"no method differs from {reference} on any column after Holm's correction.")]
    return "\n".join(lines)


DM = "delta_m"


def _quantiles(reps: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    reps = reps[np.isfinite(reps)]
    if len(reps) == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(reps, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def best_vs_runner_up(study, manifest, best: dict, members, task_output) -> str:
    """Each task's best trial against that task's runner-up (the next-best completed trial), paired on the same
    val resamples, judged with Holm over the tasks. Two intervals that overlap do not say the difference may be
    luck: only the paired difference on the same split does. `task_output(run_id, task)`: its val outputs."""
    tasks = [manifest.task(n) for n in study.objectives]
    targets, masks = manifest.targets("val")
    boot = GroupBootstrap(manifest.groups("val"), resamples_for(len(tasks)))
    family = Family("each task's best trial - its runner-up, on val")
    pairs = {}
    for i, t in enumerate(tasks):
        others = [m for m in members if m.number != best[t.name].number]
        if not others:
            continue
        runner = (min if t.direction == "minimize" else max)(others, key=lambda m: m.values[i])
        stats = [sample_stats(t, task_output(m.run_id, t.name), targets[t.name], masks[t.name])
                 for m in (best[t.name], runner)]
        family.add(t.name, t.direction, *boot.paired_reps(t, *stats))
        pairs[t.name] = runner.number
    if not pairs:
        return ""
    judged = family.judge()
    lines = ["Best trial vs runner-up per task, paired on the same val groups (overlapping intervals of two trials "
             "do not decide; the paired difference does). " + family.statement()]
    for t in tasks:
        if t.name in pairs:
            j = judged[t.name]
            lines.append(f"  {t.name}: trial {best[t.name].number} - trial {pairs[t.name]} {j.diff.signed()}, "
                         f"adjusted p {j.p_adj:.3g}: " + ("a clear lead" if j.verdict == "better" else
                                                          "no clear lead (either could be best on another split)"))
    return "\n".join(lines)
