"""Optuna studies: study files, storage, the trial objective, early stopping, audits."""
