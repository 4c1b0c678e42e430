"""MLflow: runs, params, metrics, artifacts, and the adapter for its private calls."""
