"""scripts/reproduce.py's comparison of model payloads, without MLflow: scikit-learn estimators
by content (not by the skops file, whose member names are Python object IDs), predictions bit
for bit, and how a rerun's output is read."""

from __future__ import annotations

import pickle
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import skops.io

from scripts import reproduce
from steps.models import make_estimator


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.random((200, 4))
    return X, X @ np.array([3.0, -1.0, 0.5, 2.0]) + rng.normal(0, 0.1, 200)


def forest(data, seed: int):
    params = {"max_depth": 4, "n_estimators": 3, "min_samples_split": 2, "min_samples_leaf": 1}
    return make_estimator("random_forest", params | {"random_state": seed}).fit(*data)


def test_forests_with_the_same_seed_are_equal(data):
    a, b = forest(data, 42), forest(data, 42)
    assert reproduce.estimator_differences(a, b) == []
    state = reproduce.estimator_state(a)
    for field in ("children_left", "children_right", "feature", "threshold", "value"):
        assert f"estimators_[2].tree_.{field}" in state
    assert state["estimators_[0].params.random_state"].startswith("int:")
    assert state["params.random_state"] == "int:42"
    assert state["class"] == "sklearn.ensemble._forest.RandomForestRegressor"


def test_a_forest_with_another_seed_differs(data):
    differing = reproduce.estimator_differences(forest(data, 42), forest(data, 7))
    assert "params.random_state" in differing  # the forest's parameter
    assert "estimators_[0].params.random_state" in differing  # each tree's drawn seed
    assert any(n.startswith("estimators_[0].tree_.") for n in differing)


def test_one_changed_threshold_is_a_difference(data):
    a, b = forest(data, 42), forest(data, 42)
    threshold = b.estimators_[1].tree_.threshold  # a view of the tree's nodes
    threshold[0] = np.nextafter(threshold[0], np.inf)
    assert reproduce.estimator_differences(a, b) == ["estimators_[1].tree_.threshold"]


@pytest.mark.parametrize("kind", ["lasso", "linear"])
def test_linear_models_compare_to_the_last_bit(data, kind):
    params = {"alpha": 0.01} if kind == "lasso" else {}
    a, b = make_estimator(kind, params).fit(*data), make_estimator(kind, params).fit(*data)
    assert reproduce.estimator_differences(a, b) == []
    b.coef_[2] = np.nextafter(b.coef_[2], np.inf)
    assert reproduce.estimator_differences(a, b) == ["coef_"]
    b.coef_[2] = a.coef_[2]
    b.intercept_ = np.nextafter(b.intercept_, -np.inf)
    assert reproduce.estimator_differences(a, b) == ["intercept_"]


def test_lasso_with_another_alpha_differs_in_its_parameter(data):
    a = make_estimator("lasso", {"alpha": 0.01}).fit(*data)
    b = make_estimator("lasso", {"alpha": 0.02}).fit(*data)
    assert {"params.alpha", "coef_"} <= set(reproduce.estimator_differences(a, b))


def test_skops_files_of_equal_forests_differ_but_their_contents_do_not(data, tmp_path):
    """The reason for comparing by content: skops names its members after object IDs."""
    a, b = tmp_path / "a.skops", tmp_path / "b.skops"
    skops.io.dump(forest(data, 42), a)
    skops.io.dump(forest(data, 42), b)
    assert reproduce.file_fingerprint(a) != reproduce.file_fingerprint(b)
    rows = reproduce.payload_rows("candidate 1 ", Path("x.skops"), *_as_dirs(a, b, tmp_path))
    assert rows and all(r.equal for r in rows)
    names = [r.name for r in rows]
    assert names[0] == "candidate 1 estimator class"
    assert "candidate 1 estimator params" in names and "candidate 1 estimator estimators_" in names


def _as_dirs(a: Path, b: Path, tmp_path: Path) -> tuple[Path, Path]:
    da, db = tmp_path / "da", tmp_path / "db"
    da.mkdir()
    db.mkdir()
    a.rename(da / "x.skops")
    b.rename(db / "x.skops")
    return da, db


def test_rows_show_which_part_differs(data, capsys):
    rows = reproduce.estimator_rows("candidate 1 ", forest(data, 42), forest(data, 7))
    differing = {r.name for r in rows if not r.equal}
    assert {"candidate 1 estimator params", "candidate 1 estimator estimators_"} <= differing
    assert "candidate 1 estimator class" not in differing
    assert "estimators_[0].params.random_state" in capsys.readouterr().err


def test_loading_unpickles_nothing(data, tmp_path, monkeypatch):
    path = tmp_path / "forest.skops"
    skops.io.dump(forest(data, 42), path)

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling while loading an estimator")

    for module in (pickle, cloudpickle):
        monkeypatch.setattr(module, "load", refuse)
        monkeypatch.setattr(module, "loads", refuse)
    loaded = reproduce.load_estimator(path)
    assert reproduce.estimator_differences(loaded, forest(data, 42)) == []


class Untrusted:
    pass


def test_an_untrusted_type_is_refused(tmp_path):
    path = tmp_path / "t.skops"
    skops.io.dump(Untrusted(), path)
    with pytest.raises(skops.io.exceptions.UntrustedTypesFoundException):
        reproduce.load_estimator(path)


def test_an_unknown_attribute_type_is_an_error_not_a_silent_match():
    class Opaque:
        __slots__ = ()

    class Model:
        def __init__(self):
            self.thing_ = Opaque()

    with pytest.raises(TypeError, match="thing_"):
        reproduce.estimator_state(Model())


def test_predictions_compare_to_the_last_bit():
    p = np.linspace(1.0, 30.0, 1000)
    q = p.copy()
    assert reproduce.prediction_digest(p) == reproduce.prediction_digest(q)
    q[500] = np.nextafter(q[500], np.inf)
    assert reproduce.prediction_digest(p) != reproduce.prediction_digest(q)


def test_the_rerun_id_is_the_last_one_reported():
    output = (
        "=== Run (ID 'aaaa') succeeded ===\n"
        "INFO other line\n"
        "2026/01/01 INFO mlflow.projects: === Run (ID 'bbbb') failed ===\n"
    )
    assert reproduce.reported_run_id(output) == "bbbb"
    assert reproduce.reported_run_id("Traceback ...\nError") is None


def test_a_failed_rerun_is_a_difference():
    rows = reproduce.failed_rerun_rows(reproduce.Rerun(1, "bbbb", "boom"))
    assert [(r.name, r.equal) for r in rows] == [("rerun exit code", False)]
    rows = reproduce.failed_rerun_rows(reproduce.Rerun(0, None, "no id"))
    assert not all(r.equal for r in rows)
