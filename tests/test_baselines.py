"""Tests of the matminer tabular baselines on a small slice of real Matbench data."""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
    parametrize_with_checks,
)

from skgnn.baselines import (
    DropNaNColumns,
    StructureFeaturizer,
    make_rf_scm_magpie,
    make_strong_tabular,
)
from skgnn.exceptions import StructureError

MATBENCH = Path(__file__).parents[2] / "shared" / "datasets" / "matbench"


@pytest.fixture(scope="module")
def jdft2d():
    """The first 40 structures of matbench_jdft2d and their exfoliation energies."""
    if not (MATBENCH / "matbench_jdft2d.json.gz").is_file():
        pytest.skip(f"Matbench data not found at {MATBENCH}")
    from matminer.datasets import load_dataset

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = load_dataset("matbench_jdft2d", data_home=str(MATBENCH))
    return df["structure"], df["exfoliation_en"].to_numpy()


@pytest.fixture(scope="module")
def small(jdft2d):
    structures, y = jdft2d
    return structures.iloc[:40], y[:40]


def test_clone_is_unfitted_and_fits(small):
    X, y = small
    pipe = make_rf_scm_magpie(n_estimators=5, random_state=0).fit(X, y)
    twin = clone(pipe)
    assert twin.get_params()["featurize__composition_featurizers"] == ("magpie",)
    assert not hasattr(twin[0], "structure_featurizer_")  # no matminer object carried over
    assert twin.fit(X, y).predict(X).shape == (40,)
    np.testing.assert_allclose(twin.predict(X), pipe.predict(X))


@pytest.mark.parametrize(
    "make",
    [
        lambda: make_rf_scm_magpie(n_estimators=10, random_state=0),
        lambda: make_strong_tabular(max_iter=20, random_state=0),
    ],
    ids=["rf_scm_magpie", "strong_tabular"],
)
def test_cross_val_score(small, make):
    X, y = small
    scores = cross_val_score(make(), X, y, cv=2, scoring="neg_mean_absolute_error")
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_grid_search_over_featurizer_and_model(small):
    X, y = small
    grid = {
        "featurize__structure_featurizers": [("sine_coulomb",), ("density", "global_symmetry")],
        "model__max_depth": [2, None],
    }
    search = GridSearchCV(make_rf_scm_magpie(n_estimators=5, random_state=0), grid, cv=2)
    search.fit(X, y)
    assert len(search.cv_results_["params"]) == 4
    assert np.isfinite(search.cv_results_["mean_test_score"]).all()
    best = search.best_estimator_[0]
    assert best.structure_featurizers == search.best_params_["featurize__structure_featurizers"]


def test_set_output_pandas_names_columns(small):
    X, y = small
    pipe = make_rf_scm_magpie(n_estimators=5).set_output(transform="pandas")
    table = pipe[:-1].fit_transform(X, y)
    assert isinstance(table, pd.DataFrame) and table.shape[0] == 40
    assert {"MagpieData mean Number", "sine coulomb matrix eig 0"} <= set(table.columns)
    assert pipe.fit(X, y).predict(X).shape == (40,)


def test_feature_labels_citations_and_input_types(small):
    X, _ = small
    featurizer = StructureFeaturizer(
        composition_featurizers="stoichiometry", structure_featurizers=["density", "sine_coulomb"]
    ).fit(X)
    table = featurizer.transform(X)
    assert table.dtype == float and table.shape == (40, len(featurizer.feature_labels()))
    assert list(featurizer.get_feature_names_out()) == featurizer.feature_labels()
    # SineCoulombMatrix pads to the largest structure seen in fit
    assert table.shape[1] == 6 + 3 + max(len(s) for s in X)
    for same in (list(X), X.to_numpy()):
        np.testing.assert_array_equal(featurizer.transform(same), table)
    citations = clone(featurizer).citations()  # known before fit
    assert citations and all(c.startswith("@") for c in citations)
    assert any("Faber" in c for c in citations)  # the sine Coulomb matrix paper


def test_n_jobs_reaches_matminer(small):
    X, _ = small
    featurizer = StructureFeaturizer(structure_featurizers="density").fit(X[:10])
    serial = featurizer.transform(X[:10])
    assert featurizer.composition_featurizer_.n_jobs == 1
    parallel = featurizer.set_params(n_jobs=2).transform(X[:10])
    assert featurizer.structure_featurizer_.n_jobs == 2
    np.testing.assert_allclose(parallel, serial)


def test_nan_columns_are_chosen_on_training_rows_only():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(100, 3))
    train[:50, 2] = np.nan  # NaN-heavy in training: dropped
    test_clean, test_nan = rng.normal(size=(20, 3)), rng.normal(size=(20, 3))
    test_nan[:, 1] = np.nan  # NaN-heavy in these test rows only: still kept
    pipe = make_pipeline(DropNaNColumns(max_nan_fraction=0.01), SimpleImputer()).fit(train)
    np.testing.assert_array_equal(pipe[0].get_support(), [True, True, False])
    np.testing.assert_allclose(pipe.transform(test_clean), test_clean[:, :2])
    filled = pipe.transform(test_nan)
    assert filled.shape == (20, 2)  # the test rows' NaN do not change the choice
    np.testing.assert_allclose(filled[:, 1], train[:, 1].mean())  # imputed with training means
    np.testing.assert_array_equal(pipe[0].get_support(), [True, True, False])
    assert list(pipe[0].get_feature_names_out(["a", "b", "c"])) == ["a", "b"]


def test_max_nan_fraction_threshold_is_inclusive():
    X = np.ones((100, 2))
    X[:1, 0] = np.nan  # exactly 1% NaN
    X[:2, 1] = np.nan
    assert DropNaNColumns().fit(X).get_support().tolist() == [True, False]


def test_featurizer_failure_becomes_nan_or_raises(jdft2d):
    structures, y = jdft2d
    order = np.argsort([len(s) for s in structures])
    train, big = structures.iloc[order[:30]], structures.iloc[order[-1:]]
    assert len(big.iloc[0]) > max(len(s) for s in train)
    featurizer = StructureFeaturizer(structure_featurizers="sine_coulomb").fit(train)
    row = featurizer.transform(big)[0]
    n_magpie = 132
    assert np.isfinite(row[:n_magpie]).all() and np.isnan(row[n_magpie:]).all()
    # the pipeline imputes what the featurizer could not compute
    pipe = make_rf_scm_magpie(n_estimators=5, random_state=0).fit(train, y[order[:30]])
    assert np.isfinite(pipe.predict(big)).all()
    with pytest.raises(ValueError):
        featurizer.set_params(ignore_errors=False).transform(big)


def test_non_structure_item_names_its_index(small):
    X, _ = small
    featurizer = StructureFeaturizer(structure_featurizers=None)
    with pytest.raises(StructureError, match=r"X\[2\] is a int"):
        featurizer.fit([X.iloc[0], X.iloc[1], 42])
    featurizer.fit(X[:3])
    with pytest.raises(StructureError, match=r"X\[1\]"):
        featurizer.transform(np.array([X.iloc[0], None], dtype=object))


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"structure_featurizers": "nope"}, ValueError, "Unknown featurizer 'nope'"),
        ({"composition_featurizers": ["magpie", "magpie"]}, ValueError, "twice"),
        ({"composition_featurizers": None, "structure_featurizers": ()}, ValueError, "at least"),
        ({"n_jobs": "two"}, InvalidParameterError, "'n_jobs' parameter"),
    ],
    ids=["unknown", "duplicate", "empty", "n_jobs"],
)
def test_bad_parameters(small, params, error, match):
    X, _ = small
    with pytest.raises(error, match=match):
        StructureFeaturizer(**params).fit(X[:2])


def test_drop_nan_columns_validates_threshold():
    with pytest.raises(InvalidParameterError, match="max_nan_fraction"):
        DropNaNColumns(max_nan_fraction=2).fit(np.ones((3, 2)))


@parametrize_with_checks([DropNaNColumns()])
def test_drop_nan_columns_passes_sklearn_checks(estimator, check):
    check(estimator)


@pytest.mark.parametrize(
    "check",
    [
        check_no_attributes_set_in_init,
        check_get_params_invariance,
        check_set_params,
        check_parameters_default_constructible,
    ],
    ids=lambda check: check.__name__,
)
def test_structure_featurizer_api_checks(check):
    # the data checks feed 2-D numeric arrays, which are not structures; run the API ones
    check("StructureFeaturizer", StructureFeaturizer())
