"""What MLflow runs to load an mtl model ("models from code": the model is this file plus its artifacts,
nothing pickled). The class lives in mtl/serve/pyfunc.py."""

import mlflow

from mtl.serve.pyfunc import HydraNetModel

mlflow.models.set_model(HydraNetModel())
