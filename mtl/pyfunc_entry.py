"""What MLflow runs to load an mtl model ("models from code": the model is this file plus its artifacts,
nothing pickled). The class lives in mtl/mlmodel.py."""

import mlflow

from mtl.mlmodel import HydraNetModel

mlflow.models.set_model(HydraNetModel())
