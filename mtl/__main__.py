"""Command line: python -m mtl {check,data,train,tune,pareto,ensemble,predict,bench} (each with --help).

User errors (bad files, flags, studies) print one line and exit non-zero; no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from mtl.errors import UserError


def _quiet() -> None:
    """Library chatter (experimental-API warnings, Optuna's per-trial INFO lines) hides the lines that matter."""
    import logging
    import warnings
    warnings.filterwarnings("ignore")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # inherited by spawned workers
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow configures its loggers
    import optuna  # configures its own root logger on import; lower it afterwards
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


def cmd_check(args) -> int:
    from mtl.data.manifest import format_problems, read_manifest, summary, validate
    m, problems = read_manifest(args.manifest)
    if m is not None:
        problems += validate(m, check_images=not args.no_images)
        for w in m.warnings:
            print(w, file=sys.stderr)
    if problems:
        print(format_problems(problems), file=sys.stderr)
        print(f"{args.manifest}: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print(summary(m))
    return 0


def cmd_data(args) -> int:
    from mtl.data import importers, render
    from mtl.data.manifest import load_manifest
    if args.data_cmd == "render":
        import json
        import time
        for path in args.manifests:
            m = load_manifest(path)
            style = json.loads(m.spec_path.read_text()).get("render")
            if style not in render.DRAWERS:
                raise UserError(f"{m.spec_path}: no 'render' style (fgo, utk): only demo sets can be rendered")
            t0 = time.perf_counter()
            n = render.render_manifest(m, style, args.size)
            print(f"rendered {n} images of {m.name} ({args.size}px) into {m.root} in {time.perf_counter() - t0:.1f}s")
    elif args.data_cmd == "import-fgo":
        print(importers.import_fgo(Path(args.labels), Path(args.images), Path(args.out), args.seed))
    elif args.data_cmd == "import-utkface":
        print(importers.import_utkface(Path(args.images), Path(args.out), args.seed))
    elif args.data_cmd == "make-manifests":
        render.write_manifest(*render.make_fgo_manifest(), Path(args.out_dir) / "fgo_synth.csv")
        render.write_manifest(*render.make_utk_manifest(), Path(args.out_dir) / "utk_synth.csv")
        print(f"wrote fgo_synth and utk_synth manifests into {args.out_dir}")
    return 0


def cmd_train(args) -> int:
    from mtl.train_cli import run_train
    return run_train(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mtl", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    c = sub.add_parser("check", help="validate a manifest and print its summary")
    c.add_argument("manifest")
    c.add_argument("--no-images", action="store_true", help="skip opening every image")
    c.set_defaults(func=cmd_check)

    d = sub.add_parser("data", help="render demo sets, import real data")
    dsub = d.add_subparsers(dest="data_cmd", required=True)
    r = dsub.add_parser("render", help="draw a demo manifest's images (deterministic)")
    r.add_argument("manifests", nargs="+")
    r.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    f = dsub.add_parser("import-fgo", help="FGO notebook CSV (image_name + one-hot columns) -> manifest")
    f.add_argument("labels")
    f.add_argument("images")
    f.add_argument("--out", default="data_manifests/fgo.csv")
    f.add_argument("--seed", type=int, default=0, help="seed of the grouped 70/15/15 split")
    u = dsub.add_parser("import-utkface", help="UTKFace directory (age_gender_race_datetime.jpg.chip.jpg) -> manifest")
    u.add_argument("images")
    u.add_argument("--out", default="data_manifests/utkface.csv")
    u.add_argument("--seed", type=int, default=0)
    mm = dsub.add_parser("make-manifests", help="(developers) regenerate the committed demo manifests")
    mm.add_argument("--out-dir", default="data_manifests")
    d.set_defaults(func=cmd_data)

    t = sub.add_parser("train", help="train one HydraNet and log it to MLflow (experiment 'train')")
    t.add_argument("--manifest", required=True)
    t.add_argument("--epochs", type=int)
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="TrainConfig override, e.g. head_dims=256,256 bn_momentum=0.2 loss_weights.age=0.1")
    t.add_argument("--finetune", metavar="TASK", help="train only this head; backbone, trunk, other heads frozen")
    t.add_argument("--from", dest="init", metavar="CKPT", help="checkpoint file or directory to start from")
    t.add_argument("--out", default="checkpoints", help="where checkpoints are written (default checkpoints/)")
    t.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    t.set_defaults(func=cmd_train)

    for name, help_ in [("tune", "run or resume an Optuna study"), ("pareto", "Pareto front and per-task best"),
                        ("ensemble", "routing/averaging ensembles scored on test"),
                        ("predict", "captions and gallery"), ("bench", "performance ratios")]:
        mod = __import__(f"mtl.{name}", fromlist=["add_arguments"]) if _has_module(name) else None
        if mod is None:
            continue
        sp = sub.add_parser(name, help=help_, description=(mod.__doc__ or "").splitlines()[0])
        mod.add_arguments(sp)
        sp.set_defaults(func=mod.main)
    return p


def _has_module(name: str) -> bool:
    return (Path(__file__).parent / f"{name}.py").is_file()


def main(argv=None) -> int:
    _quiet()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
