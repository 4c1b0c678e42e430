"""Ensembles of a study's Pareto members, judged on the held-out test split: `python -m mtl ensemble <study>`.

- routing: each task answered by the trial that was best for it on val (its best-epoch checkpoint);
- averaging: mean probabilities (mean value for regression) over the front, or the top-k per task.
Scored beside every single Pareto member and, where that study exists, the `fgo_rounds` baselines.
A single member answers each task with its own best-epoch checkpoint for that task (what its val
score describes). No selection step ever saw the test split.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch
from torch.utils.data import DataLoader

from mtl import tracking
from mtl.data.dataset import MultiTaskDataset
from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.metrics import TaskMetrics
from mtl.tasks import Task
from mtl.train import load_checkpoint, model_from_checkpoint

BASELINE_STUDY = "fgo_rounds"


def to_prob(task: Task, out: torch.Tensor) -> torch.Tensor:
    if task.kind in ("binary", "multilabel"):
        return torch.sigmoid(out)
    if task.kind == "multiclass":
        return torch.softmax(out, dim=-1)
    return out


def from_prob(task: Task, p: torch.Tensor) -> torch.Tensor:
    """Back to the head's output space (logits), so metrics and captions treat ensembles like models."""
    if task.kind in ("binary", "multilabel"):
        return torch.logit(p.clamp(1e-6, 1 - 1e-6))
    if task.kind == "multiclass":
        return p.clamp_min(1e-12).log()
    return p


def average(task: Task, outputs: list[torch.Tensor]) -> torch.Tensor:
    """Mean probability (mean value for regression) over members, returned as logits."""
    return from_prob(task, torch.stack([to_prob(task, o) for o in outputs]).mean(0))


def route(tasks: list[Task], outputs_by_member: dict, best_member: dict[str, object]) -> dict[str, torch.Tensor]:
    """Each task's output taken from the member that is best for it."""
    return {t.name: outputs_by_member[best_member[t.name]][t.name] for t in tasks}


@torch.no_grad()
def predict_split(ckpt: dict, manifest, split: str, batch_size: int = 64) -> dict[str, torch.Tensor]:
    model, cfg, _ = model_from_checkpoint(ckpt)
    ds = MultiTaskDataset(manifest, split, cfg.image_size)
    outs: dict[str, list] = {}
    for x, _, _ in DataLoader(ds, batch_size):
        for k, v in model(x).items():
            outs.setdefault(k, []).append(v)
    return {k: torch.cat(v) for k, v in outs.items()}


def score(tasks: list[Task], outputs: dict, manifest, split: str) -> dict[str, float]:
    targets, masks = manifest.targets(split)
    m = TaskMetrics(tasks)
    m.update(outputs, {k: torch.from_numpy(v) for k, v in targets.items()},
             {k: torch.from_numpy(v) for k, v in masks.items()})
    return m.compute()


class CheckpointCache:
    """Test-split outputs per (run, checkpoint file), each checkpoint downloaded and run once."""

    def __init__(self, client, manifest, split: str):
        self.client, self.manifest, self.split = client, manifest, split
        self.outputs: dict[tuple[str, str], dict] = {}
        self.index: dict[str, dict] = {}

    def best_file(self, run_id: str, task: str) -> str:
        if run_id not in self.index:
            path = self.client.download_artifacts(run_id, "checkpoints/index.json")
            self.index[run_id] = json.loads(Path(path).read_text())
        return self.index[run_id]["best"][task]["file"]

    def task_output(self, run_id: str, task: str) -> torch.Tensor:
        """The run's best-epoch checkpoint for `task`, its output for `task`."""
        key = (run_id, self.best_file(run_id, task))
        if key not in self.outputs:
            local = self.client.download_artifacts(run_id, f"checkpoints/{key[1]}")
            ckpt = load_checkpoint(local)
            self.outputs[key] = predict_split(ckpt, self.manifest, self.split)
        return self.outputs[key][task]

    def member(self, run_id: str, tasks: list[Task]) -> dict[str, torch.Tensor]:
        return {t.name: self.task_output(run_id, t.name) for t in tasks}


def baseline_members(study, manifest) -> list[tuple[str, str]]:
    """(label, run id) of the fgo_rounds trials when that study was run on the same manifest."""
    from mtl.pareto import open_existing
    if study.name == BASELINE_STUDY or not (Path("experiments") / f"{BASELINE_STUDY}.py").is_file():
        return []
    try:
        base, _, done = open_existing(BASELINE_STUDY, None)
    except UserError:
        return []
    if Path(base.manifest).resolve() != Path(study.manifest).resolve():
        return []
    return [(f"{BASELINE_STUDY}:{t.params.get('round', t.number)}", t.user_attrs["mlflow_run_id"]) for t in done]


def main(args) -> int:
    from mtl.pareto import select
    study, s, front, best, _ = select(args.study, args.storage)
    manifest = load_manifest(study.manifest, check_images=True)
    tasks = [manifest.task(n) for n in study.objectives]
    client = tracking.get_client()
    cache = CheckpointCache(client, manifest, "test")
    rows: dict[str, dict] = {}

    members = {m.number: cache.member(m.run_id, tasks) for m in front}
    rows["routing"] = score(tasks, route(tasks, members, {k: m.number for k, m in best.items()}), manifest, "test")
    averaged = {}
    for i, t in enumerate(tasks):
        ranked = sorted(front, key=lambda m: m.values[i], reverse=t.direction == "maximize")
        chosen = ranked[:args.top_k] if args.top_k else ranked
        averaged[t.name] = average(t, [members[m.number][t.name] for m in chosen])
    label = f"averaging (top-{args.top_k})" if args.top_k else f"averaging ({len(front)} members)"
    rows[label] = score(tasks, averaged, manifest, "test")
    for m in front:
        rows[f"trial-{m.number}"] = score(tasks, members[m.number], manifest, "test")
    for name, run_id in baseline_members(study, manifest):
        rows[name] = score(tasks, cache.member(run_id, tasks), manifest, "test")

    table = pd.DataFrame({name: {f"test/{t.metric_key}": r[t.metric_key] for t in tasks} for name, r in rows.items()}).T
    out = Path("reports") / study.name
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "ensemble_test.csv", index_label="model")
    (out / "ensemble_test.md").write_text(to_markdown(table, tasks))
    print(to_markdown(table, tasks))

    exp = tracking.ensure_experiment(client, study.name)
    with tracking.RunLogger(client, exp, "ensemble", tags={"mtl.role": "ensemble", "mtl.study": study.name}) as run:
        run.log_params({"members": ",".join(str(m.number) for m in front), "top_k": args.top_k or "all",
                        "routing": ",".join(f"{k}:{m.number}" for k, m in best.items())})
        run.log_metrics({f"test/{k}": v for k, v in rows["routing"].items()})
        run.log_metrics({f"averaging/test/{k}": v for k, v in rows[label].items()})
        run.log_artifact(out / "ensemble_test.md")
        run.log_artifact(out / "ensemble_test.csv")
    print(f"\nsaved {out / 'ensemble_test.md'} and .csv; MLflow run 'ensemble' {run.run_id}")
    return 0


def to_markdown(table: pd.DataFrame, tasks: list[Task]) -> str:
    """Markdown table; the best value of each column in bold."""
    cols = list(table.columns)
    lines = ["| model | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    best = {}
    for c, t in zip(cols, tasks):
        best[c] = table[c].min() if t.direction == "minimize" else table[c].max()
    for name, row in table.iterrows():
        cells = [f"**{row[c]:.3f}**" if row[c] == best[c] else f"{row[c]:.3f}" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
