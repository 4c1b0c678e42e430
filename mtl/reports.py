"""The tables a researcher reads: the test-split scores of every model with their paired comparisons
(`final_scores`, the one place test labels are read, and `reports/<study>/report.md`), and pareto's
front and per-method tables. Every score carries its 95 % group-bootstrap interval."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mtl.bootstrap import GroupBootstrap, Score, delta_m, sample_stats, verdict
from mtl.metrics import best_constant
from mtl.storage import directions_of
from mtl.tasks import Task

SINGLE = "single-task"  # the row of the single-task baselines (one head alone per task), when the study has them


@dataclass
class Final:
    """The test-split scores of every model, with intervals, and the paired comparisons the report makes."""
    rows: dict[str, dict[str, Score]]  # model -> task -> score
    comparisons: dict[str, list[tuple[str, Score, str]]]  # task -> (what, a - b, verdict)
    n_groups: int
    n_images: int
    delta_m: dict[str, Score] = field(default_factory=dict)  # model -> Δm % vs the single-task baselines


def final_scores(tasks, manifest, outputs: dict[str, dict[str, torch.Tensor]], rounds: list[str]) -> Final:
    """The one place the test labels are read: score every model and make the paired comparisons."""
    targets, masks = manifest.targets("test")
    boot = GroupBootstrap(manifest.groups("test"))
    outputs = {"best constant": {t.name: best_constant(t, targets[t.name], masks[t.name]) for t in tasks}, **outputs}
    stats = {name: {t.name: sample_stats(t, out[t.name], targets[t.name], masks[t.name]) for t in tasks}
             for name, out in outputs.items()}
    rows = {name: {t.name: boot.interval(t, st[t.name]) for t in tasks} for name, st in stats.items()}
    comparisons = {}
    for t in tasks:
        pairs = [("tuned best - best constant", "routing", "best constant")]
        pairs += [(f"tuned best - {r}", "routing", r) for r in rounds]
        pairs += [("chosen ensemble - tuned best", "chosen on val", "routing")]
        comparisons[t.name] = []
        if SINGLE in stats:
            pairs += [(f"tuned best - {SINGLE}", "routing", SINGLE)]
        for what, a, b in pairs:
            d = boot.paired(t, stats[a][t.name], stats[b][t.name])
            comparisons[t.name].append((what, d, verdict(t, d)))
    dm = {name: delta_m(boot, tasks, st, stats[SINGLE]) for name, st in stats.items()
          if SINGLE in stats and name not in (SINGLE, "best constant")}
    return Final(rows, comparisons, boot.n_groups, len(manifest.rows("test")), dm)


def to_markdown(final: Final, tasks: list[Task], choices: dict) -> str:
    """Test score [95 % interval] of every model; the best point estimate of each column in bold."""
    cols = [t.name for t in tasks]
    dm = bool(final.delta_m)
    lines = [f"Test split: {final.n_groups} groups, {final.n_images} images; score [95 % group-bootstrap interval]"
             + ("; Δm % vs the single-task baselines (Maninis et al. 2019), paired." if dm else "."),
             "", "| model | " + " | ".join(f"{t.name} {t.primary_metric}" for t in tasks) + (" | Δm % |" if dm else " |"),
             "|---|" + "---:|" * (len(cols) + dm)]
    best = {}
    for t in tasks:
        vals = [r[t.name].value for r in final.rows.values()]
        best[t.name] = np.nanmin(vals) if t.direction == "minimize" else np.nanmax(vals)
    for name, row in final.rows.items():
        label = name if name != "averaging" else f"averaging ({len(choices[tasks[0].name]['averaging'].weights)})"
        cells = [f"**{row[c]}**" if row[c].value == best[c] else str(row[c]) for c in cols]
        if dm:
            d = final.delta_m.get(name)
            cells.append(_pct(d) if d else "")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "chosen on val: " + "; ".join(f"{t.name} {choices[t.name]['chosen'].describe()}" for t in tasks)]
    return "\n".join(lines) + "\n"


def _pct(d: Score) -> str:
    return f"{d.value:+.1f} [{d.lo:+.1f}, {d.hi:+.1f}]"


def _sentence(task: Task, comps: list[tuple[str, Score, str]]) -> str:
    said = []
    for what, d, v in comps:
        a, b = what.split(" - ")
        word = {"better": "beats", "worse": "is worse than", "no clear difference": "is not clearly different from"}[v]
        said.append(f"the {a} {word} the {b} ({d.signed()})")
    return "; ".join(said) + "."


def write_report(path: Path, study, manifest, tasks: list[Task], final: Final, choices: dict, rounds: list[str]) -> Path:
    """`reports/<study>/report.md`: per task the best constant, the rounds, the tuned best and the chosen
    ensemble on test with intervals, the paired differences, and a sentence on what holds."""
    order = ["best constant", *([SINGLE] if SINGLE in final.rows else []), *rounds, "routing", "chosen on val"]
    names = {"routing": "tuned best (val-selected trial)", "chosen on val": "chosen ensemble (on val)"}
    lines = [f"# {study.name}: what holds on the test split", "",
             f"Manifest `{manifest.path}`; test split: {final.n_groups} groups, {final.n_images} images, read once, "
             f"after every selection step used val only. Scores are point estimates with 95 % group-bootstrap "
             f"intervals (groups resampled, 2000 resamples); differences are paired on the same resamples, and "
             f"a difference counts as a win only when its interval excludes 0.", "",
             "| task | " + " | ".join(names.get(n, n) for n in order) + " |", "|---|" + "---:|" * len(order)]
    for t in tasks:
        lines.append(f"| {t.name} ({t.primary_metric}) | " + " | ".join(str(final.rows[n][t.name]) for n in order) + " |")
    if final.delta_m:
        lines.append("| Δm % vs single-task | " + " | ".join(
            _pct(final.delta_m[n]) if n in final.delta_m else "" for n in order) + " |")
        lines += ["", "Δm % (Maninis et al. 2019): the mean relative gain over the single-task baselines (one head "
                  "alone, same budget), 100/T Σ ±(M − B)/B; its interval is paired over the same resamples, so an "
                  "interval above 0 means the multi-task model is better on average over tasks."]
    for t in tasks:
        c = choices[t.name]
        lines += ["", f"## {t.name} ({t.primary_metric}, {'lower' if t.direction == 'minimize' else 'higher'} is better)",
                  "", f"Tuned best: {c['routing'].describe()} (val {c['routing'].val:.3f}); chosen ensemble: "
                  f"{c['chosen'].describe()} (val {c['chosen'].val:.3f}; averaging {c['averaging'].val:.3f}, "
                  f"greedy {c['greedy'].val:.3f}).", "", "| comparison (a - b) | difference [95 % CI] | verdict |",
                  "|---|---:|---|"]
        lines += [f"| {what} | {d.signed()} | {v} |" for what, d, v in final.comparisons[t.name]]
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


def methods_table(study, s, members) -> str | None:
    """Studies that search `method`: per method, each task's best val score over its trials and the best
    Δm %, each with its trial's 95 % interval (markdown). Equal budgets make the rows comparable."""
    trials = {t.number: t for t in s.trials}
    by_method: dict[str, list] = {}
    for m in members:
        params = trials[m.number].params
        method = params.get("method", params.get("weighting"))  # studies run before the rename say `weighting`
        if method is not None:
            by_method.setdefault(method, []).append(m)
    if len(by_method) < 2:
        return None
    dirs = directions_of(s)
    has_dm = any("delta_m" in trials[m.number].user_attrs for m in members)
    head = "| method | trials | " + " | ".join(f"{t} {n.split('/')[-1]}" for t, n in zip(study.objectives, s.metric_names))
    lines = [head + (" | Δm % |" if has_dm else " |"), "|---|---:|" + "---:|" * (len(study.objectives) + has_dm)]
    for method, ms in by_method.items():
        cells = []
        for i, task in enumerate(study.objectives):
            pick = max if dirs[i] == "maximize" else min
            b = pick(ms, key=lambda m: m.values[i])
            cells.append(score_cell(b.values[i], trials[b.number].user_attrs.get(f"ci.{task}")) + f" (#{b.number})")
        finite = [m for m in ms if math.isfinite(delta_m_of(trials[m.number].user_attrs)[0])]
        if has_dm and finite:
            b = max(finite, key=lambda m: delta_m_of(trials[m.number].user_attrs)[0])
            cells.append(score_cell(*delta_m_of(trials[b.number].user_attrs), digits=1) + f" (#{b.number})")
        elif has_dm:
            cells.append("n/a")
        lines.append(f"| {method} | {len(ms)} | " + " | ".join(cells) + " |")
    return "\n".join(["Per method: best val score per task over its trials (trial #), 95 % group-bootstrap interval "
                      "of that trial" + ("; Δm % vs single-task baselines" if has_dm else "") + ".", ""] + lines)
