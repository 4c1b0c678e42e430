"""Shared fixtures: small real manifests rendered with pillow into tmp dirs, isolated MLflow/Optuna stores."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from mtl.data.manifest import load_manifest
from mtl.data.render import make_fgo_manifest, make_utk_manifest, render_manifest, write_manifest

pytest_plugins = ("pytester",)


def pytest_configure(config):
    """The session's temp directory is a private one (TMPDIR, inherited by the servers tests start), so what a
    command or a test leaves behind is seen, and other processes' files are not."""
    config._mtl_tmp = Path(tempfile.mkdtemp(prefix="mtl-tests-"))
    os.environ["TMPDIR"] = str(config._mtl_tmp)
    tempfile.tempdir = None  # recomputed from TMPDIR on next use


def _torch_import_dir(path: Path) -> bool:
    """`import torchvision` makes torch create an empty `torchinductor_<user>` cache directory; nothing here
    compiles, so it stays empty. One with anything in it is reported like any other leftover."""
    return path.name.startswith("torchinductor_") and path.is_dir() and not any(path.iterdir())


def pytest_sessionfinish(session, exitstatus):
    """Tests leave the temp directory as they found it: anything left there besides pytest's own `pytest-of-*`
    (and torch's empty import-time directory) fails the run; the private directory is removed either way."""
    tmp = getattr(session.config, "_mtl_tmp", None)
    if tmp is None or not tmp.exists():
        return
    left = sorted(e for e in os.listdir(tmp) if not e.startswith("pytest-of-") and not _torch_import_dir(tmp / e))
    if left:
        print(f"\ntests left {len(left)} entries in the temp directory: {', '.join(left[:10])}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    shutil.rmtree(tmp, ignore_errors=True)


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
