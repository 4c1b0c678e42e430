"""`python -m mtl predict <study> [images]` (`make predict`): captions and a captioned gallery from a study's
registered models.

By default each task is answered by its registered best model (`models:/<study>@best-<task>`, the
routing ensemble); `--model best-<task>` answers every task with that one model. Without images, a
handful of test-split images are captioned with their true labels beside the predictions.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.results.captions import caption, task_lines, truth_caption
from mtl.results.plots import gallery
from mtl.serve.inference import image_outputs
from mtl.serve.registry import load_best
from mtl.track import tracking
from mtl.train.checkpoints import model_from_checkpoint
from mtl.tune.runs import find_parent
from mtl.tune.studies import load_study


def run_models(models: dict, paths: list[Path]) -> list[dict[str, torch.Tensor]]:
    """models: task -> (model, cfg); each task's output comes from its own model (each model runs once)."""
    results = [{} for _ in paths]
    by_model: dict[int, list[str]] = {}
    for name, (model, _) in models.items():
        by_model.setdefault(id(model), []).append(name)
    for names in by_model.values():
        model, cfg = models[names[0]]
        out = image_outputs(model, cfg.image_size, paths)
        for i in range(len(paths)):
            for n in names:
                results[i][n] = out[n][i]
    return results


def main(args) -> int:
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
    outputs = run_models(models, paths)
    caps = [caption(tasks, o) for o in outputs]
    for p, c, tr in zip(paths, caps, truths):
        print(f"{p.name}: {c}")
        if tr:
            print(f"{'':>{len(p.name)}}  true: {tr}")
    out = Path("reports") / study.name / "gallery.png"
    gallery(out, paths, [task_lines(tasks, o, r) for o, r in zip(outputs, label_rows)])
    client = tracking.get_client()
    parent = find_parent(client, study.name)
    if parent:  # the UI shows the gallery on the study's parent run
        with Image.open(out) as im:
            client.log_image(parent, im.convert("RGB"), f"predict/{out.name}")
    print(f"gallery: {out}" + (" (also on the study's parent run, predict/)" if parent else ""))
    return 0
