"""The logged model runs the code it shipped with, and loads without unpickling anything.

Tiny models trained in process on a slice of a real TLC month, logged with the project's own
``log_predictor`` into a real SQLite store: two versions whose shipped code differs predict
each with its own code in one process (which has imported ``steps`` from the working tree);
train_best's load-back runs the shipped package; a model loads where ``steps`` is absent; every
model kind loads and predicts with ``pickle``/``cloudpickle`` made to fail.
"""

from __future__ import annotations

import ast
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import cloudpickle
import mlflow
import numpy as np
import pandas as pd
import pytest

import steps.predictor
from steps import contract, packaging, tlc
from steps.features import Featurizer
from steps.models import MODEL_KINDS, Split, XGBoostSettings, rmse, train_and_evaluate
from steps.predictor import Predictor
from tests.conftest import ambient, make_tracking, tlc_file

TRAIN_ROWS, PREDICT_ROWS = 3000, 500
TINY_PARAMS = {
    "xgboost": {"max_depth": 3, "learning_rate": 0.3, "seed": 1},
    "random_forest": {"max_depth": 4, "n_estimators": 3, "random_state": 1},
    "lasso": {"alpha": 0.1},
    "linear": {},
}
TINY_XGBOOST = XGBoostSettings(num_boost_round=5, early_stopping_rounds=0)
SHIFT_MINUTES = 100.0  # what the modified copy of the code adds to every prediction


@pytest.fixture(scope="module")
def frames(tlc_dir) -> dict[str, pd.DataFrame]:
    """Cleaned trips: the first rows of 2023-01 to train on, of 2023-02 to predict."""
    train = tlc.clean(tlc.read_month(tlc_file("2023-01"), "green").frame, "green")
    val = tlc.clean(tlc.read_month(tlc_file("2023-02"), "green").frame, "green")
    return {"train": train.head(TRAIN_ROWS), "val": val.head(PREDICT_ROWS)}


def trained(kind: str, frames) -> Predictor:
    featurizer = Featurizer.fit(frames["train"])
    train, val = (
        Split(featurizer.transform(frames[s]), frames[s]["duration"].to_numpy())
        for s in ("train", "val")
    )
    result = train_and_evaluate(kind, TINY_PARAMS[kind], train, val, TINY_XGBOOST)
    return Predictor(kind, featurizer, result.model)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (a fresh one costs seconds), made the ambient one."""
    t = make_tracking(tmp_path_factory.mktemp("model-code"))
    with pytest.MonkeyPatch.context() as mp:
        yield from ambient(t, mp)


def log(predictor: Predictor, frames, code_source: Path = packaging.STEPS_DIR) -> str:
    with mlflow.start_run():
        info, _ = packaging.log_predictor(
            predictor, packaging.input_example(frames["val"]), code_source
        )
    return info.model_uri


def code_package_of(model) -> str:
    return model.unwrap_python_model().code_package


def predictor_module_of(model) -> str:
    return type(model.unwrap_python_model().predictor).__module__


def inputs(frames) -> pd.DataFrame:
    return frames["val"][list(contract.INPUT_COLUMNS)]


# --- fast: what the package is made of ---------------------------------------------------


def test_shipped_modules_import_nothing_of_the_project_but_each_other():
    shipped = {Path(name).stem for name in packaging.CODE_PACKAGE_MODULES}
    for name in packaging.CODE_PACKAGE_MODULES:
        tree = ast.parse((packaging.STEPS_DIR / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                assert not [a.name for a in node.names if a.name.split(".")[0] == "steps"], name
            elif isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    assert node.module.split(".")[0] != "steps", f"{name}: from {node.module}"
                else:
                    assert node.level == 1, name
                    targets = [node.module] if node.module else [a.name for a in node.names]
                    assert set(targets) <= shipped, f"{name}: from .{node.module} import ..."


def test_contract_spells_the_same_columns_and_floor_as_tlc():
    assert contract.LOCATION_COLUMNS == tlc.LOCATION_COLUMNS
    assert contract.MIN_PREDICTED_MINUTES == tlc.MIN_DURATION_MINUTES


def test_package_name_is_unique_to_the_project_and_to_the_code(tmp_path):
    files = packaging.code_package_files()
    name = packaging.code_package_name(files)
    assert name.startswith("nyc_taxi_duration_model_") and name.isidentifier()
    assert packaging.code_package_name(dict(files)) == name
    changed = files | {"predictor.py": files["predictor.py"] + b"\n"}
    assert packaging.code_package_name(changed) != name
    package = packaging.build_code_package(tmp_path)
    assert package.name == name
    assert sorted(p.name for p in package.iterdir()) == sorted(files)


# --- real MLflow -------------------------------------------------------------------------


def shifted_code(tmp_path: Path) -> Path:
    """A copy of the shipped modules whose predictions are ``SHIFT_MINUTES`` higher."""
    source = tmp_path / "shifted"
    source.mkdir()
    for name in packaging.CODE_PACKAGE_MODULES:
        shutil.copy(packaging.STEPS_DIR / name, source / name)
    predictor = source / "predictor.py"
    text = predictor.read_text()
    shifted = text.replace(
        "return contract.clip_minutes(", f"return {SHIFT_MINUTES} + contract.clip_minutes("
    )
    assert shifted.count(f"{SHIFT_MINUTES} +") == 2  # XGBoost and scikit-learn
    predictor.write_text(shifted)
    return source


def test_two_versions_with_different_code_each_run_their_own_in_one_process(
    store, frames, tmp_path
):
    predictor = trained("linear", frames)
    uri_a = log(predictor, frames)
    uri_b = log(predictor, frames, code_source=shifted_code(tmp_path))
    assert "steps.predictor" in sys.modules  # the working tree's copy is imported here

    a = mlflow.pyfunc.load_model(uri_a)
    b = mlflow.pyfunc.load_model(uri_b)
    expected = predictor.predict(inputs(frames))  # the working tree's code
    np.testing.assert_array_equal(a.predict(inputs(frames)), expected)
    np.testing.assert_array_equal(b.predict(inputs(frames)), expected + SHIFT_MINUTES)
    # loading a again after b changes nothing for either
    np.testing.assert_array_equal(mlflow.pyfunc.load_model(uri_a).predict(inputs(frames)), expected)
    np.testing.assert_array_equal(b.predict(inputs(frames)), expected + SHIFT_MINUTES)
    # each runs the package it shipped, named after its code
    assert code_package_of(a) != code_package_of(b)
    for model in (a, b):
        assert predictor_module_of(model) == f"{code_package_of(model)}.predictor"


def test_train_best_load_back_runs_the_shipped_copy(store, frames, monkeypatch, tmp_path):
    from steps import train_best

    with mlflow.start_run() as trial_run:
        mlflow.set_tags({"trial_id": "7", "trial.params": "{}"})
    trial = mlflow.get_run(trial_run.info.run_id)
    predictor = trained("linear", frames)
    featurizer = predictor.featurizer
    splits = {
        s: Split(featurizer.transform(frames[s]), frames[s]["duration"].to_numpy())
        for s in ("train", "val")
    }
    loaded = []
    real_load_model = mlflow.pyfunc.load_model

    def recording_load_model(*args, **kwargs):
        model = real_load_model(*args, **kwargs)
        loaded.append(model)
        return model

    monkeypatch.setattr(mlflow.pyfunc, "load_model", recording_load_model)
    context = {"data": [], "hpo_run_id": "-", "preprocess_run_id": "-", "git_commit": "-"}
    candidate = train_best.train_candidate(
        1,
        trial,
        "linear",
        XGBoostSettings(),
        featurizer,
        {"val": frames["val"], "test": frames["val"]},
        splits,
        False,
        context,
    )
    monkeypatch.undo()

    assert loaded  # the load-back (and MLflow's own check of the input example)
    model = loaded[-1]
    package = code_package_of(model)
    for each in loaded:
        assert predictor_module_of(each) == f"{package}.predictor"
    assert sys.modules[predictor_module_of(model)] is not steps.predictor
    # what runs under that name is what the model holds: its files hash to the name
    local = Path(mlflow.artifacts.download_artifacts(candidate.model_uri, dst_path=str(tmp_path)))
    assert sorted(p.name for p in (local / "code").iterdir()) == [package]
    shipped = {p.name: p.read_bytes() for p in (local / "code" / package).iterdir()}
    assert packaging.code_package_name(shipped) == package
    assert sorted(shipped) == sorted(["__init__.py", *packaging.CODE_PACKAGE_MODULES])
    # and the metric logged is that of the loaded model's predictions
    pred = model.predict(inputs(frames))
    assert candidate.val_rmse == rmse(frames["val"]["duration"].to_numpy(), pred)
    # logging the model adds no params to the candidate: they stay the trial's (none here)
    assert mlflow.get_run(candidate.run_id).data.params == {}


def test_model_loads_and_predicts_where_steps_is_absent(store, frames, tmp_path):
    uri = log(trained("linear", frames), frames)
    frames["val"].to_parquet(tmp_path / "val.parquet")
    script = (
        "import sys, mlflow, pandas as pd, numpy as np\n"
        f"model = mlflow.pyfunc.load_model({uri!r})\n"
        "pred = model.predict(pd.read_parquet('val.parquet'))\n"
        "assert 'steps' not in sys.modules, sorted(m for m in sys.modules if 'steps' in m)\n"
        "np.save('pred.npy', pred)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MLFLOW_TRACKING_URI"] = store.uri
    completed = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    expected = mlflow.pyfunc.load_model(uri).predict(inputs(frames))
    np.testing.assert_array_equal(np.load(tmp_path / "pred.npy"), expected)


@pytest.fixture
def unpickling_fails(monkeypatch):
    """``pickle`` and ``cloudpickle`` raise on every load while the test runs."""

    def refuse(*args, **kwargs):
        raise AssertionError("something was unpickled")

    class RefusingUnpickler:
        def __init__(self, *args, **kwargs):
            refuse()

    for module in (pickle, cloudpickle):
        monkeypatch.setattr(module, "load", refuse)
        monkeypatch.setattr(module, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    with pytest.raises(AssertionError, match="unpickled"):
        pickle.loads(pickle.dumps(1))
    yield


@pytest.mark.parametrize("kind", MODEL_KINDS)
def test_every_model_kind_loads_with_unpickling_made_to_fail(store, frames, kind, request):
    predictor = trained(kind, frames)
    uri = log(predictor, frames)
    request.getfixturevalue("unpickling_fails")
    model = mlflow.pyfunc.load_model(uri)
    assert predictor_module_of(model).startswith(packaging.CODE_PACKAGE_PREFIX)
    np.testing.assert_array_equal(model.predict(inputs(frames)), predictor.predict(inputs(frames)))


class Pickled(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input


def test_the_patch_catches_a_pickled_model(store, monkeypatch, request):
    """The check above would see a pickle: a classic (cloudpickled) pyfunc fails under it."""
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(name="pickled", python_model=Pickled())
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
    mlflow.pyfunc.load_model(info.model_uri)  # loads without the patch
    request.getfixturevalue("unpickling_fails")
    with pytest.raises(AssertionError, match="unpickled"):
        mlflow.pyfunc.load_model(info.model_uri)
