"""MLflow models-from-code definition of the ``model`` logged by train_best.

MLflow executes this file when the model loads (nothing is unpickled). It imports no project
code itself: the model's artifact ``code_package`` (JSON, written by steps/packaging.py) names
the package shipped inside the model, ``nyc_taxi_duration_model_<sha256 of its files>``, whose
``Predictor`` reads the other artifacts: ``featurizer`` (JSON), ``meta`` (JSON) and ``payload``
(XGBoost UBJ or skops). So a model runs the code it was logged with, even in a process that
has imported ``steps`` or loaded another version. (The name is an artifact, not the model
config, because MLflow logs a model config as params of the run.)

Input: a DataFrame of raw trips; output: minutes. A record that breaks the input contract
refuses the whole request with ``INVALID_PARAMETER_VALUE``, which MLflow's scoring server
answers with HTTP 400 and the message (column, row).
"""

import importlib
import json
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

CODE_PACKAGE_ARTIFACT = "code_package"  # a JSON file: {"package": "<name>"}


class TripDurationModel(PythonModel):
    def load_context(self, context):
        artifacts = context.artifacts
        code = json.loads(Path(artifacts[CODE_PACKAGE_ARTIFACT]).read_text())
        self.code_package = code["package"]
        predictor = importlib.import_module(f"{self.code_package}.predictor")
        self.predictor = predictor.Predictor.load(
            artifacts["featurizer"], artifacts["meta"], artifacts["payload"]
        )

    def predict(self, context, model_input: pd.DataFrame, params=None):
        try:
            return self.predictor.predict(model_input)
        except self.predictor.ContractError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


mlflow.models.set_model(TripDurationModel())
