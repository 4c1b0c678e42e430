"""Ensembles of a study's Pareto members, chosen on val and judged once on test: `python -m mtl ensemble <study>`.

Per task, three ways to combine the candidates (the front, or the k best on val with `--top-k`):
- routing: the trial that was best for the task on val (its best-epoch checkpoint) — the val-selected
  single model;
- averaging: mean probabilities (mean value for regression) over the candidates;
- greedy: forward ensemble selection with replacement (Caruana et al., ICML 2004): start empty, add
  the candidate that most improves the val metric of the averaged ensemble, keep the best prefix.
The method used for a task is the one with the best val score (ties go to the simpler one).

Only then are the test labels read, once, for the final table: every model with its 95 %
group-bootstrap interval, the best constant predictor, the `fgo_rounds` rounds where that study ran
on the same manifest, and paired intervals for each comparison. `reports/<study>/report.md` is the
table a researcher reads (also on the study's parent run).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mtl import tracking
from mtl.bootstrap import GroupBootstrap, Score, delta_m, point, sample_stats, verdict
from mtl.data.dataset import build_transform, cached_images
from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.metrics import best_constant
from mtl.tasks import Task
from mtl.train import VAL_OUTPUTS, load_checkpoint, model_from_checkpoint

BASELINE_STUDY = "fgo_rounds"
SINGLE = "single-task"  # the row of the single-task baselines (one head alone per task), when the study has them
GREEDY_STEPS = 25


def to_prob(task: Task, out: torch.Tensor) -> torch.Tensor:
    return task.spec.to_prob(out)


def from_prob(task: Task, p: torch.Tensor) -> torch.Tensor:
    """Back to the head's output space (logits), so metrics and captions treat ensembles like models."""
    return task.spec.from_prob(p)


def average(task: Task, outputs: list[torch.Tensor], weights: list[float] | None = None) -> torch.Tensor:
    """(Weighted) mean probability (mean value for regression) over members, returned as logits."""
    probs = torch.stack([to_prob(task, o) for o in outputs])
    w = torch.ones(len(outputs)) if weights is None else torch.as_tensor(weights, dtype=probs.dtype)
    w = (w / w.sum()).reshape(-1, *([1] * (probs.dim() - 1)))
    return from_prob(task, (probs * w).sum(0))


def route(tasks: list[Task], outputs_by_member: dict, best_member: dict[str, object]) -> dict[str, torch.Tensor]:
    """Each task's output taken from the member that is best for it."""
    return {t.name: outputs_by_member[best_member[t.name]][t.name] for t in tasks}


def greedy_select(task: Task, candidates: list[torch.Tensor], targets, mask, steps: int = GREEDY_STEPS) -> list[int]:
    """Caruana et al. 2004: forward selection with replacement on one split's labels; returns how often
    each candidate was picked in the best prefix (the smallest one on ties)."""
    counts = np.zeros(len(candidates), dtype=int)
    probs = [to_prob(task, c) for c in candidates]
    total = torch.zeros_like(probs[0])
    best_score, best_counts = None, counts.copy()
    for step in range(1, steps + 1):
        scores = [point(task, sample_stats(task, from_prob(task, (total + p) / step), targets, mask)) for p in probs]
        i = int(np.nanargmin(scores) if task.direction == "minimize" else np.nanargmax(scores))
        counts[i] += 1
        total = total + probs[i]
        if best_score is None or task.better(scores[i], best_score):
            best_score, best_counts = scores[i], counts.copy()
    return best_counts.tolist()


@dataclass
class Choice:
    """How one task is answered: a method and its members' weights (trial number -> weight)."""
    method: str
    weights: dict[int, float]
    val: float

    def describe(self) -> str:
        if len(self.weights) == 1:
            return f"{self.method} (trial {next(iter(self.weights))})"
        parts = ", ".join(f"t{n}x{w:g}" for n, w in sorted(self.weights.items()))
        return f"{self.method} ({parts})"

    def combine(self, task: Task, outputs_by_member: dict[int, dict]) -> torch.Tensor:
        nums = list(self.weights)
        return average(task, [outputs_by_member[n][task.name] for n in nums], [self.weights[n] for n in nums])


def choose(task: Task, candidates: list, routed: int, val_out: dict[int, dict], targets, mask) -> dict[str, Choice]:
    """Routing, averaging and greedy for one task, each scored on val; key 'chosen' holds the best of them
    (ties go to the simpler method, in that order). `candidates` are trial numbers."""
    def val_score(weights: dict[int, float]) -> float:
        out = Choice("", weights, 0.0).combine(task, val_out)
        return point(task, sample_stats(task, out, targets, mask))

    counts = greedy_select(task, [val_out[n][task.name] for n in candidates], targets, mask)
    options = {"routing": {routed: 1.0}, "averaging": {n: 1.0 for n in candidates},
               "greedy": {n: float(c) for n, c in zip(candidates, counts) if c}}
    out = {name: Choice(name, w, val_score(w)) for name, w in options.items()}
    chosen = out["routing"]
    for name in ("averaging", "greedy"):
        if task.better(out[name].val, chosen.val):
            chosen = out[name]
    out["chosen"] = chosen
    return out


# ------------------------------------------------------------------------------------------------
# member outputs: val from what training saved, test by inference; neither reads a label
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def predict_split(ckpt: dict, manifest, split: str, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """A checkpoint's outputs on every image of a split, in manifest order (images only: no labels read)."""
    model, cfg, _ = model_from_checkpoint(ckpt)
    images = cached_images(manifest.image_paths(split), cfg.image_size)
    tf = build_transform(train=False, augment=False)
    outs: dict[str, list] = {}
    for i in range(0, len(images), batch_size):
        for k, v in model(tf(images[i:i + batch_size])).items():
            outs.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in outs.items()}


class CheckpointCache:
    """Per-split outputs per (run, checkpoint file), each checkpoint downloaded and run at most once."""

    def __init__(self, client, manifest, split: str):
        self.client, self.manifest, self.split = client, manifest, split
        self.outputs: dict[tuple[str, str], dict] = {}
        self.index: dict[str, dict] = {}

    def best_file(self, run_id: str, task: str) -> str:
        if run_id not in self.index:
            path = self.client.download_artifacts(run_id, "checkpoints/index.json")
            self.index[run_id] = json.loads(Path(path).read_text())
        return self.index[run_id]["best"][task]["file"]

    def _saved_val(self, run_id: str, task: str) -> torch.Tensor | None:
        """The val outputs training kept for the task's best epoch, if they match this manifest's val split."""
        if self.split != "val":
            return None
        key = (run_id, VAL_OUTPUTS)
        if key not in self.outputs:
            try:
                local = self.client.download_artifacts(run_id, f"checkpoints/{VAL_OUTPUTS}")
                saved = torch.load(local, map_location="cpu", weights_only=True)
            except Exception:  # older runs have none: fall back to inference
                saved = {}
            same = saved.get("images") == [str(p) for p in self.manifest.rows("val")["image"]]
            self.outputs[key] = saved.get("outputs", {}) if same else {}
        return self.outputs[key].get(task)

    def task_output(self, run_id: str, task: str) -> torch.Tensor:
        """The run's best-epoch checkpoint for `task`, its output for `task`."""
        saved = self._saved_val(run_id, task)
        if saved is not None:
            return saved
        key = (run_id, self.best_file(run_id, task))
        if key not in self.outputs:
            local = self.client.download_artifacts(run_id, f"checkpoints/{key[1]}")
            self.outputs[key] = predict_split(load_checkpoint(local), self.manifest, self.split)
        return self.outputs[key][task]

    def member(self, run_id: str, tasks: list[Task]) -> dict[str, torch.Tensor]:
        return {t.name: self.task_output(run_id, t.name) for t in tasks}


def baseline_members(study, manifest, storage: str | None = None) -> list[tuple[str, str]]:
    """(round name, run id) of the fgo_rounds trials when that study was run on the same manifest, with the
    same objectives (in the same Optuna storage when one is given)."""
    from mtl.pareto import open_existing
    if study.name == BASELINE_STUDY or not (Path("experiments") / f"{BASELINE_STUDY}.py").is_file():
        return []
    try:
        base, _, done = open_existing(BASELINE_STUDY, storage if storage and "://" in storage else None)
    except UserError:
        return []
    if Path(base.manifest).resolve() != Path(study.manifest).resolve() or set(base.objectives) != set(study.objectives):
        return []
    return [(str(t.params.get("round", f"trial-{t.number}")), t.user_attrs["mlflow_run_id"]) for t in done]


# ------------------------------------------------------------------------------------------------
def select_on_val(tasks, manifest, cache, front, best, values_of, top_k: int) -> dict[str, dict[str, Choice]]:
    """Every selection step: candidates, routing, averaging, greedy and the choice, from val alone."""
    targets, masks = manifest.targets("val")
    val_out = {m.number: cache.member(m.run_id, tasks) for m in front}
    choices = {}
    for i, t in enumerate(tasks):
        ranked = sorted(front, key=lambda m: values_of(m)[i], reverse=t.direction == "maximize")
        candidates = [m.number for m in (ranked[:top_k] if top_k else ranked)]
        choices[t.name] = choose(t, candidates, best[t.name].number, val_out, targets[t.name], masks[t.name])
    return choices


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


def main(args) -> int:
    from mtl.pareto import find_parent, select
    if args.top_k < 0:
        raise UserError(f"--top-k {args.top_k}: must be 0 (the whole front) or a positive number")
    study, s, front, best, _ = select(args.study, args.storage)
    manifest = load_manifest(study.manifest, check_images=True)
    tasks = [manifest.task(n) for n in study.objectives]
    client = tracking.get_client()
    values = {m.number: m.values for m in front}
    choices = select_on_val(tasks, manifest, CheckpointCache(client, manifest, "val"), front, best,
                            lambda m: values[m.number], args.top_k)

    test = CheckpointCache(client, manifest, "test")
    members = {m.number: test.member(m.run_id, tasks) for m in front}
    outputs = {name: {t.name: choices[t.name][name].combine(t, members) for t in tasks}
               for name in ("routing", "averaging", "greedy", "chosen")}
    outputs["chosen on val"] = outputs.pop("chosen")
    outputs.update({f"trial-{n}": out for n, out in members.items()})
    rounds = baseline_members(study, manifest, args.storage)
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
    md = to_markdown(final, tasks, choices)
    (out / "ensemble_test.md").write_text(md)
    report = write_report(out / "report.md", study, manifest, tasks, final, choices, [n for n, _ in rounds])
    print(md)

    exp = tracking.ensure_experiment(client, study.name)
    parent = find_parent(client, study.name)  # a child of the study's parent: out of the trials' comparison
    with tracking.RunLogger(client, exp, "ensemble", parent, tags={"mtl.role": "ensemble", "mtl.study": study.name}) as run:
        run.log_params({"members": ",".join(str(m.number) for m in front), "top_k": args.top_k or "all",
                        "routing": ",".join(f"{k}:{m.number}" for k, m in best.items()),
                        **{f"chosen.{t.name}": choices[t.name]["chosen"].describe() for t in tasks}})
        chosen = final.rows["chosen on val"]
        run.log_metrics({f"test/{t.metric_key}": chosen[t.name].value for t in tasks}
                        | {f"test/{t.metric_key}_{e}": getattr(chosen[t.name], e) for t in tasks for e in ("lo", "hi")}
                        | {f"val/{t.metric_key}": choices[t.name]["chosen"].val for t in tasks})
        for f in ("ensemble_test.md", "ensemble_test.csv", "report.md"):
            run.log_artifact(out / f)
    register_ensemble(client, study.name, run.run_id, tasks, choices, front, test, manifest)
    for old in client.search_runs([exp], f"tags.`mtl.role` = 'ensemble' and tags.`mtl.study` = '{study.name}'"):
        if old.info.run_id != run.run_id:  # one ensemble run per study: the latest
            client.delete_run(old.info.run_id)
    if parent:
        client.log_artifact(parent, str(report), "report")
        tracking.replace_table(client, parent, table.reset_index(names="model"), "report/ensemble_test.json")
    print(f"\nreport: {report}; table: {out / 'ensemble_test.md'} and .csv; MLflow run 'ensemble' {run.run_id}")
    return 0


def register_ensemble(client, study_name: str, run_id: str, tasks, choices, front, cache, manifest) -> str:
    """The chosen ensemble as a logged model (pyfunc) on the ensemble run, registered as a version of
    `<study>` with alias `ensemble`: its members are the (trial, best-epoch checkpoint) pairs the chosen
    combinations use, each task averaging its own members' probabilities with the chosen weights."""
    import mlflow

    from mtl import mlmodel
    run_of = {m.number: m.run_id for m in front}
    members, combine = {}, {}
    for t in tasks:
        combine[t.name] = {}
        for number, w in choices[t.name]["chosen"].weights.items():
            key = (run_of[number], cache.best_file(run_of[number], t.name))
            name = members.setdefault(key, f"m{len(members)}")
            combine[t.name][name] = combine[t.name].get(name, 0.0) + float(w)
    ckpts = {name: load_checkpoint(client.download_artifacts(r, f"checkpoints/{f}")) for (r, f), name in members.items()}
    example = manifest.root / manifest.rows("val")["image"].iloc[0]
    val = {f"val/{t.metric_key}": (choices[t.name]["chosen"].val, 0) for t in tasks}
    dataset = mlflow.data.from_pandas(manifest.table, source=str(manifest.path), name=manifest.name)
    logged = mlmodel.log_model(run_id, "ensemble", ckpts, tasks, combine, example, metrics=val, dataset=dataset,
                               params={"study": study_name, **{f"chosen.{t.name}": choices[t.name]["chosen"].describe()
                                                               for t in tasks}})
    try:
        client.create_registered_model(study_name, description=f"per-task best models of study {study_name}")
    except Exception:
        pass  # already registered
    mv = client.create_model_version(study_name, logged.model_uri, run_id=run_id, model_id=logged.model_id,
                                     tags={"task": "ensemble", "members": str(len(members))})
    client.set_registered_model_alias(study_name, "ensemble", mv.version)
    mlmodel.retire_unaliased(client, study_name)  # the ensemble chosen before, if no best-<task> is it
    print(f"registered models:/{study_name}@ensemble -> version {mv.version} ({len(members)} member checkpoint(s))")
    return mv.version


# ------------------------------------------------------------------------------------------------
# tables and the report
# ------------------------------------------------------------------------------------------------
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
