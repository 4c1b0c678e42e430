"""The MLflow internals mtl needs, in one place: an MLflow upgrade that moves them breaks here, and
tests/test_adapters.py pins what each does. Everything else uses MLflow's public client API."""

from __future__ import annotations

from mlflow.entities import DatasetInput, InputTag
from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository


def delete_artifacts(artifact_uri: str, path: str | None = None) -> None:
    """Delete `path` under an artifact location (a run's or a logged model's; None: all of it). The client
    has no public call for it; a store that cannot delete raises."""
    get_artifact_repository(artifact_uri).delete_artifacts(path)


def dataset_input(dataset, context: str) -> DatasetInput:
    """An `mlflow.data` dataset as the input entity `MlflowClient.log_inputs` takes."""
    return DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag("mlflow.data.context", context)])


def stop_system_metrics(monitor, timeout: float = 10.0) -> None:
    """Stop a `SystemMetricsMonitor` without waiting for its next sampling tick, then publish what it has
    sampled (MLflow drops the samples of a run shorter than one interval; `finish()` blocks up to one)."""
    if monitor is None or monitor._process is None:
        return
    monitor._shutdown_event.set()
    monitor._process.join(timeout=timeout)  # a tracking server that went away must not hold the run's end
    monitor._process = None
    if any(getattr(m, "_metrics", None) for m in monitor.monitors):
        monitor.publish_metrics(monitor.aggregate_metrics())
    monitor.mlflow_logger.flush()
