"""Shared fixtures: small real manifests rendered with pillow into tmp dirs, isolated MLflow/Optuna stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mtl.data.manifest import load_manifest
from mtl.data.render import make_fgo_manifest, make_utk_manifest, render_manifest, write_manifest


def make_set(root: Path, kind: str = "fgo", size: int = 32, **kw) -> Path:
    """Write a small demo manifest under root/ and render its images; returns the CSV path."""
    table, spec = (make_fgo_manifest if kind == "fgo" else make_utk_manifest)(**kw)
    spec["root"] = "images"
    csv = root / f"{kind}.csv"
    write_manifest(table, spec, csv)
    render_manifest(load_manifest(csv), kind, size)
    return csv


@pytest.fixture(scope="session")
def fgo_small(tmp_path_factory) -> Path:
    return make_set(tmp_path_factory.mktemp("fgo"), "fgo", n_chars=24, per_char=3)


@pytest.fixture(scope="session")
def utk_small(tmp_path_factory) -> Path:
    return make_set(tmp_path_factory.mktemp("utk"), "utk", n_ids=20, per_id=3)


@pytest.fixture
def isolated_stores(tmp_path, monkeypatch):
    """Fresh MLflow SQLite store + Optuna dir in tmp; the cwd is tmp so nothing touches the repo."""
    import mlflow
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)  # a process-wide setting: a previous test's store must not leak in
    monkeypatch.chdir(tmp_path)
    return tmp_path


def read_spec(csv: Path) -> dict:
    return json.loads(csv.with_name(csv.stem + ".tasks.json").read_text())
