"""`python -m mtl train`: one training run, logged to MLflow experiment `train` with the studies' keys."""

from __future__ import annotations

import math
import time
from pathlib import Path

from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.metrics import constant_score
from mtl.train import TrainConfig, check_config, fit, load_checkpoint, model_from_checkpoint


def baselines(manifest) -> dict[str, float]:
    """Val score of the best constant predictor per task (see mtl.metrics.best_constant)."""
    va, vam = manifest.targets("val")
    return {t.name: constant_score(t, va[t.name], vam[t.name]) for t in manifest.tasks}


def result_table(manifest, result, base: dict) -> str:
    """Per task: the best constant's val score, ours at its best epoch with a 95 % group-bootstrap interval."""
    from mtl.bootstrap import split_intervals
    ci = split_intervals(manifest.tasks, result.val_outputs, manifest, "val")
    lines = [f"{'task':<16}{'metric':<8}{'constant':>10}{'ours [95 % interval]':>26}{'epoch':>7}"]
    for t in manifest.tasks:
        b = result.best.get(t.name, {"score": math.nan, "epoch": 0})
        cell = str(ci[t.name]) if t.name in ci else f"{b['score']:.3f}"
        lines.append(f"{t.name:<16}{t.primary_metric:<8}{base[t.name]:>10.3f}{cell:>26}{b['epoch']:>7}")
    return "\n".join(lines)


def run_train(args) -> int:
    manifest = load_manifest(args.manifest, check_images=True)
    init = load_checkpoint(args.init) if args.init else None
    if init:
        _, init_cfg, init_tasks = model_from_checkpoint(init)  # a checkpoint that does not fit: one line, now
    if args.finetune and not init:
        raise UserError("--finetune needs --from CKPT (the model whose other heads stay frozen)")
    cfg = init_cfg if init else TrainConfig()
    cfg = cfg.with_overrides(args.overrides)
    if args.epochs is not None:
        if args.epochs < 1:
            raise UserError(f"--epochs {args.epochs}: must be at least 1")
        cfg = cfg.replace(epochs=args.epochs)
    if init:
        known = {t.name for t in init_tasks}
        if known != {t.name for t in manifest.tasks}:
            raise UserError(f"{args.init}: its tasks {sorted(known)} differ from {manifest.path}'s")
    check_config(cfg, manifest.tasks)  # backbone, warm start, freeze and method: one line before any run

    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    t0 = time.perf_counter()

    def progress(epoch, row):
        scores = "  ".join(f"{t.name} {row.get('val/' + t.metric_key, math.nan):.3f}" for t in manifest.tasks)
        print(f"epoch {epoch}/{cfg.epochs}  {time.perf_counter() - t0:6.1f}s  {scores}", flush=True)

    if args.no_track:
        result = fit(cfg, manifest, out, on_epoch=progress, init=init, finetune=args.finetune)
    else:
        from mtl import tracking
        client = tracking.get_client()
        exp = tracking.ensure_experiment(client, "train")
        with tracking.RunLogger(client, exp, f"train-{manifest.name}") as run:
            run.log_params({**tracking.flatten_config(cfg), "manifest": str(manifest.path),
                            "finetune": args.finetune or "", "from": args.init or ""})
            run.log_dataset(manifest)

            def on_epoch(epoch, row):
                run.log_epoch(epoch, row)
                progress(epoch, row)

            result = fit(cfg, manifest, out, on_epoch=on_epoch, init=init, finetune=args.finetune)
            run.log_metrics({f"best/{k}/{manifest.task(k).primary_metric}": v["score"] for k, v in result.best.items()})
            run.log_artifacts(result.checkpoint_dir, "checkpoints")
        print(f"MLflow run {run.run_id} (experiment 'train', {tracking.redact(tracking.tracking_uri())})")
    print(result_table(manifest, result, baselines(manifest)))
    print(f"wall time {time.perf_counter() - t0:.1f}s; checkpoints in {out}")
    return 0
