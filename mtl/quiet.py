"""Lower library chatter (experimental-API warnings, Optuna's per-trial INFO lines) that hides the lines that matter."""

from __future__ import annotations

import logging
import os
import warnings


def quiet() -> None:
    """Called by the CLI and by spawned study workers before they use Optuna or MLflow."""
    # library-internal warnings (any category) are hidden; one attributed to our own code is not: a
    # deprecated call we make must show (and fails the tests, see pyproject's filterwarnings)
    warnings.filterwarnings("ignore", module=r"(?!mtl\b)")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::UserWarning")  # inherited by spawned workers
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow configures its loggers
    import optuna  # configures its own root logger on import; lower it afterwards

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # heartbeats (kill -9 recovery on RDB storages) are an experimental Optuna argument we choose to use
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    logging.getLogger("alembic").setLevel(logging.WARNING)
