"""Served models: inference, MLflow pyfunc models, the registry."""
