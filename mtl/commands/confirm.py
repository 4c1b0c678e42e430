"""`python -m mtl confirm <study> [--seeds 3]` (`make confirm STUDY=s SEEDS=3`): seed repeats.

A trial's val score is one draw: another seed (initialisation, batch order, augmentation) gives
another. This re-trains each task's best configuration (the distinct trials `make pareto` would pick)
and, where the study's COMPARE_WITH study describes the same manifest, its hand-tuned rounds, with new
seeds; logs each run in the study's experiment (role `confirm`, under the parent run); and reports
mean ± sd over seeds of every task's best val score, and the test score of that task's best-epoch
checkpoint only where val selected the config for the task (printing every config's test score would
invite choosing on test). A win that is seed luck shows up as overlapping spreads. Finished runs are
reused, so an interrupted `confirm` resumes.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import optuna

from mtl.bootstrap import point, sample_stats
from mtl.data.manifest import load_manifest
from mtl.errors import UserError
from mtl.results.selection import select
from mtl.serve.inference import split_outputs
from mtl.track import tracking
from mtl.train.artifacts import load_checkpoint
from mtl.train.config import TrainConfig
from mtl.train.loop import fit
from mtl.tune.runs import ensure_pretrain, find_or_train, find_parent, run_key
from mtl.tune.studies import STUDY_TAG, load_study, trial_config

SEED_BASE = 10_000  # trials ran with seeds 0, 1, 2, ... (base + trial number): these are new


def configs_to_confirm(study, s, best: dict, epochs: int, warm_start) -> list[tuple[str, TrainConfig, list[str]]]:
    """(label, config, tasks it is best for): each distinct per-task best trial, then the rounds — as their
    trials ran them, warm-started from their study's PRETRAIN stage (`warm_start(study)`) where it has one."""
    by_trial: dict[int, list[str]] = {}
    for task, m in best.items():
        by_trial.setdefault(m.number, []).append(task)
    trials = {t.number: t for t in s.trials}
    init = warm_start(study)
    out = [] if study.configs else [  # a rounds study is confirmed by its rounds, once each
        (f"trial-{n}", trial_config(study, optuna.trial.FixedTrial(trials[n].params),
                                    epochs or trials[n].user_attrs.get("epochs", study.epochs)), tasks)
        for n, tasks in sorted(by_trial.items())]
    out = [(label, cfg if cfg.init or not init else cfg.replace(init=init), tasks) for label, cfg, tasks in out]
    rounds = study if study.configs else _rounds_study(study)
    if rounds is not None:
        r_init = init if rounds is study else warm_start(rounds)
        best_for = {trials[n].params.get("round"): t for n, t in by_trial.items()} if rounds is study else {}
        out += [(name, cfg.replace(epochs=epochs or rounds.epochs, init=cfg.init or r_init), best_for.get(name, []))
                for name, cfg in rounds.configs.items()]
    return out


def _rounds_study(study):
    if not study.compare_with:
        return None
    rounds = load_study(study.compare_with)
    same = Path(rounds.manifest).resolve() == Path(study.manifest).resolve()
    return rounds if same and rounds.configs else None


def run_one(client, exp_id: str, parent: str | None, study, manifest, tasks, label: str, cfg: TrainConfig,
            seed: int, test_tasks: list[str]) -> dict[str, float]:
    """One seed of one config: val best per task and, for `test_tasks` (those val selected the config for),
    the test score of that task's best-epoch checkpoint. A finished run of the same config and seed is
    reused (an interrupted confirm resumes)."""
    cfg = cfg.replace(seed=seed)

    def train(run):
        run.log_params({**tracking.flatten_config(cfg), "manifest": study.manifest, "confirm_of": label})
        with tempfile.TemporaryDirectory(prefix="mtl-confirm-") as tmp:
            result = fit(cfg, manifest, Path(tmp) / "checkpoints", on_epoch=run.log_epoch)
            metrics = {f"best_val/{t.metric_key}": result.best[t.name]["score"] for t in tasks}
            test_t, test_m = manifest.targets("test")
            outputs: dict[int, dict] = {}
            for t in (t for t in tasks if t.name in test_tasks):
                epoch = result.best[t.name]["epoch"]
                if epoch not in outputs:
                    outputs[epoch] = split_outputs(load_checkpoint(result.checkpoint_dir / f"epoch-{epoch}.pt"),
                                                   manifest, "test")
                stats = sample_stats(t, outputs[epoch][t.name], test_t[t.name], test_m[t.name])
                metrics[f"test/{t.metric_key}"] = point(t, stats)
        run.log_metrics(metrics)

    tags = {STUDY_TAG: study.name, "mtl.confirm_of": label, "seed": seed}
    key = run_key({"label": label, "cfg": cfg.to_dict(), "test": sorted(test_tasks)})
    run = find_or_train(client, "confirm", key, exp_id,
                        f"confirm-{label}-seed{seed}", parent, tags, train, anywhere=False)
    return run.data.metrics


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.3f} ± {sd:.3f}"


def main(args) -> int:
    if args.seeds < 1:
        raise UserError(f"SEEDS={args.seeds}: must be a positive integer")
    study, s, _, best, _ = select(args.study, args.storage)
    manifest = load_manifest(study.manifest, check_images=True)
    tasks = [manifest.task(n) for n in study.objectives]
    epochs = args.epochs  # None: each config with the epochs its trials ran
    client = tracking.get_client()
    exp_id = tracking.ensure_experiment(client, study.name)
    parent = find_parent(client, study.name)
    configs = configs_to_confirm(study, s, best, epochs,
                                 lambda st: ensure_pretrain(st, manifest, client, exp_id, parent))
    seeds = [SEED_BASE + k for k in range(args.seeds)]
    span = f"{epochs} epochs" if epochs else "the epochs their trials ran"
    print(f"confirm '{study.name}': {len(configs)} config(s) x {len(seeds)} seed(s), {span}")
    results = {}
    for label, cfg, best_for in configs:
        results[label] = [run_one(client, exp_id, parent, study, manifest, tasks, label, cfg, sd, best_for)
                          for sd in seeds]
        print(f"  {label}: val " + "  ".join(f"{t.name} {mean_sd([r[f'best_val/{t.metric_key}'] for r in results[label]])}"
                                             for t in tasks))

    lines = [f"# {study.name}: seed repeats ({len(seeds)} seeds, {span}; mean ± sd over seeds)", "",
             "Each task's best val score over epochs; the test score of that epoch's checkpoint only where val "
             "selected the config for the task (`*`), so test is read once per task, for the selected model.", "",
             "| config | split | " + " | ".join(f"{t.name} {t.primary_metric}" for t in tasks) + " |",
             "|---|---|" + "---:|" * len(tasks)]
    for label, _, best_for in configs:
        for split, prefix in (("val", "best_val"), ("test", "test")):
            cells = [("·" if split == "test" and t.name not in best_for else
                      mean_sd([r[f"{prefix}/{t.metric_key}"] for r in results[label]]) + ("*" if t.name in best_for else ""))
                     for t in tasks]
            lines.append(f"| {label} | {split} | " + " | ".join(cells) + " |")
    out = Path("reports") / study.name
    out.mkdir(parents=True, exist_ok=True)
    (out / "confirm.md").write_text("\n".join(lines) + "\n")
    if parent:
        client.log_artifact(parent, str(out / "confirm.md"), "report")
    print("\n".join(lines[4:]))
    print(f"\nsaved {out / 'confirm.md'}")
    return 0
