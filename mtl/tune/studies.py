"""Study specs: `experiments/<name>.py` loaded and checked (see the README's "writing a study"), the
config each trial trains, and the tags that link MLflow runs to their study."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import optuna

from mtl import methods
from mtl.errors import UserError
from mtl.train.config import TrainConfig
from mtl.train.loop import check_config
from mtl.tune.early_stop import EarlyStop

EXPERIMENTS = Path("experiments")
STUDY_TAG = "mtl.study"
ROLE_TAG = "mtl.role"
PARENT_TAG = "mtl.parent_run"  # on trial runs: the study's parent run (trials are top-level rows in the UI)


@dataclass
class Study:
    name: str
    path: Path
    manifest: str
    objectives: list[str]
    base: TrainConfig
    trials: int
    epochs: int
    search_space: object = None  # callable(trial, base) -> TrainConfig
    configs: dict | None = None  # fixed rounds: name -> TrainConfig
    doc: str = ""
    sampler: str = "tpe"  # SAMPLER: tpe | gp | nsga2 | random
    pretrain: TrainConfig | None = None  # PRETRAIN: trained once, its backbone warm-starts every trial
    early_stop: EarlyStop | None = None  # EARLY_STOP: multi-objective early stopping across trials
    single_task: bool = False  # SINGLE_TASK_BASELINES: one head alone per objective, same budget -> Δm %
    enqueue: tuple = ()  # ENQUEUE: partial parameter sets run first, once (e.g. each method R times)
    compare_with: str | None = None  # COMPARE_WITH: a study of fixed rounds the reports compare this one with
    tuned_fixed: str | None = None  # TUNED_FIXED: the study that tuned `fixed` with one method's budget (method studies)
    serve_max_trials: int = 0  # SERVE_MAX_TRIALS: the served ensemble draws on at most this many trials (0: no limit)


SAMPLERS = ("tpe", "gp", "nsga2", "random")
# every name a study file may set (a CAPS name outside this set is a typo or a setting mtl does not have)
STUDY_NAMES = ("MANIFEST", "OBJECTIVES", "BASE", "CONFIGS", "TRIALS", "EPOCHS", "SAMPLER", "PRETRAIN", "EARLY_STOP",
               "SINGLE_TASK_BASELINES", "ENQUEUE", "COMPARE_WITH", "TUNED_FIXED", "SERVE_MAX_TRIALS")


def check_names(path: Path, mod) -> None:
    """A study file's CAPS names are the declared ones: an unknown one is one line naming the closest."""
    import difflib
    for name in vars(mod):
        if name.isupper() and not name.startswith("_") and name not in STUDY_NAMES:
            close = difflib.get_close_matches(name, STUDY_NAMES, n=1)
            hint = f"did you mean {close[0]}?" if close else f"known: {', '.join(STUDY_NAMES)}"
            raise UserError(f"{path}: unknown setting {name} ({hint})")
    if not hasattr(mod, "search_space"):
        close = difflib.get_close_matches("search_space", [n for n in vars(mod) if callable(vars(mod)[n])], n=1)
        if close:
            raise UserError(f"{path}: defines {close[0]}, not search_space (did you mean search_space?)")


def available_studies() -> list[str]:
    return sorted(p.stem for p in EXPERIMENTS.glob("*.py") if not p.name.startswith("_"))


def load_study(name: str) -> Study:
    """Import experiments/<name>.py and check it has what a study needs (one clear line if not)."""
    path = EXPERIMENTS / f"{name}.py"
    if not path.is_file():
        raise UserError(f"no study '{name}' in {EXPERIMENTS}/ (studies: {', '.join(available_studies()) or 'none'})")
    spec = importlib.util.spec_from_file_location(f"experiments.{name}", path)
    mod = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(mod)
    except Exception as e:
        raise UserError(f"{path}: fails to import ({type(e).__name__}: {e})") from None
    check_names(path, mod)
    missing = [a for a in ("MANIFEST", "OBJECTIVES", "BASE") if not hasattr(mod, a)]
    if not hasattr(mod, "search_space") and not hasattr(mod, "CONFIGS"):
        missing.append("search_space or CONFIGS")
    if missing:
        raise UserError(f"{path}: missing {', '.join(missing)}")
    if not isinstance(mod.BASE, TrainConfig):
        raise UserError(f"{path}: BASE must be a TrainConfig")
    configs = getattr(mod, "CONFIGS", None)
    sampler = getattr(mod, "SAMPLER", "tpe")
    if sampler not in SAMPLERS:
        raise UserError(f"{path}: SAMPLER = {sampler!r}: expected one of {', '.join(SAMPLERS)}")
    pretrain = getattr(mod, "PRETRAIN", None)
    if pretrain is not None and not isinstance(pretrain, TrainConfig):
        raise UserError(f"{path}: PRETRAIN must be a TrainConfig")
    early_stop = getattr(mod, "EARLY_STOP", None)
    if early_stop is not None and not isinstance(early_stop, EarlyStop):
        raise UserError(f"{path}: EARLY_STOP must be an mtl.tune.early_stop.EarlyStop")
    enqueue = getattr(mod, "ENQUEUE", ())
    if not isinstance(enqueue, (list, tuple)) or not all(isinstance(e, dict) for e in enqueue):
        raise UserError(f"{path}: ENQUEUE must be a list of parameter dicts")
    compare_with = getattr(mod, "COMPARE_WITH", None)
    if compare_with is not None and not (isinstance(compare_with, str) and (EXPERIMENTS / f"{compare_with}.py").is_file()):
        raise UserError(f"{path}: COMPARE_WITH = {compare_with!r}: no such study in {EXPERIMENTS}/")
    tuned_fixed = getattr(mod, "TUNED_FIXED", None)
    if tuned_fixed is not None and not (isinstance(tuned_fixed, str) and (EXPERIMENTS / f"{tuned_fixed}.py").is_file()):
        raise UserError(f"{path}: TUNED_FIXED = {tuned_fixed!r}: no such study in {EXPERIMENTS}/")
    serve = getattr(mod, "SERVE_MAX_TRIALS", 0)
    if not isinstance(serve, int) or isinstance(serve, bool) or serve < 0:
        raise UserError(f"{path}: SERVE_MAX_TRIALS = {serve!r}: expected 0 (no limit) or a positive whole number")
    return Study(name=name, path=path, manifest=str(mod.MANIFEST), objectives=list(mod.OBJECTIVES), base=mod.BASE,
                 trials=int(getattr(mod, "TRIALS", len(configs) if configs else 10)),
                 epochs=int(getattr(mod, "EPOCHS", mod.BASE.epochs)), search_space=getattr(mod, "search_space", None),
                 configs=configs, doc=(mod.__doc__ or "").strip(), sampler=sampler, pretrain=pretrain,
                 early_stop=early_stop, single_task=bool(getattr(mod, "SINGLE_TASK_BASELINES", False)),
                 enqueue=tuple(enqueue), compare_with=compare_with, tuned_fixed=tuned_fixed, serve_max_trials=serve)


def trial_config(study: Study, trial, epochs: int) -> TrainConfig:
    """The trial's TrainConfig: a fixed round (CONFIGS) or the study's search space."""
    base = study.base.replace(epochs=epochs)
    if study.configs:
        name = trial.suggest_categorical("round", list(study.configs))
        cfg = study.configs[name].replace(epochs=epochs)
    else:
        cfg = study.search_space(trial, base)
    if not isinstance(cfg, TrainConfig):
        raise UserError(f"{study.path}: search_space must return a TrainConfig, got {type(cfg).__name__}")
    return cfg


def check_search_space(study: Study, tasks, draws: int = 16) -> None:
    """Sample on a throwaway in-memory study — every ENQUEUE entry and `draws` random draws — and check each
    config's method settings; build the first config's model (backbone, weights, init, freeze) and the
    PRETRAIN stage's, so a broken study fails in one line before any training."""
    probe = optuna.create_study(directions=["maximize"] * len(study.objectives),
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for params in study.enqueue:
        probe.enqueue_trial(params)
    cfgs, n_q = [], len(study.enqueue)
    for i in range(n_q + 1 + (draws if not study.configs else len(study.configs))):
        queued = study.enqueue[i] if i < n_q else None
        trial = probe.ask()
        try:
            cfgs.append(trial_config(study, trial, study.epochs))
        except UserError as e:  # a setting mtl rejects (an unknown method, say): never right in any trial
            raise e if str(study.path) in str(e) else UserError(f"{study.path}: search space: {e}") from None
        except Exception as e:  # every queued draw and the first sampled one must work; later ones may fail alone
            if i <= n_q:
                what = f"ENQUEUE entry {queued}" if queued is not None else "search space"
                raise UserError(f"{study.path}: {what} fails ({type(e).__name__}: {e})") from None
        if queued is not None and set(queued) - set(trial.params):
            raise UserError(f"{study.path}: ENQUEUE entry {queued}: the search space has no parameter(s) "
                            f"{', '.join(sorted(set(queued) - set(trial.params)))}")
        probe.tell(trial, [0.0] * len(study.objectives))
    for cfg in cfgs:
        try:
            methods.make_criterion(cfg, tasks)
        except UserError as e:
            raise UserError(f"{study.path}: search space: {e}") from None
    for what, c in (("search space", cfgs[0]), ("PRETRAIN", study.pretrain)):
        if c is not None:
            try:
                check_config(c, tasks)
            except UserError as e:
                raise UserError(f"{study.path}: {what}: {e}") from None
