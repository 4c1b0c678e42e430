"""Study specs, their storage and their tags: what the runner (mtl/tune.py), pareto, ensemble, confirm
and predict share. A study is one file `experiments/<name>.py` (see the README's "writing a study")."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import optuna

from mtl import tracking
from mtl.errors import UserError
from mtl.pruning import EarlyStop
from mtl.train import TrainConfig

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


SAMPLERS = ("tpe", "gp", "nsga2", "random")


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
        raise UserError(f"{path}: EARLY_STOP must be an mtl.pruning.EarlyStop")
    enqueue = getattr(mod, "ENQUEUE", ())
    if not isinstance(enqueue, (list, tuple)) or not all(isinstance(e, dict) for e in enqueue):
        raise UserError(f"{path}: ENQUEUE must be a list of parameter dicts")
    return Study(name, path, str(mod.MANIFEST), list(mod.OBJECTIVES), mod.BASE,
                 int(getattr(mod, "TRIALS", len(configs) if configs else 10)), int(getattr(mod, "EPOCHS", mod.BASE.epochs)),
                 getattr(mod, "search_space", None), configs, (mod.__doc__ or "").strip(), sampler, pretrain,
                 early_stop, bool(getattr(mod, "SINGLE_TASK_BASELINES", False)), tuple(enqueue))


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


# ------------------------------------------------------------------------------------------------
# storage
# ------------------------------------------------------------------------------------------------
def default_storage(name: str) -> str:
    return str(Path("optuna") / f"{name}.log")


def make_storage(url: str):
    """A journal file (the default: a local path, safe for several processes) or any RDB URL."""
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend, JournalStorage
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url))
    if url.split("://")[0].split("+")[0] not in ("sqlite", "postgresql", "mysql"):
        raise UserError(f"STORAGE {tracking.redact(url)}: expected a file path, sqlite://, postgresql:// or mysql:// URL")
    try:
        # heartbeats let a resumed study fail the trials of a worker that was killed (kill -9)
        return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=90,
                                          heartbeat_stale_trial_callback=close_stale_run,
                                          engine_kwargs={"pool_pre_ping": True} if not url.startswith("sqlite") else None)
    except Exception as e:
        raise UserError(f"STORAGE {tracking.redact(url)}: cannot open ({type(e).__name__})") from None


def close_stale_run(study, trial) -> None:
    """Optuna's heartbeat failed a trial whose worker died: end its MLflow run FAILED too."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        tracking.RunLogger(tracking.get_client(), "", "", run_id=run_id).end("FAILED", "worker died (stale trial)")
