"""Real servers for slow tests: PostgreSQL on loopback and `mlflow server`, each on a free port."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name) or sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found if isinstance(found, str) else (found[-1] if found else None)


def _apt_install(package: str, timeout: int) -> None:
    """`apt-get install` as root; on a fresh machine whose package lists are empty, `apt-get update` first."""
    if not (shutil.which("apt-get") and os.geteuid() == 0):
        return
    cmd = ["apt-get", "install", "-y", "-q", package]
    if subprocess.run(cmd, capture_output=True, timeout=timeout).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=timeout)
        subprocess.run(cmd, capture_output=True, timeout=timeout)


def ensure_postgres() -> str:
    """Path of initdb, installing Debian's postgresql package if missing; skip with the reason otherwise."""
    if _pg_bin("initdb") is None:
        _apt_install("postgresql", 600)
    initdb = _pg_bin("initdb")
    if initdb is None:
        pytest.skip("PostgreSQL is not installed and `apt-get install postgresql` did not provide it")
    return initdb


@contextlib.contextmanager
def postgres(tmp: Path, user: str = "mtl"):
    """A throwaway PostgreSQL cluster on 127.0.0.1:<free port>; yields (host:port, run_sql)."""
    initdb = ensure_postgres()
    import tempfile
    bindir = Path(initdb).parent
    own = Path(tempfile.mkdtemp(prefix="mtl-pg-"))  # pytest's tmp dirs are 0700 root: postgres can't enter
    data = own / "pgdata"
    data.mkdir()
    as_pg: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(own, "postgres")
        shutil.chown(data, "postgres")
        as_pg = ["runuser", "-u", "postgres", "--"]
    r = subprocess.run(as_pg + [initdb, "-D", str(data), "-U", user, "--auth=trust"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"PostgreSQL cannot start here (initdb: {r.stderr.strip().splitlines()[-1:]})")
    port = free_port()
    pg_ctl = str(bindir / "pg_ctl") if (bindir / "pg_ctl").exists() else _pg_bin("pg_ctl")
    r = subprocess.run(as_pg + [pg_ctl, "-D", str(data), "-l", str(data / "log"), "-w", "-o",
                                f"-p {port} -h 127.0.0.1 -k {data}", "start"], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"PostgreSQL cannot start here: {r.stderr.strip()[-200:]}")
    hostport = f"127.0.0.1:{port}"

    def sql(cmd: str, db: str = "postgres"):
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(port), "-U", user, "-d", db, "-c", cmd],
                       check=True, capture_output=True)
    try:
        yield hostport, sql
    finally:
        subprocess.run(as_pg + [pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(own, ignore_errors=True)


@contextlib.contextmanager
def _serve(args: list[str], probe: str, log_path: Path, what: str, env: dict | None = None, cwd: Path | None = None,
           timeout: float = 180, exe: str = "mlflow"):
    """Run `<exe> <args>` (a console script of this venv: mlflow by default) until `probe` (a URL) answers
    200; yield, then stop it."""
    mlflow_bin = str(Path(sys.executable).parent / exe)
    log = open(log_path, "w")
    p = subprocess.Popen([mlflow_bin, *args], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd)
    try:
        deadline = time.time() + timeout
        while True:
            try:
                with urllib.request.urlopen(probe, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if p.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"{what} did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.5)
        yield
    finally:
        p.terminate()
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()
        log.close()


@contextlib.contextmanager
def optuna_dashboard(storage: str, workdir: Path):
    """optuna-dashboard (as `make dashboard` starts it) over `storage` on 127.0.0.1:<free port>; yields its URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _serve([storage, "--host", "127.0.0.1", "--port", str(port), "--server", "wsgiref", "--quiet"],
                f"{url}/api/studies", workdir / f"optuna-dashboard-{port}.log", "optuna-dashboard", cwd=workdir,
                exe="optuna-dashboard"):
        yield url


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path):
    """`mlflow server` on 127.0.0.1:<free port>; yields its http URL once /health answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _serve(["server", "--backend-store-uri", backend_uri, "--artifacts-destination", str(artifacts),
                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], f"{url}/health",
                artifacts.parent / f"mlflow-server-{port}.log", "mlflow server"):
        yield url


@contextlib.contextmanager
def model_server(model_uri: str, tracking_uri: str, workdir: Path):
    """`mlflow models serve -m <uri> --env-manager local` on 127.0.0.1:<free port>; yields its URL once
    /ping answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri,  # the scoring server execs uvicorn from this venv
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    with _serve(["models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port),
                 "-w", "1"], f"{url}/ping", workdir / f"model-server-{port}.log", "mlflow models serve", env, workdir):
        yield url


def ensure_chromium() -> str:
    """Path of Debian's chromium, installed with apt-get if missing (as PostgreSQL is); skip otherwise."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        _apt_install("chromium", 900)
        found = shutil.which("chromium")
    if found is None:
        why = "chromium is not installed and `apt-get install chromium` did not provide it"
        if os.environ.get("MTL_UI_CHECK"):  # `make ui-check` asked for the browser: no browser is a failure
            pytest.fail(why)
        pytest.skip(why)
    return found


@contextlib.contextmanager
def mlflow_ui(backend_uri: str, artifacts: Path, workdir: Path):
    """`mlflow ui` (as `make ui` starts it) on 127.0.0.1:<free port>; yields its URL once /health answers."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with _serve(["ui", "--backend-store-uri", backend_uri, "--default-artifact-root", str(artifacts), "--host",
                 "127.0.0.1", "--port", str(port), "--workers", "1"], f"{url}/health",
                workdir / f"mlflow-ui-{port}.log", "mlflow ui", cwd=workdir):
        yield url
