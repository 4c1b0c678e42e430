"""The Optuna internals mtl needs, in one place: an Optuna upgrade that moves them breaks here, and
tests/test_adapters.py pins what each returns. Everything else uses Optuna's public API."""

from __future__ import annotations

import numpy as np
import optuna
from optuna._hypervolume import compute_hypervolume


def hypervolume(loss: np.ndarray, reference: np.ndarray) -> float:
    """Exact hypervolume (WFG) of points to be minimised, below `reference`; Optuna has no public alias."""
    return float(compute_hypervolume(loss, reference))


def trial_id(trial) -> int:
    """The storage's id of a trial (a live `Trial` or a `FrozenTrial`): what the storage API takes."""
    return trial._trial_id


def set_user_attr(study: optuna.Study, trial, key: str, value) -> None:
    """A user attribute on any trial of the study, running or finished (public API: only on a live trial)."""
    study._storage.set_trial_user_attr(trial_id(trial), key, value)
