"""`python -m mtl train`: one training run, logged to MLflow experiment `train` (per-epoch `val/<task>/<metric>`
as in studies; the best val score per task as `best_val/<task>/<metric>` with its interval, as trials log it)."""

from __future__ import annotations

import math
import time
from pathlib import Path

from mtl.bootstrap import split_intervals
from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.model.metrics import constant_score
from mtl.track import tracking
from mtl.train.artifacts import load_checkpoint
from mtl.train.checkpoints import model_from_checkpoint
from mtl.train.config import TrainConfig
from mtl.train.loop import check_config, fit


def baselines(manifest) -> dict[str, float]:
    """Val score of the best constant predictor per task (see mtl.model.metrics.best_constant)."""
    va, vam = manifest.targets("val")
    return {t.name: constant_score(t, va[t.name], vam[t.name]) for t in manifest.tasks}


def result_table(manifest, result, base: dict) -> str:
    """Per task: the best constant's val score, ours at its best epoch with a 95 % group-bootstrap interval."""
    ci = split_intervals(manifest.tasks, result.val_outputs, manifest, "val")
    lines = [f"{'task':<16}{'metric':<8}{'constant':>10}{'ours [95 % interval]':>26}{'epoch':>7}"]
    for t in manifest.tasks:
        b = result.best.get(t.name, {"score": math.nan, "epoch": 0})
        cell = str(ci[t.name]) if t.name in ci else f"{b['score']:.3f}"
        lines.append(f"{t.name:<16}{t.primary_metric:<8}{base[t.name]:>10.3f}{cell:>26}{b['epoch']:>7}")
    return "\n".join(lines)


def main(args) -> int:
    manifest = load_manifest(args.manifest, check_images=True)
    if args.resume_from and args.init_from:
        raise UserError("--from resumes a run, --init starts a new one from a checkpoint's weights: give one of them")
    if args.resume_from and (args.finetune or args.overrides):
        raise UserError("--from resumes a run as it was configured: no --set or --finetune (use --init for a new run)")
    source = args.resume_from or args.init_from
    start = load_checkpoint(source) if source else None
    if start:
        _, start_cfg, start_tasks = model_from_checkpoint(start)  # a checkpoint that does not fit: one line, now
        if args.resume_from and not start.get("progress"):
            raise UserError(f"{start['source']}: not resumable (no optimizer, schedule or RNG state: a study trial's, "
                            f"or written by an older mtl); --init starts a new run from its weights")
    if args.finetune and not args.init_from:
        raise UserError("--finetune needs --init CKPT (the model whose other heads stay frozen)")
    cfg = start_cfg if start else TrainConfig()
    cfg = cfg.with_overrides(args.overrides)
    if args.epochs is not None:
        if args.epochs < 1:
            raise UserError(f"--epochs {args.epochs}: must be at least 1")
        cfg = cfg.replace(epochs=args.epochs)
    if start:
        known = {t.name for t in start_tasks}
        if known != {t.name for t in manifest.tasks}:
            raise UserError(f"{source}: its tasks {sorted(known)} differ from {manifest.path}'s")
    check_config(cfg, manifest.tasks)  # backbone, warm start, freeze and method: one line before any run

    out = Path(start["source"]).parent if args.resume_from else Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    t0 = time.perf_counter()
    starts = {"resume": start if args.resume_from else None, "init": start if args.init_from else None,
              "finetune": args.finetune, "resumable": True}

    def progress(epoch, row):
        scores = "  ".join(f"{t.name} {row.get('val/' + t.metric_key, math.nan):.3f}" for t in manifest.tasks)
        print(f"epoch {epoch}/{cfg.epochs}  {time.perf_counter() - t0:6.1f}s  {scores}", flush=True)

    if args.no_track:
        result = fit(cfg, manifest, out, on_epoch=progress, **starts)
    else:
        client = tracking.get_client()
        exp = tracking.ensure_experiment(client, "train")
        with tracking.RunLogger(client, exp, f"train-{manifest.name}") as run:
            run.log_params({**tracking.flatten_config(cfg), "manifest": str(manifest.path),
                            "finetune": args.finetune or "", "from": args.resume_from or "",
                            "init_from": args.init_from or ""})
            run.log_dataset(manifest)

            def on_epoch(epoch, row):
                run.log_epoch(epoch, row)
                progress(epoch, row)

            result = fit(cfg, manifest, out, on_epoch=on_epoch, **starts)
            ci = split_intervals(manifest.tasks, result.val_outputs, manifest, "val")
            run.log_metrics({f"best_val/{manifest.task(k).metric_key}": v["score"] for k, v in result.best.items()}
                            | {f"best_val/{manifest.task(k).metric_key}_{e}": getattr(s, e) for k, s in ci.items()
                               for e in ("lo", "hi")})
            run.log_artifacts(result.checkpoint_dir, "checkpoints")
        print(f"MLflow run {run.run_id} (experiment 'train', {tracking.redact(tracking.tracking_uri())})")
    print(result_table(manifest, result, baselines(manifest)))
    print(f"wall time {time.perf_counter() - t0:.1f}s; checkpoints in {out}")
    return 0
