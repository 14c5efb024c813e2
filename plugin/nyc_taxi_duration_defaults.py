"""MLflow default-experiment provider: runs with no experiment chosen go to ``nyc-taxi-duration``.

MLflow asks its registered default-experiment providers only when neither the caller nor the
environment names an experiment (``--experiment-name``/``--experiment-id``,
``MLFLOW_EXPERIMENT_NAME``/``MLFLOW_EXPERIMENT_ID``, ``mlflow.set_experiment``). This one gets
or creates the experiment ``nyc-taxi-duration`` in the current tracking store, tagged as a
model-training experiment so that MLflow's UI opens it on its runs, not on the GenAI traces view.
"""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider

EXPERIMENT_NAME = "nyc-taxi-duration"
# The same tag steps/tracking.py sets on whatever experiment a step runs in.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


class ProjectExperimentProvider(DefaultExperimentProvider):
    def in_context(self) -> bool:
        return True

    def get_experiment_id(self) -> str:
        client = MlflowClient()
        experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return client.create_experiment(
                EXPERIMENT_NAME, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        except MlflowException:  # created meanwhile by another process
            experiment = client.get_experiment_by_name(EXPERIMENT_NAME)
            if experiment is None:
                raise
            return experiment.experiment_id
