import pickle

import numpy as np
import pandas as pd
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV, KFold, cross_val_score, cross_validate
from sklearn.pipeline import make_pipeline
from skorch.dataset import ValidSplit

from skgnn import CGCNNClassifier, CGCNNRegressor, CrystalGraphTransformer

from .conftest import tiny_regressor


def tiny_pipeline(**params):
    return make_pipeline(CrystalGraphTransformer(), tiny_regressor(**params))


def test_pipeline_fits_and_cross_validates_on_jdft2d(jdft2d):
    structures, y = jdft2d
    scores = cross_val_score(
        tiny_pipeline(), structures, y, cv=5, scoring="neg_mean_absolute_error"
    )
    assert scores.shape == (5,) and np.all(np.isfinite(scores)) and np.all(scores < 0)


def test_cross_validate_returns_train_and_test_scores(jdft2d):
    structures, y = jdft2d
    result = cross_validate(
        tiny_pipeline(max_epochs=1), structures[:60], y[:60], cv=2, return_train_score=True
    )
    assert len(result["test_score"]) == 2 and len(result["train_score"]) == 2


def test_training_reduces_the_error(jdft2d_graphs):
    graphs, y = jdft2d_graphs
    baseline = np.abs(y - y.mean()).mean()
    model = tiny_regressor(max_epochs=40, validation_fraction=None, lr=3e-3).fit(graphs, y)
    assert np.abs(model.predict(graphs) - y).mean() < 0.8 * baseline


def test_grid_search_over_transformer_and_net_parameters(jdft2d):
    structures, y = jdft2d
    grid = GridSearchCV(
        tiny_pipeline(max_epochs=1),
        {
            "crystalgraphtransformer__max_neighbors": [6, 12],
            "cgcnnregressor__module__n_conv": [1, 2],
        },
        cv=2,
        scoring="neg_mean_absolute_error",
    )
    grid.fit(structures[:50], y[:50])
    assert len(grid.cv_results_["params"]) == 4
    best = grid.best_estimator_
    assert len(best[-1].module_.convs) == grid.best_params_["cgcnnregressor__module__n_conv"]
    assert best[0].max_neighbors == grid.best_params_["crystalgraphtransformer__max_neighbors"]
    assert best[-1].contract_.graph_settings.max_neighbors == best[0].max_neighbors


def test_gaussian_settings_reach_the_module(jdft2d):
    structures, y = jdft2d
    pipe = make_pipeline(
        CrystalGraphTransformer(gaussian_step=0.5), tiny_regressor(max_epochs=1)
    ).fit(structures[:20], y[:20])
    assert pipe[-1].module_.convs[0].nbr_fea_len == 17


def test_same_random_state_gives_identical_predictions(jdft2d_graphs):
    graphs, y = jdft2d_graphs
    first = tiny_regressor(random_state=3).fit(graphs, y).predict(graphs)
    second = tiny_regressor(random_state=3).fit(graphs, y).predict(graphs)
    other = tiny_regressor(random_state=4).fit(graphs, y).predict(graphs)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_pickled_pipeline_predicts_identically(jdft2d):
    structures, y = jdft2d
    pipe = tiny_pipeline().fit(structures, y)
    restored = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(restored.predict(structures), pipe.predict(structures))


def test_target_scaling_uses_the_training_targets_only(jdft2d_graphs):
    graphs, y = jdft2d_graphs
    model = tiny_regressor().fit(graphs[:80], y[:80])
    assert model.target_mean_ == pytest.approx(y[:80].mean())
    assert model.target_scale_ == pytest.approx(y[:80].std())
    shifted = tiny_regressor().fit(graphs[:80], 1000 * y[:80] + 7)
    np.testing.assert_allclose(
        shifted.predict(graphs[80:]), 1000 * model.predict(graphs[80:]) + 7, rtol=1e-4
    )


def test_predictions_are_1d_for_1d_targets_and_2d_for_2d(jdft2d_graphs):
    graphs, y = jdft2d_graphs
    assert tiny_regressor(max_epochs=1).fit(graphs, y).predict(graphs).shape == (len(y),)
    two = np.stack([y, -y], axis=1)
    assert tiny_regressor(max_epochs=1).fit(graphs, two).predict(graphs).shape == (len(y), 2)


def test_pandas_series_input(jdft2d):
    structures, y = jdft2d
    pipe = tiny_pipeline(max_epochs=1).fit(pd.Series(list(structures)), pd.Series(y))
    assert pipe.predict(structures).shape == (len(y),)


def test_early_stopping_on_a_held_out_share(jdft2d_graphs):
    graphs, y = jdft2d_graphs
    with_valid = tiny_regressor(max_epochs=2, validation_fraction=0.1).fit(graphs, y)
    without = tiny_regressor(max_epochs=2).fit(graphs, y)
    assert "early_stopping" in dict(with_valid.callbacks_)
    assert "early_stopping" not in dict(without.callbacks_)
    assert "valid_loss" in with_valid.history[-1] and "valid_loss" not in without.history[-1]


def test_default_constructible_with_sensible_defaults():
    model = CGCNNRegressor()
    assert model.max_epochs >= 50 and model.validation_fraction is None
    assert CGCNNClassifier().get_params()["criterion"].__name__ == "CrossEntropyLoss"


def test_predict_before_fit_raises_not_fitted(jdft2d_graphs):
    graphs, _ = jdft2d_graphs
    with pytest.raises(NotFittedError):
        CGCNNRegressor().predict(graphs)


@pytest.mark.parametrize(
    "make_y, match",
    [
        (lambda y: y[:-1], "X has 120 structures but y has 119 values"),
        (lambda y: np.where(np.arange(len(y)) == 7, np.nan, y), r"y\[7\] is nan"),
        (lambda y: np.where(np.arange(len(y)) == 9, np.inf, y), r"y\[9\] is inf"),
    ],
    ids=["length-mismatch", "nan", "inf"],
)
def test_bad_targets_are_refused_before_any_state_changes(jdft2d_graphs, make_y, match):
    graphs, y = jdft2d_graphs
    model = tiny_regressor(max_epochs=1).fit(graphs, y)
    before = model.predict(graphs)
    with pytest.raises(ValueError, match=match):
        model.fit(graphs, make_y(y.copy()))
    np.testing.assert_array_equal(model.predict(graphs), before)


def test_structures_given_to_the_net_get_a_hint(jdft2d):
    structures, y = jdft2d
    with pytest.raises(TypeError, match="make_pipeline\\(CrystalGraphTransformer\\(\\)"):
        CGCNNRegressor().fit(structures, y)


@pytest.mark.parametrize(
    "labels", [np.array([0, 1]), np.array(["metal", "insulator", "semi"])], ids=["binary", "three"]
)
def test_classifier_pipeline_gives_probabilities(jdft2d, labels):
    structures, y = jdft2d
    classes = labels[np.digitize(y, np.quantile(y, np.linspace(0, 1, len(labels) + 1)[1:-1]))]
    pipe = make_pipeline(
        CrystalGraphTransformer(),
        CGCNNClassifier(max_epochs=2, module__atom_fea_len=16, validation_fraction=0.25,
                        random_state=0),
    ).fit(structures, classes)  # fmt: skip
    proba = pipe.predict_proba(structures)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    assert list(pipe[-1].classes_) == sorted(labels)
    # predict is the most probable class, and score the share of labels it gets right
    predicted = np.sort(labels)[proba.argmax(axis=1)]
    np.testing.assert_array_equal(pipe.predict(structures), predicted)
    assert pipe.score(structures, classes) == np.mean(predicted == classes)
    # valid_acc is the accuracy on the held-out share (the split the net draws), computed on
    # codes; the weights kept are those of the epoch of best validation loss
    codes = np.searchsorted(np.sort(labels), classes)
    split = ValidSplit(0.25, stratified=True, random_state=0)
    _, valid = split(np.arange(len(y)), codes)
    expected = np.mean(predicted[valid.indices] == classes[valid.indices])
    kept = [row for row in pipe[-1].history if row["valid_loss_best"]][-1]
    assert kept["valid_acc"] == pytest.approx(expected)


def test_classifier_refuses_a_single_class(jdft2d_graphs):
    graphs, _ = jdft2d_graphs
    with pytest.raises(ValueError, match="single class"):
        CGCNNClassifier().fit(graphs, np.ones(len(graphs)))


def test_classifier_cross_validates(jdft2d):
    structures, y = jdft2d
    labels = (y > np.median(y)).astype(int)
    pipe = make_pipeline(CrystalGraphTransformer(), CGCNNClassifier(max_epochs=1))
    scores = cross_val_score(pipe, structures, labels, cv=KFold(2), scoring="accuracy")
    assert scores.shape == (2,)


def test_pre_transformed_graphs_can_be_cross_validated(jdft2d_graphs):
    graphs, y = jdft2d_graphs
    scores = cross_val_score(tiny_regressor(max_epochs=1), graphs, y, cv=3)
    assert scores.shape == (3,)


def test_pipeline_set_output_pandas_is_accepted(jdft2d):
    structures, y = jdft2d
    pipe = tiny_pipeline(max_epochs=1).set_output(transform="pandas")
    assert pipe.fit(structures[:20], y[:20]).predict(structures[:5]).shape == (5,)
