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


def caption(tasks: list[Task], outputs: dict[str, torch.Tensor], top_k: int = 3) -> str:
    """One sample's outputs (task -> head output) -> `Gender: Female, ..., Main Colors: Silver, Gold, Red`."""
    return ", ".join(f"{t.display_name}: {format_value(t, t.predict(outputs[t.name], top_k))}" for t in tasks)


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


def gallery(path: Path, paths: list[Path], captions: list[str], truths: list[str | None]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image
    n = len(paths)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 5.8 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, p, cap, truth in zip(axes.flat, paths, captions, truths):
        with Image.open(p) as im:
            ax.imshow(to_rgb(im))
        text = "pred: " + textwrap.fill(cap, 44)
        if truth:
            text += "\ntrue: " + textwrap.fill(truth, 44)
        ax.set_title(text, fontsize=7, loc="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


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
    else:
        rows = manifest.rows("test").iloc[:: max(1, len(manifest.rows("test")) // args.n)].head(args.n)
        paths = [manifest.root / p for p in rows["image"]]
        truths = [truth_caption(tasks, r) for _, r in rows.iterrows()]
    outputs = run_models(models, tasks, paths)
    caps = [caption(tasks, o) for o in outputs]
    for p, c, tr in zip(paths, caps, truths):
        print(f"{p.name}: {c}")
        if tr:
            print(f"{'':>{len(p.name)}}  true: {tr}")
    out = Path("reports") / study.name / "gallery.png"
    gallery(out, paths, caps, truths)
    print(f"gallery: {out}")
    return 0
