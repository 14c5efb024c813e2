"""`make ui` prints the link to the project's experiment in the model-training view."""

from __future__ import annotations

import importlib.util

from mlflow.tracking import MlflowClient

from tests.conftest import REPO


def load_ui_script():
    spec = importlib.util.spec_from_file_location("ui_script", REPO / "scripts" / "ui.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_experiment_id_is_read_from_the_sqlite_store(tmp_path):
    ui = load_ui_script()
    store = tmp_path / "mlflow.db"
    assert ui.experiment_id(store, "nyc-taxi-duration") is None  # no store yet
    client = MlflowClient(f"sqlite:///{store}")
    created = client.create_experiment("nyc-taxi-duration")
    client.create_experiment("other")
    assert ui.experiment_id(store, "nyc-taxi-duration") == created
    client.delete_experiment(created)
    assert ui.experiment_id(store, "nyc-taxi-duration") is None  # deleted is not offered
