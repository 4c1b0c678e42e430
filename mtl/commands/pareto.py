"""`python -m mtl pareto <study>` (`make pareto STUDY=...`): the Pareto-best trials and the best trial per task.

Reads the study's completed trials (mtl/results/selection.py: Optuna's `best_trials`, cross-checked against a
brute-force front and the scores logged in MLflow), prints the table, each task's best against its
runner-up as a paired difference (Holm over the tasks), for studies that search `method` the per-method
table of means with Holm-corrected differences against `fixed` (mtl/results/reports.py), tags the MLflow runs (`pareto`,
`best_for`), registers each task's best checkpoint as model `<study>` with alias `best-<task>`
(mtl/serve/registry.py), removes dominated trials' checkpoint files, and draws the front and the members' val
curves into `reports/<study>/` and onto the parent run.
"""

from __future__ import annotations

import math
from pathlib import Path

from mtl.data.manifest import load_manifest
from mtl.results import plots
from mtl.results.reports import delta_m_of, score_cell
from mtl.results.selection import fewest_models, select, selected_per_method, simplest, tied_with_best
from mtl.results.tables import best_vs_runner_up, front_table, method_of, methods_table
from mtl.serve.inference import CheckpointCache
from mtl.serve.registry import register_best, register_composite, remove_dominated_checkpoints
from mtl.track import tracking
from mtl.tune.runs import find_parent, single_task_stats
from mtl.tune.storage import directions_of


def main(args) -> int:
    study, s, front, best, members = select(args.study, args.storage)
    client = tracking.get_client()
    manifest = load_manifest(study.manifest)
    cache = CheckpointCache(client, manifest, "val")
    tasks = [manifest.task(n) for n in study.objectives]
    tied = tied_with_best(tasks, manifest, members, best, cache.task_output)
    runner_up = best_vs_runner_up(study, manifest, best, members, cache.task_output)
    if getattr(args, "prefer", "best") == "simplest":  # the one-standard-error rule, per task, on the front
        trainable = {t.number: t.user_attrs.get("trainable_params", math.inf) for t in s.trials}
        nominal, best = best, {task: simplest(tied[task], trainable, front) for task in best}
        for task, m in best.items():
            if m.number != nominal[task].number:
                print(f"--prefer simplest: {task} -> trial {m.number} ({trainable[m.number]:,} trainable parameters), "
                      f"tied on val with the nominal best, trial {nominal[task].number} ({trainable[nominal[task].number]:,})")
    if getattr(args, "prefer", "best") == "shared":  # fewest distinct networks for the composite `best`
        epochs = {m.number: cache.artifacts(m.run_id).best_epochs() for m in front}  # the index: one source
        nominal, best = best, fewest_models(tied, best, front, directions_of(s), study.objectives, epochs)

        def networks(chosen):
            return len({(m.number, epochs.get(m.number, {}).get(t, f"?{t}")) for t, m in chosen.items()})
        print(f"--prefer shared: {networks(best)} network(s) from {len({m.number for m in best.values()})} trial(s) "
              f"answer every task (nominal: {networks(nominal)} from {len({m.number for m in nominal.values()})}): "
              + ", ".join(
                  f"{task} -> trial {m.number}" + ("" if m.number == nominal[task].number else
                                                   f" (tied on val with the nominal best, trial {nominal[task].number})")
                  for task, m in best.items()))
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
        cells = "".join(score_cell(v, attrs[m.number].get(f"ci.{task}")).rjust(width)
                        for task, v in zip(study.objectives, m.values))
        if has_dm:
            cells += score_cell(*delta_m_of(attrs[m.number]), digits=1).rjust(width)
        print(f"{m.number:>6}  {m.run_id[:8]:<10}{cells}  " + ",".join(best_for.get(m.number, [])))
    print(f"{len(front)} Pareto member(s) of {len(members)} completed trial(s); val score [95 % group-bootstrap "
          f"interval]." + (" Δm %: mean relative gain over the single-task baselines (Maninis et al. 2019), paired "
                           "interval." if has_dm else ""))
    print("\n" + runner_up)
    print(f"\nTied with the task's best on val (paired 95 % interval of the difference contains 0), of {len(members)} "
          "completed: " + ", ".join(f"{t} {len(ms)}" for t, ms in tied.items()))
    table = None
    if len({method_of(t.params) for t in s.trials} - {None}) > 1:
        single = s.user_attrs.get("single_task_runs", {})
        single_stats = single_task_stats(tasks, manifest, single) if set(single) >= set(study.objectives) else None
        outputs = {m.number: cache.member(m.run_id, tasks) for m in members}
        table = methods_table(study, s, members, manifest, outputs, single_stats)
    if table:
        print("\n" + table)
    tied_for: dict[int, list[str]] = {}
    for task, ms in tied.items():
        for m in ms:
            tied_for.setdefault(m.number, []).append(task)
    for m in members:
        client.set_tag(m.run_id, "pareto", str(m.number in front_ids).lower())
        client.set_tag(m.run_id, "best_for", ",".join(best_for.get(m.number, [])))
        client.set_tag(m.run_id, "tied_best_for", ",".join(tied_for.get(m.number, [])))
    versions = register_best(client, study.name, best, manifest)
    if not study.configs and not getattr(args, "keep_checkpoints", False):
        keep = front + list(selected_per_method(study, s, members).values())  # each method's pick: the verdict's
        n, freed = remove_dominated_checkpoints(client, members, keep)
        if n:
            print(f"removed the checkpoints of {n} dominated trial(s), {freed / 1e6:.0f} MB (metrics, val outputs and "
                  f"index stay; --keep-checkpoints keeps them)")
    for task, v in versions.items():
        print(f"registered models:/{study.name}@best-{task} -> version {v} (trial {best[task].number})")
    parent = find_parent(client, study.name)
    if parent:  # one model answering every task with its best, the shared backbone computed once
        print(f"registered models:/{study.name}@best -> version "
              f"{register_composite(client, study.name, parent, best, manifest)} (every task's best in one model)")
    out = Path("reports") / study.name
    out.mkdir(parents=True, exist_ok=True)
    figures = {"pareto_front.png": plots.plot_front(study.objectives, members, front),
               "val_curves.png": plots.plot_curves(client, metric_keys, front),
               "importances.png": plots.plot_importances(s, study.objectives)}
    if parent:
        figures["hypervolume.png"] = plots.plot_hypervolume(client, parent)
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
        plots.close(fig)
    print("plots: " + ", ".join(str(out / n) for n, f in figures.items() if f is not None))
    return 0
