"""What MLflow runs to load an mtl model ("models from code": the model is this file plus its artifacts,
nothing pickled). The class lives in mtl/serving.py."""

import mlflow

from mtl.serving import HydraNetModel

mlflow.models.set_model(HydraNetModel())
