"""MLflow models-from-code definition of the ``model`` logged by train_best.

MLflow executes this file when the model loads (nothing is unpickled); the ``Predictor`` it
builds reads the model's artifacts: ``featurizer`` (JSON), ``meta`` (JSON) and ``payload``
(XGBoost UBJ or skops). Input: a DataFrame of raw trips; output: minutes.
"""

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

from steps.predictor import Predictor


class TripDurationModel(PythonModel):
    def load_context(self, context):
        artifacts = context.artifacts
        self.predictor = Predictor.load(
            artifacts["featurizer"], artifacts["meta"], artifacts["payload"]
        )

    def predict(self, context, model_input: pd.DataFrame, params=None):
        return self.predictor.predict(model_input)


mlflow.models.set_model(TripDurationModel())
