"""`python -m mtl ensemble <study>` (`make ensemble STUDY=...`): ensembles of the Pareto members, chosen on val
(mtl/results/combine.py: routing, averaging, greedy per task) and judged once on test.

Only then are the test labels read, once, for the final table (mtl/results/reports.py): every model with its
95 % group-bootstrap interval, the best constant predictor, the study's COMPARE_WITH rounds where that
study ran on the same manifest, and paired intervals for each comparison. `reports/<study>/report.md`
is the table a researcher reads (also on the study's parent run); the served ensemble is registered
as `models:/<study>@ensemble`: the chosen one, or, under a serving budget (SERVE_MAX_TRIALS, --max-trials),
the one chosen on val within that many trials (`served_within`). A method study with TUNED_FIXED also
gets the equal-budget verdict (`equal_budget.md`, appended to the report): each method's val-selected
training against the fixed weights tuned with as many trainings.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.results.combine import select_on_val
from mtl.results.reports import (
    SERVED,
    SINGLE,
    TUNED,
    ValSelection,
    equal_budget,
    final_scores,
    to_markdown,
    write_report,
)
from mtl.results.selection import (
    compared_members,
    network_pool,
    select,
    selected_per_method,
    tied_with_best,
    tuned_fixed_member,
)
from mtl.results.tables import method_of
from mtl.score import mean_score
from mtl.serve.inference import CheckpointCache
from mtl.serve.registry import register_ensemble
from mtl.track import tracking
from mtl.tune.runs import find_parent
from mtl.tune.storage import directions_of


def equal_budget_section(study, s, storage, tasks, manifest, members, test, single) -> str | None:
    """A method study with TUNED_FIXED: each method's val-selected training against the tuned fixed weights'
    (mtl.results.reports.equal_budget), on test. None for other studies; one line when the tuned study has not run."""
    picks = selected_per_method(study, s, members)
    if not study.tuned_fixed or not picks:
        return None
    tuned = tuned_fixed_member(study, storage)
    if tuned is None:
        print(f"no equal-budget verdict: study '{study.tuned_fixed}' has no completed trial on {study.manifest} "
              f"(make tune STUDY={study.tuned_fixed})")
        return None
    member, n_tuned = tuned
    counts: dict[str, int] = {}
    for t in s.trials:
        if t.state.name == "COMPLETE" and method_of(t.params):
            counts[method_of(t.params)] = counts.get(method_of(t.params), 0) + 1
    outputs = {TUNED: test.member(member.run_id, tasks)} | {m: test.member(p.run_id, tasks) for m, p in picks.items()}
    trials = {TUNED: f"{study.tuned_fixed} #{member.number}"} | {m: f"#{p.number}" for m, p in picks.items()}
    return equal_budget(tasks, manifest, outputs, trials, max(counts.values()), n_tuned, single)


MAX_POOLS = 2000  # sets of k front trials the served ensemble's search tries one by one; more: the rank rule


def served_within(tasks, manifest, cache, front, dirs, k, values_of, top_k):
    """The served ensemble under a budget of k trials, chosen on val: every k-set of front trials gets its own
    routing / averaging / greedy selection (mtl.results.combine.select_on_val), and the set whose choices have the best
    mean val score over the tasks (mtl.score's rule, as each trial's best epoch is picked) wins; ties
    go to the set selection.network_pool's rank rule picks, then to the earliest trials. With more than
    MAX_POOLS sets, the rank rule alone picks the set. Returns (pool, its choices, sets tried or 0)."""
    import itertools
    import math

    def choices_of(pool):
        best = {t.name: max(pool, key=lambda m, i=i: (m.values[i] if dirs[i] == "maximize" else -m.values[i], -m.number))
                for i, t in enumerate(tasks)}
        return select_on_val(tasks, manifest, cache, pool, best, values_of, top_k)

    if math.comb(len(front), k) > MAX_POOLS:
        pool = network_pool(front, dirs, k)
        return pool, choices_of(pool), 0
    ranked = {tuple(m.number for m in network_pool(front, dirs, k))}  # the rank rule's pick wins exact ties
    best_key, best = None, None
    for pool in itertools.combinations(sorted(front, key=lambda m: m.number), k):
        chosen = choices_of(list(pool))
        score = mean_score([chosen[t.name]["chosen"].val for t in tasks], [t.direction for t in tasks],
                           [t.score_scale for t in tasks])
        score = -math.inf if math.isnan(score) else score  # no task with a labelled val sample: never the pick
        key = (score, tuple(m.number for m in pool) in ranked)
        if best_key is None or key > best_key:
            best_key, best = key, (list(pool), chosen)
    return best[0], best[1], math.comb(len(front), k)


def main(args) -> int:
    if args.top_k < 0:
        raise UserError(f"--top-k {args.top_k}: must be 0 (the whole front) or a positive number")
    if args.max_trials is not None and args.max_trials < 0:
        raise UserError(f"--max-trials {args.max_trials}: must be 0 (no limit) or a positive number")
    study, s, front, best, all_members = select(args.study, args.storage)
    max_trials = study.serve_max_trials if args.max_trials is None else args.max_trials
    manifest = load_manifest(study.manifest, check_images=True)
    tasks = [manifest.task(n) for n in study.objectives]
    client = tracking.get_client()
    values = {m.number: m.values for m in front}
    val_cache = CheckpointCache(client, manifest, "val")
    choices = select_on_val(tasks, manifest, val_cache, front, best, lambda m: values[m.number], args.top_k)
    served, pool, budget = choices, front, ""
    if max_trials and max_trials < len(front):  # a serving budget for @ensemble: its selection draws on k trials
        pool, served, searched = served_within(tasks, manifest, val_cache, front, directions_of(s), max_trials,
                                               lambda m: values[m.number], args.top_k)
        source = "`--max-trials`" if args.max_trials is not None else "the study's SERVE_MAX_TRIALS"
        how = (f"the {max_trials} front trials whose served ensemble has the best mean val score over the tasks "
               f"(all {searched} sets of {max_trials} tried)" if searched else
               f"the {max_trials} front trials whose best member per task has the smallest sum of val ranks (too many "
               f"sets to try each)")
        budget = (f"Served ensemble (`@ensemble`): a serving budget of at most {max_trials} trials ({source}). Its "
                  f"routing, averaging and greedy selection chose, on val, among trials "
                  f"{', '.join(str(m.number) for m in pool)} only ({how}). Each trial serves a task from that task's "
                  f"best-epoch checkpoint (one network per trial with best_epoch=\"mean\"). The tuned best and the "
                  f"chosen ensemble are unbounded; \"served ensemble - tuned best\" shows what the budget keeps.")
        print(budget)
    elif max_trials:
        print(f"serving budget of {max_trials} trials: the front has {len(front)}, so @ensemble is the chosen ensemble")
    tied = tied_with_best(tasks, manifest, all_members, best, val_cache.task_output)  # val: before test is read
    selection = ValSelection(len(all_members), {t: len(ms) for t, ms in tied.items()}, values)

    test = CheckpointCache(client, manifest, "test")
    members = {m.number: test.member(m.run_id, tasks) for m in front}
    outputs = {name: {t.name: choices[t.name][name].combine(t, members) for t in tasks}
               for name in ("routing", "averaging", "greedy", "chosen")}
    outputs["chosen on val"] = outputs.pop("chosen")
    if served is not choices:
        outputs[SERVED] = {t.name: served[t.name]["chosen"].combine(t, members) for t in tasks}
    outputs.update({f"trial-{n}": out for n, out in members.items()})
    rounds = compared_members(study, args.storage)
    outputs.update({name: test.member(run_id, tasks) for name, run_id in rounds})
    single = s.user_attrs.get("single_task_runs", {})
    if set(single) >= {t.name for t in tasks}:  # each task from its own single-task model
        outputs[SINGLE] = {t.name: test.task_output(single[t.name], t.name) for t in tasks}
    final = final_scores(tasks, manifest, outputs, [name for name, _ in rounds])

    out = Path("reports") / study.name
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame({name: {f"test/{t.metric_key}": r[t.name].value for t in tasks}
                          for name, r in final.rows.items()}).T
    for t in tasks:
        table[f"test/{t.metric_key}_lo"] = [final.rows[n][t.name].lo for n in table.index]
        table[f"test/{t.metric_key}_hi"] = [final.rows[n][t.name].hi for n in table.index]
    table.to_csv(out / "ensemble_test.csv", index_label="model")
    md = to_markdown(final, tasks, choices, served)
    (out / "ensemble_test.md").write_text(md)
    report = write_report(out / "report.md", study, manifest, tasks, final, choices, [n for n, _ in rounds], selection,
                          served)
    print(md)
    if budget:
        with open(out / "report.md", "a") as f:
            f.write("\n" + budget + "\n")
    verdict = equal_budget_section(study, s, args.storage, tasks, manifest, all_members, test, outputs.get(SINGLE))
    if verdict:
        (out / "equal_budget.md").write_text(verdict)
        with open(out / "report.md", "a") as f:
            f.write("\n## Equal budget: methods against the tuned weighted sum\n\n" + verdict)
        print(verdict)

    exp = tracking.ensure_experiment(client, study.name)
    parent = find_parent(client, study.name)  # a child of the study's parent: out of the trials' comparison
    with tracking.RunLogger(client, exp, "ensemble", parent, tags={"mtl.role": "ensemble", "mtl.study": study.name}) as run:
        run.log_params({"members": ",".join(str(m.number) for m in pool), "top_k": args.top_k or "all",
                        "max_trials": max_trials or "all",
                        "routing": ",".join(f"{t.name}:{next(iter(served[t.name]['routing'].weights))}" for t in tasks),
                        **{f"chosen.{t.name}": served[t.name]["chosen"].describe() for t in tasks}})
        chosen = final.rows[SERVED if SERVED in final.rows else "chosen on val"]  # the run's model: @ensemble
        run.log_metrics({f"test/{t.metric_key}": chosen[t.name].value for t in tasks}
                        | {f"test/{t.metric_key}_{e}": getattr(chosen[t.name], e) for t in tasks for e in ("lo", "hi")}
                        | {f"val/{t.metric_key}": served[t.name]["chosen"].val for t in tasks})
        for f in ("ensemble_test.md", "ensemble_test.csv", "report.md", *(["equal_budget.md"] if verdict else [])):
            run.log_artifact(out / f)
    register_ensemble(client, study.name, run.run_id, tasks, served, pool, test, manifest)
    for old in client.search_runs([exp], f"tags.`mtl.role` = 'ensemble' and tags.`mtl.study` = '{study.name}'"):
        if old.info.run_id != run.run_id:  # one ensemble run per study: the latest
            client.delete_run(old.info.run_id)
    if parent:
        client.log_artifact(parent, str(report), "report")
        if verdict:
            client.log_artifact(parent, str(out / "equal_budget.md"), "report")
        tracking.replace_table(client, parent, table.reset_index(names="model"), "report/ensemble_test.json")
    print(f"\nreport: {report}; table: {out / 'ensemble_test.md'} and .csv; MLflow run 'ensemble' {run.run_id}")
    return 0
