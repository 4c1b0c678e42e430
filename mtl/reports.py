"""The tables a researcher reads: the test-split scores of every model with their paired comparisons
(`final_scores`, the one place test labels are read, and `reports/<study>/report.md`), and pareto's
front and per-method tables. Every score carries its 95 % group-bootstrap interval."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mtl.bootstrap import Family, GroupBootstrap, Judged, Score, delta_m, delta_m_reps, point, sample_stats
from mtl.metrics import best_constant
from mtl.tasks import Task

SINGLE = "single-task"  # the row of the single-task baselines (one head alone per task), when the study has them


# rows that are not one training run: their Δm would mix selection among many runs with multi-task benefit
SELECTED = ("routing", "averaging", "greedy", "chosen on val")


@dataclass
class Final:
    """The test-split scores of every model, with intervals, and the paired comparisons the report makes."""
    rows: dict[str, dict[str, Score]]  # model -> task -> score
    comparisons: dict[str, list[tuple[str, Judged]]]  # task -> (what, a - b judged with Holm over the family)
    n_groups: int
    n_images: int
    delta_m: dict[str, Score] = field(default_factory=dict)  # single runs -> Δm % vs the single-task baselines
    family: str = ""  # the statement of the comparisons' family and procedure


def final_scores(tasks, manifest, outputs: dict[str, dict[str, torch.Tensor]], rounds: list[str]) -> Final:
    """The one place the test labels are read: score every model and make the paired comparisons, judged
    together (Holm over every comparison of the report)."""
    targets, masks = manifest.targets("test")
    boot = GroupBootstrap(manifest.groups("test"))
    outputs = {"best constant": {t.name: best_constant(t, targets[t.name], masks[t.name]) for t in tasks}, **outputs}
    stats = {name: {t.name: sample_stats(t, out[t.name], targets[t.name], masks[t.name]) for t in tasks}
             for name, out in outputs.items()}
    rows = {name: {t.name: boot.interval(t, st[t.name]) for t in tasks} for name, st in stats.items()}
    pairs = [("tuned best - best constant", "routing", "best constant")]
    pairs += [(f"tuned best - {r}", "routing", r) for r in rounds]
    pairs += [("chosen ensemble - tuned best", "chosen on val", "routing")]
    family = Family(f"every task x ({'; '.join(what for what, _, _ in pairs)}) on test")
    for t in tasks:
        for what, a, b in pairs:
            family.add((t.name, what), t.direction, *boot.paired_reps(t, stats[a][t.name], stats[b][t.name]))
    judged = family.judge()
    comparisons = {t.name: [(what, judged[(t.name, what)]) for what, _, _ in pairs] for t in tasks}
    dm = {name: delta_m(boot, tasks, st, stats[SINGLE]) for name, st in stats.items()
          if SINGLE in stats and name not in (SINGLE, "best constant", *SELECTED)}
    return Final(rows, comparisons, boot.n_groups, len(manifest.rows("test")), dm, family.statement())


DELTA_M_NOTE = ("Δm % (Maninis et al. 2019), only for single training runs (each round, each trial): one multi-task "
                "run against the single-task baselines (this study's BASE with one head alone, the same epochs and "
                "warm start, one run per task), 100/T Σ ±(M − B)/B, interval paired over the same resamples. The tuned "
                "best and the ensembles are picked among many runs, so their Δm would mix tuning with multi-task "
                "benefit: not reported.")


def to_markdown(final: Final, tasks: list[Task], choices: dict) -> str:
    """Test score [95 % interval] of every model; no marker of a best test score (selection reads val only)."""
    cols = [t.name for t in tasks]
    dm = bool(final.delta_m)
    lines = [f"Test split: {final.n_groups} groups, {final.n_images} images; score [95 % group-bootstrap interval]. "
             "Models were chosen on val; no row here is marked best on test, and picking one by these scores would "
             "be selecting on test." + (" " + DELTA_M_NOTE if dm else ""),
             "", "| model | " + " | ".join(f"{t.name} {t.primary_metric}" for t in tasks) + (" | Δm % |" if dm else " |"),
             "|---|" + "---:|" * (len(cols) + dm)]
    for name, row in final.rows.items():
        label = name if name != "averaging" else f"averaging ({len(choices[tasks[0].name]['averaging'].weights)})"
        cells = [str(row[c]) for c in cols]
        if dm:
            d = final.delta_m.get(name)
            cells.append(_pct(d) if d else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "chosen on val: " + "; ".join(f"{t.name} {choices[t.name]['chosen'].describe()}" for t in tasks)]
    return "\n".join(lines) + "\n"


def _pct(d: Score) -> str:
    return f"{d.value:+.1f} [{d.lo:+.1f}, {d.hi:+.1f}]"


def _sentence(task: Task, comps: list[tuple[str, Judged]]) -> str:
    said = []
    for what, j in comps:
        a, b = what.split(" - ")
        word = {"better": "beats", "worse": "is worse than", "no clear difference": "is not clearly different from"}[j.verdict]
        said.append(f"the {a} {word} the {b} ({j.diff.signed()}, adjusted p {j.p_adj:.3g})")
    return "; ".join(said) + "."


def write_report(path: Path, study, manifest, tasks: list[Task], final: Final, choices: dict, rounds: list[str]) -> Path:
    """`reports/<study>/report.md`: per task the best constant, the rounds, the tuned best and the chosen
    ensemble on test with intervals, the paired differences judged with Holm, and a sentence on what holds."""
    order = ["best constant", *([SINGLE] if SINGLE in final.rows else []), *rounds, "routing", "chosen on val"]
    names = {"routing": "tuned best (val-selected trial)", "chosen on val": "chosen ensemble (on val)"}
    lines = [f"# {study.name}: what holds on the test split", "",
             f"Manifest `{manifest.path}`; test split: {final.n_groups} groups, {final.n_images} images, read once, "
             f"after every selection step used val only. Scores are point estimates with 95 % group-bootstrap "
             f"intervals (groups resampled, 2000 resamples); differences are paired on the same resamples. "
             + final.family, "",
             "| task | " + " | ".join(names.get(n, n) for n in order) + " |", "|---|" + "---:|" * len(order)]
    for t in tasks:
        lines.append(f"| {t.name} ({t.primary_metric}) | " + " | ".join(str(final.rows[n][t.name]) for n in order) + " |")
    if any(n in final.delta_m for n in order):
        lines.append("| Δm % vs single-task | " + " | ".join(
            _pct(final.delta_m[n]) if n in final.delta_m else "" for n in order) + " |")
        lines += ["", DELTA_M_NOTE]
    for t in tasks:
        c = choices[t.name]
        lines += ["", f"## {t.name} ({t.primary_metric}, {'lower' if t.direction == 'minimize' else 'higher'} is better)",
                  "", f"Tuned best: {c['routing'].describe()} (val {c['routing'].val:.3f}); chosen ensemble: "
                  f"{c['chosen'].describe()} (val {c['chosen'].val:.3f}; averaging {c['averaging'].val:.3f}, "
                  f"greedy {c['greedy'].val:.3f}).", "",
                  "| comparison (a - b) | difference [CI at Holm's level] | p | adjusted p | verdict |",
                  "|---|---:|---:|---:|---|"]
        lines += [f"| {what} | {j.diff.signed()} ({100 * j.level:.2f} %) | {j.p:.3g} | {j.p_adj:.3g} | {j.verdict} |"
                  for what, j in final.comparisons[t.name]]
        lines += ["", "On test, " + _sentence(t, final.comparisons[t.name])]
    path.write_text("\n".join(lines) + "\n")
    return path


def score_cell(value: float, ci=None, digits: int = 3) -> str:
    lo, hi = ci if ci else (math.nan, math.nan)
    return f"{value:.{digits}f} [{lo:.{max(digits - 1, 1)}f},{hi:.{max(digits - 1, 1)}f}]"


def delta_m_of(attrs: dict) -> tuple[float, tuple[float, float]]:
    v, lo, hi = attrs.get("delta_m", (math.nan, math.nan, math.nan))
    return v, (lo, hi)


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
    boot = GroupBootstrap(manifest.groups("val"))
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
    boot = GroupBootstrap(manifest.groups("val"))
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
