"""MLflow models-from-code definition of the ``model`` logged by train_best.

MLflow executes this file when the model loads (nothing is unpickled). It imports no project
code itself: the model's ``code_package`` (in its model config, see steps/packaging.py) names
the package shipped inside the model, ``nyc_taxi_duration_model_<sha256 of its sources>``,
whose ``Predictor`` reads the model's artifacts: ``featurizer`` (JSON), ``meta`` (JSON) and
``payload`` (XGBoost UBJ or skops). So a model always runs the code it was logged with, even
in a process that has imported ``steps`` or loaded another version of the model.

Input: a DataFrame of raw trips; output: minutes. A record that breaks the input contract
refuses the whole request with ``INVALID_PARAMETER_VALUE``, which MLflow's scoring server
answers with HTTP 400 and the message (column, row).
"""

import importlib

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

CODE_PACKAGE_KEY = "code_package"


class TripDurationModel(PythonModel):
    def load_context(self, context):
        config = context.model_config or {}
        if CODE_PACKAGE_KEY not in config:
            raise MlflowException(f"model config has no {CODE_PACKAGE_KEY!r}: cannot find its code")
        predictor = importlib.import_module(f"{config[CODE_PACKAGE_KEY]}.predictor")
        artifacts = context.artifacts
        self.predictor = predictor.Predictor.load(
            artifacts["featurizer"], artifacts["meta"], artifacts["payload"]
        )

    def predict(self, context, model_input: pd.DataFrame, params=None):
        try:
            return self.predictor.predict(model_input)
        except self.predictor.ContractError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


mlflow.models.set_model(TripDurationModel())
