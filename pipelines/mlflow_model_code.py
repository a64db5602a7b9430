"""MLflow "models from code" entry point: MLflow runs this file to build the pyfunc, so the
logged model holds no pickled Python object (only this code and the weights artifact)."""

import mlflow

from pipelines.mlflow_model import GeneratorModel

mlflow.models.set_model(GeneratorModel())
