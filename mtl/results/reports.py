"""The test-split report a researcher reads: every model's test scores with their paired comparisons,
judged as one Holm family (`final_scores`, the one place test labels are read), `ensemble_test.md`
and `reports/<study>/report.md` with the winner's curse of selection on val. Every score carries its
95 % group-bootstrap interval. (The val-side tables of `make pareto` are in mtl/results/tables.py.)"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mtl.bootstrap import Family, GroupBootstrap, Judged, Score, delta_m, point, resamples_for, sample_stats
from mtl.model.losses import per_sample_loss
from mtl.model.metrics import best_constant
from mtl.tasks import Task

SERVED = "served ensemble"  # the row of @ensemble when a serving budget made it differ from the chosen ensemble
SINGLE = "single-task"  # the row of the single-task baselines (one head alone per task), when the study has them


# rows that are not one training run: their Δm would mix selection among many runs with multi-task benefit
SELECTED = ("routing", "averaging", "greedy", "chosen on val", SERVED)


@dataclass
class Final:
    """The test-split scores of every model, with intervals, and the paired comparisons the report makes."""
    rows: dict[str, dict[str, Score]]  # model -> task -> score
    comparisons: dict[str, list[tuple[str, Judged]]]  # task -> (what, a - b judged with Holm over the family)
    n_groups: int
    n_images: int
    delta_m: dict[str, Score] = field(default_factory=dict)  # single runs -> Δm % vs the single-task baselines
    family: str = ""  # the statement of the comparisons' family and procedure
    n_resamples: int = 0


def final_scores(tasks, manifest, outputs: dict[str, dict[str, torch.Tensor]], rounds: list[str]) -> Final:
    """The one place the test labels are read: score every model and make the paired comparisons, judged
    together (Holm over every comparison of the report)."""
    targets, masks = manifest.targets("test")
    pairs = [("tuned best - best constant", "routing", "best constant")]
    pairs += [(f"tuned best - {r}", "routing", r) for r in rounds]
    pairs += [("chosen ensemble - tuned best", "chosen on val", "routing")]
    if SERVED in outputs:
        pairs += [("served ensemble - tuned best", SERVED, "routing")]
    boot = GroupBootstrap(manifest.groups("test"), resamples_for(len(pairs) * len(tasks)))
    outputs = {"best constant": {t.name: best_constant(t, targets[t.name], masks[t.name]) for t in tasks}, **outputs}
    stats = {name: {t.name: sample_stats(t, out[t.name], targets[t.name], masks[t.name]) for t in tasks}
             for name, out in outputs.items()}
    rows = {name: {t.name: boot.interval(t, st[t.name]) for t in tasks} for name, st in stats.items()}
    family = Family(f"every task x ({'; '.join(what for what, _, _ in pairs)}) on test")
    for t in tasks:
        for what, a, b in pairs:
            family.add((t.name, what), t.direction, *boot.paired_reps(t, stats[a][t.name], stats[b][t.name]))
    judged = family.judge()
    comparisons = {t.name: [(what, judged[(t.name, what)]) for what, _, _ in pairs] for t in tasks}
    dm = {name: delta_m(boot, tasks, st, stats[SINGLE]) for name, st in stats.items()
          if SINGLE in stats and name not in (SINGLE, "best constant", *SELECTED)}
    return Final(rows, comparisons, boot.n_groups, len(manifest.rows("test")), dm, family.statement(),
                 boot.weights.shape[0])


DELTA_M_NOTE = ("Δm % (Maninis et al. 2019), only for single training runs (each round, each trial): one multi-task "
                "run against the single-task baselines (this study's BASE with one head alone, the same epochs and "
                "warm start, one run per task), 100/T Σ ±(M − B)/B, interval paired over the same resamples. The tuned "
                "best and the ensembles are picked among many runs, so their Δm would mix tuning with multi-task "
                "benefit: not reported.")


def to_markdown(final: Final, tasks: list[Task], choices: dict, served: dict | None = None) -> str:
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
    if served is not None and served is not choices:
        lines += ["", "served ensemble (serving budget, on val): " + "; ".join(
            f"{t.name} {served[t.name]['chosen'].describe()}" for t in tasks)]
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


@dataclass
class ValSelection:
    """What selection on val looked like: each task's tied count, and the front trials' val scores."""
    n_completed: int
    tied: dict[str, int]  # task -> trials whose paired val difference from the best contains 0
    front_val: dict[int, list[float]]  # front trial number -> val score per objective (task order)


def _optimism(task: Task, val: float, test: float) -> float:
    """How much better val looked than test (positive: val flattered the model)."""
    return (val - test) if task.direction == "maximize" else (test - val)


def selection_lines(tasks: list[Task], final: Final, choices: dict, sel: ValSelection,
                    served: dict | None = None) -> list[str]:
    """The winner's curse: each selected model's val score next to its test score, against the mean optimism
    of the front's trials, and how many trials val could not tell apart from the selected best."""
    cols = [("routing", "routing", "tuned best"), ("chosen", "chosen on val", "chosen ensemble")]
    if served is not None and SERVED in final.rows:  # the served ensemble: the best of many budgeted sets on val
        cols.append(("served", SERVED, "served ensemble"))
    lines = ["", "## Selection on val and what it cost (winner's curse)", "",
             "Val score → test score (optimism = how much better val looked). A model picked as the best of many on "
             "val is expected to look better on val than it is; the front trials' mean optimism is the reference. "
             "Tied: trials whose paired val difference from the tuned best has a 95 % interval containing 0.", "",
             "| task | " + " | ".join(f"{label} val → test (optimism)" for _, _, label in cols)
             + " | front trials' mean optimism ± sd | tied with the tuned best on val |",
             "|---|" + "---:|" * (len(cols) + 2)]
    for i, t in enumerate(tasks):
        cells = []
        for key, row, _ in cols:
            c = (served if key == "served" else choices)[t.name]["chosen" if key == "served" else key]
            test = final.rows[row][t.name].value
            cells.append(f"{c.val:.3f} → {test:.3f} ({_optimism(t, c.val, test):+.3f})")
        opt = [_optimism(t, v[i], final.rows[f"trial-{n}"][t.name].value) for n, v in sel.front_val.items()
               if f"trial-{n}" in final.rows]
        sd = float(np.std(opt, ddof=1)) if len(opt) > 1 else math.nan
        cells.append(f"{np.mean(opt):+.3f} ± {sd:.3f} ({len(opt)})" if opt else "")
        cells.append(f"{sel.tied.get(t.name, 0)} of {sel.n_completed}")
        lines.append(f"| {t.name} | " + " | ".join(cells) + " |")
    return lines


def write_report(path: Path, study, manifest, tasks: list[Task], final: Final, choices: dict, rounds: list[str],
                 selection: ValSelection | None = None, served: dict | None = None) -> Path:
    """`reports/<study>/report.md`: per task the best constant, the rounds, the tuned best and the chosen
    ensemble on test with intervals, the paired differences judged with Holm, and a sentence on what holds."""
    order = ["best constant", *([SINGLE] if SINGLE in final.rows else []), *rounds, "routing", "chosen on val",
             *([SERVED] if SERVED in final.rows else [])]
    names = {"routing": "tuned best (val-selected trial)", "chosen on val": "chosen ensemble (on val)",
             SERVED: "served ensemble (budget, on val)"}
    lines = [f"# {study.name}: what holds on the test split", "",
             f"Manifest `{manifest.path}`; test split: {final.n_groups} groups, {final.n_images} images, read once, "
             f"after every selection step used val only. Scores are point estimates with 95 % group-bootstrap "
             f"intervals (groups resampled, {final.n_resamples} resamples); differences are paired on the same resamples. "
             + final.family, "",
             "| task | " + " | ".join(names.get(n, n) for n in order) + " |", "|---|" + "---:|" * len(order)]
    for t in tasks:
        lines.append(f"| {t.name} ({t.primary_metric}) | " + " | ".join(str(final.rows[n][t.name]) for n in order) + " |")
    if any(n in final.delta_m for n in order):
        lines.append("| Δm % vs single-task | " + " | ".join(
            _pct(final.delta_m[n]) if n in final.delta_m else "" for n in order) + " |")
        lines += ["", DELTA_M_NOTE]
    if selection is not None:
        lines += selection_lines(tasks, final, choices, selection, served)
    for t in tasks:
        c = choices[t.name]
        lines += ["", f"## {t.name} ({t.primary_metric}, {'lower' if t.direction == 'minimize' else 'higher'} is better)",
                  "", f"Tuned best: {c['routing'].describe()} (val {c['routing'].val:.3f}); chosen ensemble: "
                  f"{c['chosen'].describe()} (val {c['chosen'].val:.3f}; averaging {c['averaging'].val:.3f}, "
                  f"greedy {c['greedy'].val:.3f})" + (
                      f"; served ensemble: {served[t.name]['chosen'].describe()} (val {served[t.name]['chosen'].val:.3f})"
                      if served is not None and SERVED in final.rows else "") + ".", "",
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


TUNED = "fixed (tuned)"


def equal_budget(tasks, manifest, picks: dict[str, dict[str, torch.Tensor]], trials: dict[str, str],
                 budget: int, n_tuned: int, single: dict[str, torch.Tensor] | None = None) -> str:
    """The equal-budget verdict of a method study, on test: each method's val-selected trial among its
    `budget` trainings against the fixed weights tuned with as many trainings (`picks[TUNED]`), paired
    differences judged with Holm over every method x task. `trials`: row -> which trial it is. The last
    column is the mean over the tasks (e.g. the benchmark's mean accuracy) with its interval from the same
    resamples. `single`: the single-task baselines' test outputs, shown for reference (outside the family)."""
    targets, masks = manifest.targets("test")
    others = [m for m in picks if m != TUNED]
    boot = GroupBootstrap(manifest.groups("test"), resamples_for(len(others) * len(tasks)))
    rows = {**picks, **({SINGLE: single} if single else {})}
    stats = {name: {t.name: sample_stats(t, out[t.name], targets[t.name], masks[t.name]) for t in tasks}
             for name, out in rows.items()}
    reps = {name: {t.name: boot.replicates(t, st[t.name]) for t in tasks} for name, st in stats.items()}
    pts = {name: {t.name: point(t, st[t.name]) for t in tasks} for name, st in stats.items()}
    family = Family("every method x every task: its val-selected trial minus the tuned fixed weights' val-selected "
                    "trial, on test")
    for m in others:
        for t in tasks:
            family.add((m, t.name), t.direction, pts[m][t.name] - pts[TUNED][t.name], reps[m][t.name] - reps[TUNED][t.name])
    judged = family.judge()
    mark = {"better": " ▲", "worse": " ▼", "no clear difference": ""}

    def cell(name, t):
        lo, hi = np.quantile(reps[name][t.name][np.isfinite(reps[name][t.name])], [0.025, 0.975])
        return f"{pts[name][t.name]:.3f} [{lo:.3f}, {hi:.3f}]"

    def mean_cell(name):
        m = np.mean([reps[name][t.name] for t in tasks], axis=0)
        lo, hi = np.quantile(m[np.isfinite(m)], [0.025, 0.975])
        return f"{np.mean([pts[name][t.name] for t in tasks]):.3f} [{lo:.3f}, {hi:.3f}]"

    head = " | ".join(f"{t.name} {t.primary_metric}" for t in tasks)
    lines = [f"Equal budget: every method had {budget} trainings (its repeats; the fixed weights: {n_tuned} trials of "
             f"TPE over the loss weights, the first the plain sum); each row is the method's val-selected training "
             f"(best mean val objective), scored once on test: {boot.n_groups} groups, score [95 % group-bootstrap "
             f"interval, {boot.weights.shape[0]} resamples]. Differences are against `{TUNED}`, paired on the same "
             f"resamples, each interval at Holm's level; ▲/▼: better/worse after Holm. " + family.statement(), "",
             f"| method | trial | {head} | mean | " + " | ".join(f"Δ {t.name}" for t in tasks) + " |",
             "|---|---|" + "---:|" * (2 * len(tasks) + 1)]
    for name in [TUNED, *others, *([SINGLE] if single else [])]:
        diffs = [""] * len(tasks) if name in (TUNED, SINGLE) else [
            f"{judged[(name, t.name)].diff.signed()}{mark[judged[(name, t.name)].verdict]}" for t in tasks]
        lines.append(f"| {name} | {trials.get(name, '')} | " + " | ".join(cell(name, t) for t in tasks)
                     + f" | {mean_cell(name)} | " + " | ".join(diffs) + " |")
    # each task's training loss on test (cross-entropy for multiclass: what the MultiMNIST papers report)
    lines += ["", "Test loss (each task's training loss with default options, e.g. cross-entropy in nats for a "
              "multiclass task; mean per labelled image) [95 % group-bootstrap interval]:", "",
              "| method | " + " | ".join(f"{t.name} loss" for t in tasks) + " |", "|---|" + "---:|" * len(tasks)]
    for name in [TUNED, *others, *([SINGLE] if single else [])]:
        cells = []
        for t in tasks:
            out = torch.as_tensor(np.asarray(rows[name][t.name], dtype=np.float32))
            per = per_sample_loss(t, out, torch.as_tensor(np.asarray(targets[t.name])))
            cells.append(str(boot.mean(per.double().numpy(), masks[t.name])))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    better = sorted({m for (m, _), j in judged.items() if j.verdict == "better"})
    worse = sorted({m for (m, _), j in judged.items() if j.verdict == "worse"})
    verdict = ("Verdict: " + (f"better than the tuned weighted sum on some task: {', '.join(better)}; " if better else
                              "no method beats the tuned weighted sum on any task; ")
               + (f"worse on some task: {', '.join(worse)}." if worse else "none is worse on any task."))
    return "\n".join(lines + ["", verdict]) + "\n"
