"""Captions and a captioned gallery from a study's registered models: `python -m mtl predict <study> [images]`.

By default each task is answered by its registered best model (`models:/<study>@best-<task>`, the
routing ensemble); `--model best-<task>` answers every task with that one model. Without images,
a handful of test-split images are captioned with their true labels beside the predictions.
Captions read like the FGO write-up: `Gender: Female, Region: Europe, Fighting Style: melee,
Alignment: LG, Main Colors: ['Silver', 'Gold', 'Blue']`.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import torch

from mtl.data.images import to_rgb
from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.tasks import Task
from mtl.train import model_from_checkpoint


def format_value(task: Task, value) -> str:
    return task.spec.format(value)


def caption(tasks: list[Task], outputs: dict[str, torch.Tensor]) -> str:
    """One sample's outputs (task -> head output) -> `Gender: Female, ..., Main Colors: ['Silver', 'Gold']`
    (a multilabel task's labels over the threshold, most probable first: what its F1 scores)."""
    return ", ".join(f"{t.display_name}: {format_value(t, t.predict(outputs[t.name]))}" for t in tasks)


def truth_caption(tasks: list[Task], row) -> str:
    parts = []
    for t in tasks:
        cell = row[t.name].strip()
        parts.append(f"{t.display_name}: {format_value(t, t.spec.cell_value(cell)) if cell else '?'}")
    return ", ".join(parts)


def run_models(models: dict, tasks: list[Task], paths: list[Path]) -> list[dict[str, torch.Tensor]]:
    """models: task -> (model, cfg); each task's output comes from its own model (each model runs once)."""
    from mtl.mlmodel import member_outputs
    results = [{} for _ in paths]
    by_model: dict[int, list[str]] = {}
    for name, (model, _) in models.items():
        by_model.setdefault(id(model), []).append(name)
    for names in by_model.values():
        model, cfg = models[names[0]]
        out = member_outputs(model, cfg, paths)
        for i in range(len(paths)):
            for n in names:
                results[i][n] = out[n][i]
    return results


def gallery(path: Path, paths: list[Path], lines: list[list[tuple[str, str, str | None]]]) -> None:
    """Images in a grid, each with one line per task under it: `Task: prediction`, green with a tick when it
    matches the manifest's label, red with the label when it does not, black when there is no label."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    n = len(paths)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    k = max(len(x) for x in lines) if lines else 1
    cell_h = 3.2 + 0.27 * k
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, cell_h * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p, task_lines in zip(axes.flat, paths, lines):
        with Image.open(p) as im:
            ax.imshow(to_rgb(im))
        ax.set_title(p.name, fontsize=8)
        for i, (name, pred, truth) in enumerate(task_lines):
            if truth is None:
                text, color = f"{name}: {pred}", "black"
            elif pred == truth:
                text, color = f"\u2713 {name}: {pred}", "#1a7f37"
            else:
                text, color = f"\u2717 {name}: {pred} (true: {truth})", "#cf222e"
            ax.text(0.0, -0.04 - i * 0.085, textwrap.shorten(text, 52), transform=ax.transAxes, fontsize=8.5,
                    color=color, va="top", ha="left")
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.25 / (cell_h * rows), bottom=0.27 * k / (cell_h * rows) + 0.02,
                        hspace=0.27 * k / 3.2 + 0.15, wspace=0.08)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def task_lines(tasks: list[Task], outputs: dict[str, torch.Tensor], row=None) -> list:
    """(display name, prediction, truth or None) per task: the prediction the metrics score (a multilabel
    task's labels over the threshold, sorted), so a tick means the metric counts it right."""
    def show(v):
        return ", ".join(sorted(v)) if isinstance(v, list) else format_value(t, v)
    out = []
    for t in tasks:
        pred = show(t.predict(outputs[t.name]))
        truth = show(t.spec.cell_value(row[t.name])) if row is not None and row[t.name].strip() else None
        out.append((t.display_name, pred, truth))
    return out


def main(args) -> int:
    from mtl.pareto import load_best
    from mtl.studies import load_study
    study = load_study(args.study)
    manifest = load_manifest(study.manifest)
    tasks = manifest.tasks
    if args.model:
        if not args.model.startswith("best-") or args.model[5:] not in {t.name for t in tasks}:
            raise UserError(f"MODEL={args.model}: expected best-<task> with a task of {manifest.name} "
                            f"({', '.join(t.name for t in tasks)})")
        model, cfg, _ = model_from_checkpoint(load_best(study.name, args.model[5:]))
        models = {t.name: (model, cfg) for t in tasks}
    else:
        models = {t.name: model_from_checkpoint(load_best(study.name, t.name))[:2] for t in tasks}
    if args.images:
        paths = [Path(p) for p in args.images]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise UserError(f"image not found: {missing[0]}")
        truths = [None] * len(paths)
        label_rows = [None] * len(paths)
    else:
        rows = manifest.rows("test").iloc[:: max(1, len(manifest.rows("test")) // args.n)].head(args.n)
        paths = [manifest.root / p for p in rows["image"]]
        truths = [truth_caption(tasks, r) for _, r in rows.iterrows()]
        label_rows = [r for _, r in rows.iterrows()]
    outputs = run_models(models, tasks, paths)
    caps = [caption(tasks, o) for o in outputs]
    for p, c, tr in zip(paths, caps, truths):
        print(f"{p.name}: {c}")
        if tr:
            print(f"{'':>{len(p.name)}}  true: {tr}")
    out = Path("reports") / study.name / "gallery.png"
    gallery(out, paths, [task_lines(tasks, o, r) for o, r in zip(outputs, label_rows)])
    from mtl import tracking
    from mtl.pareto import find_parent
    client = tracking.get_client()
    parent = find_parent(client, study.name)
    if parent:  # the UI shows the gallery on the study's parent run
        from PIL import Image
        with Image.open(out) as im:
            client.log_image(parent, im.convert("RGB"), f"predict/{out.name}")
    print(f"gallery: {out}" + (" (also on the study's parent run, predict/)" if parent else ""))
    return 0
