"""The vectorised featurizer equals DictVectorizer on the course's records, array for array."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from steps import tlc
from steps.features import Featurizer, records_path_matrix
from tests.conftest import tlc_file


def _clean(month):
    return tlc.clean(tlc.read_month(tlc_file(month), "green").frame, "green")


def assert_same_csr(ours, theirs):
    assert type(ours) is type(theirs)
    assert ours.shape == theirs.shape
    for name in ("indptr", "indices", "data"):
        a, b = getattr(ours, name), getattr(theirs, name)
        assert a.dtype == b.dtype, name
        np.testing.assert_array_equal(a, b, err_msg=name)


@pytest.mark.parametrize(("train", "val"), [("2021-01", "2021-02"), ("2023-01", "2023-03")])
def test_matches_dictvectorizer_on_real_months(train, val):
    train_df, val_df = _clean(train), _clean(val)
    featurizer = Featurizer.fit(train_df)
    expected_train, dv = records_path_matrix(train_df)
    assert list(featurizer.feature_names) == list(dv.feature_names_)
    assert_same_csr(featurizer.transform(train_df), expected_train)
    # val has pairs the train month never saw: both drop them
    expected_val, _ = records_path_matrix(val_df, dv)
    assert_same_csr(featurizer.transform(val_df), expected_val)


def test_explicit_zero_distances_are_stored():
    df = pd.DataFrame(
        {"PULocationID": [1, 2, 1], "DOLocationID": [2, 3, 2], "trip_distance": [0.0, 1.5, 2.0]}
    )
    featurizer = Featurizer.fit(df)
    X = featurizer.transform(df)
    assert X.nnz == 6  # the 0.0 distance is an explicit entry, not a missing one
    assert_same_csr(X, records_path_matrix(df)[0])


def test_unseen_pairs_keep_only_the_distance():
    featurizer = Featurizer.fit(
        pd.DataFrame({"PULocationID": [10], "DOLocationID": [20], "trip_distance": [1.0]})
    )
    assert featurizer.feature_names == ("PU_DO=10_20", "trip_distance")
    X = featurizer.transform(
        pd.DataFrame(
            {"PULocationID": [10, 11], "DOLocationID": [20, 20], "trip_distance": [3.0, 4.0]}
        )
    )
    assert X.toarray().tolist() == [[1.0, 3.0], [0.0, 4.0]]


def test_int32_and_int64_locations_give_the_same_matrix():
    df = _clean("2023-02")
    featurizer = Featurizer.fit(df)
    narrow = df.astype({"PULocationID": np.int32, "DOLocationID": np.int32})
    assert_same_csr(featurizer.transform(narrow), featurizer.transform(df))


def test_json_round_trip(tmp_path):
    featurizer = Featurizer.fit(_clean("2021-01"))
    featurizer.save(tmp_path / "f.json")
    assert Featurizer.load(tmp_path / "f.json") == featurizer
    with pytest.raises(ValueError, match="not a featurizer"):
        Featurizer.from_dict({"feature_names": []})
