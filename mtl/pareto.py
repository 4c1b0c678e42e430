"""Pareto-best trials of a study and the best trial per task: `python -m mtl pareto <study>`.

Reads the study's completed trials (Optuna's `best_trials`, cross-checked against a brute-force
front and the per-task scores logged in MLflow), prints the table, tags the MLflow runs
(`pareto`, `best_for`), registers each task's best checkpoint as model `<study>` with alias
`best-<task>` (load it back with `load_best(study, task)` or `models:/<study>@best-<task>`), and
draws the front and the Pareto members' val curves into `reports/<study>/` and onto the parent run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import optuna
from optuna.trial import TrialState

from mtl import tracking
from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.studies import ROLE_TAG, default_storage, load_study, make_storage


@dataclass
class Member:
    number: int
    run_id: str
    values: list[float]


def dominates(a, b, directions) -> bool:
    """a is no worse than b on every objective and better on one."""
    better = False
    for x, y, d in zip(a, b, directions):
        if (x < y if d == "maximize" else x > y):
            return False
        if x != y:
            better = True
    return better


def pareto_front(values: list[list[float]], directions: list[str]) -> list[int]:
    """Indices of the non-dominated rows (brute force, O(n^2): a reference for Optuna's best_trials)."""
    return [i for i, v in enumerate(values)
            if not any(dominates(w, v, directions) for j, w in enumerate(values) if j != i)]


def best_per_task(values: list[list[float]], directions: list[str]) -> list[int]:
    """For each objective, the index of the best row (first one on ties)."""
    out = []
    for k, d in enumerate(directions):
        col = [v[k] for v in values]
        out.append(col.index(min(col) if d == "minimize" else max(col)))
    return out


def open_existing(name: str, storage: str | None):
    """(Study spec, Optuna study, completed trials); one clear line if there is no such study or no trial."""
    study = load_study(name)
    url = storage or default_storage(name)
    if "://" not in url and not Path(url).is_file():
        raise UserError(f"study '{name}' has not been run yet (no {url}); run: make tune STUDY={name}")
    try:
        s = optuna.load_study(study_name=name, storage=make_storage(url))
    except KeyError:
        raise UserError(f"no study '{name}' in {tracking.redact(url)}; run: make tune STUDY={name}") from None
    done = [t for t in s.trials if t.state == TrialState.COMPLETE and "mlflow_run_id" in t.user_attrs]
    if not done:
        raise UserError(f"study '{name}' has no completed trial yet; run: make tune STUDY={name}")
    return study, s, done


def directions_of(s) -> list[str]:
    return [d.name.lower() for d in s.directions]


def select(name: str, storage: str | None = None):
    """Front members and best member per task (task name -> Member), cross-checked with MLflow."""
    study, s, done = open_existing(name, storage)
    dirs = directions_of(s)
    values = [list(t.values) for t in done]
    front_idx = pareto_front(values, dirs)
    optuna_front = {t.number for t in s.best_trials}
    if {done[i].number for i in front_idx} != optuna_front:
        raise UserError(f"study '{name}': the Pareto front of its completed, tracked trials differs from Optuna's "
                        f"best_trials {sorted(optuna_front)} (a completed trial without an MLflow run?)")
    members = [Member(t.number, t.user_attrs["mlflow_run_id"], list(t.values)) for t in done]
    client = tracking.get_client()
    for m in members:  # the scores Optuna holds are the ones MLflow shows
        logged = client.get_run(m.run_id).data.metrics
        for task, name, v in zip(study.objectives, s.metric_names, m.values):
            key = f"best_{name}"  # val/<task>/<metric> -> best_val/<task>/<metric>
            if key not in logged or not math.isclose(logged[key], v, rel_tol=1e-6, abs_tol=1e-9):
                raise UserError(f"trial {m.number}: MLflow run {m.run_id} does not hold the score Optuna has "
                                f"for '{task}' ({v}); is MLFLOW_TRACKING_URI the store the study used?")
    front = [members[i] for i in front_idx]
    # each task's best among the front (a tie with a dominated trial goes to the front member)
    best = {task: front[i] for task, i in zip(study.objectives, best_per_task([m.values for m in front], dirs))}
    return study, s, front, best, members


def find_parent(client, study_name: str) -> str | None:
    """Run id of the study's parent run, if the study has been tuned in this MLflow store."""
    exp = client.get_experiment_by_name(study_name)
    if exp is None:
        return None
    found = client.search_runs([exp.experiment_id], f"tags.`{ROLE_TAG}` = 'parent'", max_results=1)
    return found[0].info.run_id if found else None


# ------------------------------------------------------------------------------------------------
# registry
# ------------------------------------------------------------------------------------------------
MODEL_FORMAT = "pyfunc-1"  # registry versions made before models were MLflow models are replaced


def register_best(client, study_name: str, best: dict[str, Member], manifest) -> dict[str, str]:
    """Each task's best checkpoint as an MLflow logged model (pyfunc, mtl/mlmodel.py) on its trial run,
    registered as `<study>` with alias `best-<task>`. Tasks whose best is the same checkpoint share one
    model and version; re-running on an unchanged study keeps the versions it already made, and versions
    no alias names any more are deleted with their files."""
    import mlflow

    from mtl import mlmodel
    from mtl.tasks import Task
    from mtl.train import load_checkpoint
    try:
        client.create_registered_model(study_name, description=f"per-task best models of study {study_name}")
    except Exception:
        pass  # already registered
    groups: dict[tuple[str, str], list[str]] = {}
    index = {}
    for task, m in best.items():
        if m.run_id not in index:
            index[m.run_id] = json.loads(Path(client.download_artifacts(m.run_id, "checkpoints/index.json")).read_text())
        groups.setdefault((m.run_id, index[m.run_id]["best"][task]["file"]), []).append(task)
    example = manifest.root / manifest.rows("val")["image"].iloc[0]
    dataset = mlflow.data.from_pandas(manifest.table, source=str(manifest.path), name=manifest.name)
    versions = {}
    for (run_id, file), tasks in groups.items():
        current = [_alias_version(client, study_name, t) for t in tasks]
        if all(v is not None and v.run_id == run_id and v.tags.get("checkpoint") == file
               and v.tags.get("format") == MODEL_FORMAT for v in current):
            versions.update({t: v.version for t, v in zip(tasks, current)})
            continue
        ckpt = load_checkpoint(client.download_artifacts(run_id, f"checkpoints/{file}"))
        model_tasks = [Task.from_dict(t) for t in ckpt["tasks"]]
        info = index[run_id]["best"]
        trial = next(m.number for t, m in best.items() if m.run_id == run_id)
        logged = mlmodel.log_model(
            run_id, "best-" + "-".join(tasks), {"m0": ckpt}, model_tasks, {t.name: {"m0": 1.0} for t in model_tasks},
            example, metrics={f"val/{manifest.task(t).metric_key}": (info[t]["score"], info[t]["epoch"]) for t in tasks},
            dataset=dataset,
            params={"study": study_name, "trial": trial, "checkpoint": file, "best_for": ",".join(tasks)})
        mv = client.create_model_version(study_name, logged.model_uri, run_id=run_id, model_id=logged.model_id, tags={
            "task": ",".join(tasks), "trial": str(trial), "checkpoint": file, "format": MODEL_FORMAT,
            "epoch": str(info[tasks[0]]["epoch"]), **{f"val_score.{t}": f"{info[t]['score']:.6g}" for t in tasks},
            "val_score": f"{info[tasks[0]]['score']:.6g}"})
        for t in tasks:
            client.set_registered_model_alias(study_name, f"best-{t}", mv.version)
            versions[t] = mv.version
    mlmodel.retire_unaliased(client, study_name)
    return versions


def prune_dominated(client, members: list[Member], front: list[Member]) -> tuple[int, int]:
    """Delete the checkpoint files of completed trials off the front. A dominated trial stays dominated as
    trials are added, so no later front, registry alias or ensemble (all drawn from the front) needs them;
    their metrics, val outputs and index stay. Returns (trials, bytes freed)."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    on_front = {m.run_id for m in front}
    n, freed = 0, 0
    for m in members:
        if m.run_id in on_front:
            continue
        run = client.get_run(m.run_id)
        if run.data.tags.get("checkpoints", "").startswith("removed"):
            continue
        files = [f for f in client.list_artifacts(m.run_id, "checkpoints") if f.path.rsplit("/", 1)[-1].startswith("epoch-")]
        repo = get_artifact_repository(run.info.artifact_uri)
        failed = 0
        for f in files:
            try:
                repo.delete_artifacts(f.path)
                freed += f.file_size or 0
            except Exception:  # a store that cannot delete: keep going, keep the files
                failed += 1
        if not failed:
            client.set_tag(m.run_id, "checkpoints", "removed (dominated)")
            n += 1
    return n, freed


def _alias_version(client, name: str, task: str):
    try:
        return client.get_model_version_by_alias(name, f"best-{task}")
    except Exception:
        return None


def load_best(study_name: str, task: str) -> dict:
    """The checkpoint dict behind `models:/<study>@best-<task>` (loaded with weights_only=True), with the
    backbone base it was stored against taken from the model's own copy."""
    import mlflow

    from mtl.mlmodel import checkpoint_from_model
    if _alias_version(tracking.get_client(), study_name, task) is None:
        raise UserError(f"no registered model '{study_name}@best-{task}'; run: make pareto STUDY={study_name}")
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{study_name}@best-{task}"))
    if not (local / "artifacts" / "spec.json").is_file():  # registered before models were MLflow models
        raise UserError(f"models:/{study_name}@best-{task} is not an mtl model; run: make pareto STUDY={study_name}")
    return checkpoint_from_model(local)


# ------------------------------------------------------------------------------------------------
# plots
# ------------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def plot_front(objectives: list[str], members: list[Member], front: list[Member]):
    plt = _pyplot()
    front_ids = {m.number for m in front}
    k = len(objectives)
    if k <= 3:
        pairs = [(i, j) for i in range(k) for j in range(i + 1, k)] or [(0, 0)]
        fig, axes = plt.subplots(1, len(pairs), figsize=(4.5 * len(pairs), 4), squeeze=False)
        for ax, (i, j) in zip(axes[0], pairs):
            for m in members:
                on = m.number in front_ids
                ax.scatter(m.values[i], m.values[j], c="tab:red" if on else "tab:gray", s=40 if on else 18)
                ax.annotate(str(m.number), (m.values[i], m.values[j]), fontsize=7)
            ax.set_xlabel(objectives[i])
            ax.set_ylabel(objectives[j])
    else:  # parallel coordinates, each axis min-max scaled
        fig, ax = plt.subplots(figsize=(2 + 1.6 * k, 4.5))
        cols = list(zip(*[m.values for m in members]))
        lo, hi = [min(c) for c in cols], [max(c) for c in cols]
        # members on a colour scale with no grey in it: grey means dominated
        n_front = max(1, len(front_ids) - 1)
        colour = {n: plt.cm.turbo(0.05 + 0.9 * i / n_front) for i, n in enumerate(sorted(front_ids))}
        for m in sorted(members, key=lambda m: m.number in front_ids):
            ys = [(v - a) / (b - a) if b > a else 0.5 for v, a, b in zip(m.values, lo, hi)]
            on = m.number in front_ids
            ax.plot(range(k), ys, color=colour.get(m.number, "lightgray"), lw=2 if on else 1, marker="o" if on else None,
                    label=f"trial {m.number}" if on else None)
        ax.set_xticks(range(k), [f"{o}\n[{a:.2f}, {b:.2f}]" for o, a, b in zip(objectives, lo, hi)], fontsize=8)
        ax.set_yticks([])
        if len(front_ids) <= 12:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1, 1))
    fig.suptitle("Pareto front among completed trials (grey: dominated)" if k > 3 else "Pareto front (red) among completed trials")
    fig.tight_layout()
    return fig


def plot_curves(client, metric_keys: list[str], front: list[Member]):
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metric_keys), figsize=(3.6 * len(metric_keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], metric_keys):
        for m in front:
            hist = sorted(client.get_metric_history(m.run_id, key), key=lambda x: x.step)
            ax.plot([h.step for h in hist], [h.value for h in hist], marker=".", label=f"trial {m.number}")
        ax.set_title(key, fontsize=9)
        ax.set_xlabel("epoch")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_hypervolume(client, parent: str):
    """The val front's hypervolume (reference: best constant per task) after each finished trial."""
    hist = sorted(client.get_metric_history(parent, "study/hypervolume"), key=lambda m: m.step)
    if not hist:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot([h.step for h in hist], [h.value for h in hist], marker=".")
    ax.set_xlabel("trials finished")
    ax.set_ylabel("hypervolume over the best constant")
    ax.set_title("Study progress (val front)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_importances(s, objectives: list[str]):
    """Per task, Optuna's parameter importances (fANOVA) with that task's objective as the target."""
    complete = [t for t in s.trials if t.state == TrialState.COMPLETE]
    if len(complete) < 3:
        return None
    imps = {}
    for i, task in enumerate(objectives):
        try:
            imps[task] = optuna.importance.get_param_importances(s, target=lambda t, i=i: t.values[i])
        except (ValueError, RuntimeError):  # too few trials or no varying parameter
            continue
    if not imps:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(imps), figsize=(3.4 * len(imps), 3.6), squeeze=False, sharey=False)
    for ax, (task, imp) in zip(axes[0], imps.items()):
        names = list(imp)[::-1]
        ax.barh(names, [imp[n] for n in names])
        ax.set_title(task, fontsize=9)
        ax.tick_params(labelsize=7)
    fig.suptitle("Parameter importances per task (fANOVA)", fontsize=10)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------
def _cell(value: float, ci=None, digits: int = 3) -> str:
    lo, hi = ci if ci else (math.nan, math.nan)
    return f"{value:.{digits}f} [{lo:.{max(digits - 1, 1)}f},{hi:.{max(digits - 1, 1)}f}]"


def _dm(attrs: dict) -> tuple[float, tuple[float, float]]:
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
    """Studies that search `weighting`: per method, each task's best val score over its trials and the best
    Δm %, each with its trial's 95 % interval (markdown). Equal budgets make the rows comparable."""
    trials = {t.number: t for t in s.trials}
    by_method: dict[str, list] = {}
    for m in members:
        method = trials[m.number].params.get("weighting")
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
            cells.append(_cell(b.values[i], trials[b.number].user_attrs.get(f"ci.{task}")) + f" (#{b.number})")
        finite = [m for m in ms if math.isfinite(_dm(trials[m.number].user_attrs)[0])]
        if has_dm and finite:
            b = max(finite, key=lambda m: _dm(trials[m.number].user_attrs)[0])
            cells.append(_cell(*_dm(trials[b.number].user_attrs), digits=1) + f" (#{b.number})")
        elif has_dm:
            cells.append("n/a")
        lines.append(f"| {method} | {len(ms)} | " + " | ".join(cells) + " |")
    return "\n".join(["Per method: best val score per task over its trials (trial #), 95 % group-bootstrap interval "
                      "of that trial" + ("; Δm % vs single-task baselines" if has_dm else "") + ".", ""] + lines)


def main(args) -> int:
    study, s, front, best, members = select(args.study, args.storage)
    client = tracking.get_client()
    front_ids = {m.number for m in front}
    best_for = {}
    for task, m in best.items():
        best_for.setdefault(m.number, []).append(task)
    metric_keys = [name for name in s.metric_names]
    attrs = {t.number: t.user_attrs for t in s.trials}
    width = 24
    has_dm = any("delta_m" in attrs[m.number] for m in members)
    print(f"{'trial':>6}  {'run':<10}" + "".join(f"{k.split('/')[1][:width - 2]:>{width}}" for k in metric_keys)
          + (f"{'Δm %':>{width}}" if has_dm else "") + "  best for")
    for m in members:
        if m.number not in front_ids:
            continue
        cells = "".join(_cell(v, attrs[m.number].get(f"ci.{task}")).rjust(width)
                        for task, v in zip(study.objectives, m.values))
        if has_dm:
            cells += _cell(*_dm(attrs[m.number]), digits=1).rjust(width)
        print(f"{m.number:>6}  {m.run_id[:8]:<10}{cells}  " + ",".join(best_for.get(m.number, [])))
    print(f"{len(front)} Pareto member(s) of {len(members)} completed trial(s); val score [95 % group-bootstrap "
          f"interval]. Intervals that overlap say the members' difference on that task may be luck."
          + (" Δm %: mean relative gain over the single-task baselines (Maninis et al. 2019), paired interval."
             if has_dm else ""))
    table = methods_table(study, s, members)
    if table:
        print("\n" + table)
    for m in members:
        client.set_tag(m.run_id, "pareto", str(m.number in front_ids).lower())
        client.set_tag(m.run_id, "best_for", ",".join(best_for.get(m.number, [])))
    versions = register_best(client, study.name, best, load_manifest(study.manifest))
    if not study.configs and not getattr(args, "keep_checkpoints", False):
        n, freed = prune_dominated(client, members, front)
        if n:
            print(f"removed the checkpoints of {n} dominated trial(s), {freed / 1e6:.0f} MB (metrics, val outputs and "
                  f"index stay; --keep-checkpoints keeps them)")
    for task, v in versions.items():
        print(f"registered models:/{study.name}@best-{task} -> version {v} (trial {best[task].number})")
    out = Path("reports") / study.name
    out.mkdir(parents=True, exist_ok=True)
    parent = find_parent(client, study.name)
    figures = {"pareto_front.png": plot_front(study.objectives, members, front),
               "val_curves.png": plot_curves(client, metric_keys, front),
               "importances.png": plot_importances(s, study.objectives)}
    if parent:
        figures["hypervolume.png"] = plot_hypervolume(client, parent)
    if table:
        (out / "methods.md").write_text(table + "\n")
        if parent:
            client.log_text(parent, table + "\n", "pareto/methods.md")
    if parent:  # the front as a table the UI's artifact view (and mlflow.load_table) can read
        tracking.replace_table(client, parent, front_table(study, front, attrs, best_for), "pareto/front.json")
    for name, fig in figures.items():
        if fig is None:
            continue
        fig.savefig(out / name, dpi=110)
        if parent:
            client.log_figure(parent, fig, f"pareto/{name}")
        _pyplot().close(fig)
    print("plots: " + ", ".join(str(out / n) for n, f in figures.items() if f is not None))
    return 0
