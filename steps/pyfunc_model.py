"""MLflow models-from-code definition of the ``model`` logged by train_best.

MLflow executes this file when the model loads (nothing is unpickled); the ``Predictor`` it
builds reads the model's artifacts: ``featurizer`` (JSON), ``meta`` (JSON) and ``payload``
(XGBoost UBJ or skops). Input: a DataFrame of raw trips; output: minutes. A record that breaks
``steps.contract`` refuses the whole request with ``INVALID_PARAMETER_VALUE``, which MLflow's
scoring server answers with HTTP 400 and the message (column, row).
"""

import mlflow
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel

from steps.contract import ContractError
from steps.predictor import Predictor


class TripDurationModel(PythonModel):
    def load_context(self, context):
        artifacts = context.artifacts
        self.predictor = Predictor.load(
            artifacts["featurizer"], artifacts["meta"], artifacts["payload"]
        )

    def predict(self, context, model_input: pd.DataFrame, params=None):
        try:
            return self.predictor.predict(model_input)
        except ContractError as exc:
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None


mlflow.models.set_model(TripDurationModel())
