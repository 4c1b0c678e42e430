"""MLflow tracking: store location, experiments, runs, flattened params, per-epoch metrics, artifacts.

Default stores live in the working directory: `sqlite:///mlflow.db` and `mlartifacts/` beside it.
`MLFLOW_TRACKING_URI` overrides (an `http://` server, another SQLite file, PostgreSQL ...).
Everything goes through `MlflowClient` with explicit run ids: no global active run, so a worker
process or a failing trial can never leave the wrong run open.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time
import urllib.parse
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import (
    MLFLOW_GIT_COMMIT,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_RUN_NAME,
    MLFLOW_SOURCE_NAME,
)

from mtl import kinds, methods
from mtl.errors import UserError
from mtl.track import mlflow_adapter

# the UI opens an experiment of this kind on its runs ("Model training"), not on the GenAI views
EXPERIMENT_KIND, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
FLUSH_SECONDS = 2.0  # per-epoch metrics reach the store at least this often (and at the end of the run)
SYSTEM_METRICS_SECONDS = 10.0  # system/* (CPU, memory, GPU) sampling interval of trial runs (MLflow's default):
# each tick also reads the run back from the store, so 2 s cost a trial about 0.5 % (`make bench`)
RENAMES = {"trunk_dims": "trunk.dims", "head_dims": "head.dims", "bn_momentum": "bn.momentum",
           "bn_eps": "bn.eps", "lr_backbone": "lr.backbone", "lr_heads": "lr.heads"}


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('mlflow.db').resolve()}"


def redact(uri: str) -> str:
    """A URI with any password replaced: `postgresql://u:***@host/db`. Never log a raw storage URL."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", str(uri))


def artifact_root(uri: str) -> str | None:
    """For a SQLite store, artifacts go to `mlartifacts/` beside the DB file; servers choose their own."""
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):])
        return (db.parent.resolve() / "mlartifacts").as_uri()
    return None


def get_client() -> MlflowClient:
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """Experiment id by name, created once; tolerant of another process creating it first."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        if exp.tags.get(EXPERIMENT_KIND) != MODEL_TRAINING:
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND, MODEL_TRAINING)
        return exp.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_root(tracking_uri()),
                                        tags={EXPERIMENT_KIND: MODEL_TRAINING})
    except MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten_config(cfg) -> dict[str, str]:
    """TrainConfig -> MLflow params: `head.dims`, `bn.momentum`, `loss_weight.<task>`, `dwa.temperature`,
    `regression.loss`, ...: every method parameter and kind option it ran with, defaults included."""
    out = {}
    for k, v in cfg.to_dict().items():
        if k == "loss_weights":
            for task, w in sorted(v.items()):
                out[f"loss_weight.{task}"] = f"{w:.6g}"
            continue
        if k == "method_args":  # `<method>.<name>`; a per-task parameter `<method>.<name>.<task>`
            try:
                v = methods.get(cfg.method).coerce_args(v)
            except UserError:  # an unknown method fails where the criterion is built, with its own line
                pass
            for name, a in sorted(v.items()):
                for suffix, value in (sorted(a.items()) if isinstance(a, dict) else [("", a)]):
                    out[f"{cfg.method}.{name}" + (f".{suffix}" if suffix else "")] = str(value)
            continue
        if k == "kind_options":  # `<kind>.<option>` for the kinds that declare options
            for kind, spec in sorted(kinds.registry().items()):
                for name, value in sorted(spec.resolve_options(v.get(kind)).items()):
                    out[f"{kind}.{name}"] = str(value)
            continue
        if isinstance(v, list):
            v = ",".join(str(x) for x in v) or "none"
        out[RENAMES.get(k, k)] = str(v)
    return out


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


class RunLogger:
    """One MLflow run, written through the client. Use as a context manager: an exception ends the
    run FAILED (KILLED on Ctrl-C), a normal exit FINISHED, so no run is ever left RUNNING."""

    def __init__(self, client: MlflowClient, experiment_id: str, name: str, parent_id: str | None = None,
                 tags: dict | None = None, run_id: str | None = None, system_metrics: bool = False):
        self.client = client
        if run_id is None:
            all_tags = {MLFLOW_RUN_NAME: name, MLFLOW_SOURCE_NAME: "mtl", **(tags or {})}
            commit = git_commit()
            if commit:
                all_tags[MLFLOW_GIT_COMMIT] = commit
            if parent_id:
                all_tags[MLFLOW_PARENT_RUN_ID] = parent_id
            # the REST store (mlflow server) takes only strings; SQLite would coerce silently
            run = client.create_run(experiment_id, run_name=name, tags={k: str(v) for k, v in all_tags.items()})
            run_id = run.info.run_id
        self.run_id = run_id
        self.status = None
        self._pending: list[Metric] = []  # per-epoch metrics not yet written (see log_epoch)
        self._flushed = time.monotonic()
        self._monitor = SystemMetrics(run_id, client.tracking_uri) if system_metrics else None
        if self._monitor:
            self._monitor.start()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.end("FINISHED")
        else:
            self.end("KILLED" if issubclass(exc_type, KeyboardInterrupt) else "FAILED",
                     reason=f"{exc_type.__name__}: {exc}")
        return False

    def log_params(self, params: dict) -> None:
        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def set_tags(self, tags: dict) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_metrics(self, metrics: dict, step: int = 0) -> None:
        ts = int(time.time() * 1000)
        self._write([Metric(k, float(v), ts, step) for k, v in metrics.items() if v is not None])

    def _write(self, items: list) -> None:
        items, self._pending = self._pending + items, []
        self._flushed = time.monotonic()
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def log_epoch(self, epoch: int, row: dict) -> None:
        """Per-epoch metrics (step = epoch), written at most every FLUSH_SECONDS and when the run ends: a
        2-second trial of 15 epochs makes one database commit instead of 15 (each is ~10 ms on SQLite)."""
        ts = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), ts, epoch) for k, v in row.items() if k != "epoch" and v is not None]
        if time.monotonic() - self._flushed >= FLUSH_SECONDS:
            self._write([])

    def log_dataset(self, manifest, context: str = "training") -> None:
        """The manifest as an MLflow dataset input (name, source path and content digest); built once per
        loaded manifest and context (its schema and profile take ~16 ms, a tenth of a trial's logging)."""
        built = vars(manifest).setdefault("_mlflow_inputs", {})  # on the loaded manifest: it dies with it
        key = (context, id(manifest.table), len(manifest.table), str(manifest.path))  # a replaced table: rebuilt
        if key not in built:
            ds = mlflow.data.from_pandas(manifest.table, source=str(manifest.path), name=manifest.name)
            built[key] = mlflow_adapter.dataset_input(ds, context)
        inputs = [built[key]]
        try:
            self.client.log_inputs(self.run_id, inputs)
        except MlflowException:
            # another worker inserted the same dataset row first (unique per experiment): link to it
            time.sleep(0.2)
            self.client.log_inputs(self.run_id, inputs)

    @contextlib.contextmanager
    def artifact_dir(self, artifact_path: str):
        """A directory whose files end up under the run's `artifact_path`. With a local artifact store
        (the default `mlartifacts/`) it is that directory itself, so checkpoints are written once instead
        of written and then copied; with a remote store, a temporary directory uploaded at the end."""
        uri = self.client.get_run(self.run_id).info.artifact_uri
        if uri.startswith("file://"):
            path = Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path)) / artifact_path
            path.mkdir(parents=True, exist_ok=True)
            yield path
            return
        with tempfile.TemporaryDirectory(prefix="mtl-artifacts-") as tmp:
            yield Path(tmp)
            self.log_artifacts(Path(tmp), artifact_path)

    def log_artifacts(self, local_dir: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_artifact(self, local_path: Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(local_path), artifact_path)

    def end(self, status: str = "FINISHED", reason: str | None = None) -> None:
        if self.status is not None:
            return
        if self._pending:
            try:
                self._write([])
            except MlflowException:
                pass  # a store that went away must not hide why the run ended
        if reason:
            try:
                self.set_tags({"mtl.failure": reason[:5000]})
            except MlflowException:
                pass
        if self._monitor:
            self._monitor.finish()
        self.client.set_terminated(self.run_id, status=status)
        self.status = status


class SystemMetrics:
    """MLflow's system metrics (`system/cpu_utilization_percentage`, `system/system_memory_usage_megabytes`,
    GPU utilisation and memory where there is one) for one run, sampled every SYSTEM_METRICS_SECONDS.
    MLflow's monitor drops the samples of a run shorter than one interval; here they are logged at the end."""

    def __init__(self, run_id: str, tracking_uri: str):
        self.monitor = None
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
            self.monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_SECONDS,
                                                tracking_uri=tracking_uri)
        except Exception:  # psutil missing or a platform it cannot read: the run goes on without them
            self.monitor = None

    def start(self) -> None:
        if self.monitor:
            try:
                self.monitor.collect_metrics()  # one sample at once: even a 1-second trial gets its row
                self.monitor.start()
            except Exception:  # never keep a run from starting
                self.monitor = None

    def finish(self) -> None:
        try:
            mlflow_adapter.stop_system_metrics(self.monitor)
        except Exception:
            pass  # system metrics never fail a run


def replace_table(client: MlflowClient, run_id: str, df, artifact_file: str) -> None:
    """`log_table` appends to an existing table; a re-run replaces it instead."""
    if any(a.path == artifact_file for a in client.list_artifacts(run_id, str(Path(artifact_file).parent))):
        try:
            mlflow_adapter.delete_artifacts(client.get_run(run_id).info.artifact_uri, artifact_file)
        except Exception:
            pass  # a store that cannot delete: the table grows, as log_table makes it
    client.log_table(run_id, df, artifact_file)


__all__ = ["RunLogger", "RunStatus", "ensure_experiment", "flatten_config", "get_client", "redact",
           "tracking_uri"]
