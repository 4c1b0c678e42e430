"""Manifests, datasets, demo-set rendering and real-data importers."""
