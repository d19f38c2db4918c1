"""The hybrid's graph-network features are out of fold: no target reaches its own feature."""

import numpy as np
import pytest
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.dummy import DummyRegressor
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import KFold, cross_val_predict, cross_val_score
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline

from skgnn import CrystalGraphTransformer
from skgnn.hybrid import CrossFittedFeatures, ResidualRegressor, make_hybrid

from .conftest import tiny_regressor


class RecordingRegressor(RegressorMixin, BaseEstimator):
    """Predicts the mean target of its training rows; records which rows it was fitted on."""

    fitted_on: list = []

    def fit(self, X, y):
        RecordingRegressor.fitted_on.append(np.asarray(X)[:, 0].astype(int).tolist())
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X):
        return np.full(len(X), self.mean_)


def test_training_features_are_out_of_fold_and_new_rows_use_the_full_fit():
    rng = np.random.default_rng(0)
    X, y = rng.random((60, 3)), rng.random(60)
    knn = KNeighborsRegressor(n_neighbors=1)  # in sample it returns each row's own target
    features = CrossFittedFeatures(knn, cv=5)
    out_of_fold = features.fit_transform(X, y)[:, 0]
    reference = cross_val_predict(knn, X, y, cv=KFold(5, shuffle=True, random_state=0))
    np.testing.assert_array_equal(out_of_fold, reference)
    in_sample = features.transform(X)[:, 0]
    np.testing.assert_array_equal(in_sample, y)  # the leak a naive stack would have
    assert not np.allclose(out_of_fold, y)
    assert features.get_feature_names_out().tolist() == ["predict_0"]


def test_test_rows_never_reach_a_fit_inside_the_hybrid_pipeline():
    rng = np.random.default_rng(1)
    rows = np.arange(50)
    X = np.column_stack([rows, rng.random(50)])
    y = rng.random(50)
    train, test = rows[:40], rows[40:]
    RecordingRegressor.fitted_on = []
    stacked = make_pipeline(CrossFittedFeatures(RecordingRegressor(), cv=4), KNeighborsRegressor(3))
    stacked.fit(X[train], y[train])
    stacked.predict(X[test])
    seen = set().union(*map(set, RecordingRegressor.fitted_on))
    assert seen == set(train.tolist())
    assert len(RecordingRegressor.fitted_on) == 1 + 4  # the full fit and one per inner fold
    for fold in RecordingRegressor.fitted_on[1:]:
        assert len(fold) == 30  # each inner model leaves its quarter out


def test_hybrid_pipeline_runs_on_structures(jdft2d):
    structures, y = jdft2d
    graph = make_pipeline(CrystalGraphTransformer(), tiny_regressor(max_epochs=1))
    hybrid = make_hybrid(graph, cv=2, max_iter=20)
    hybrid.fit(structures[:40], y[:40])
    prediction = hybrid.predict(structures[40:45])
    assert prediction.shape == (5,) and np.isfinite(prediction).all()
    oof = hybrid.named_steps["features"].transformer_list[0][1]
    assert oof.n_features_out_ == 1
    # new rows: the network fitted on all 40 rows gives the first column, the booster the rest
    features = hybrid.named_steps["features"].transform(structures[40:45])
    np.testing.assert_allclose(features[:, 0], oof.estimator_.predict(structures[40:45]))
    np.testing.assert_allclose(prediction, hybrid[-1].predict(features))


def test_method_must_be_known():
    with pytest.raises(ValueError, match="The 'method' parameter of CrossFittedFeatures"):
        CrossFittedFeatures(KNeighborsRegressor(), method="embed").fit(
            np.zeros((4, 1)), np.zeros(4)
        )


def test_residual_regressor_learns_what_the_prior_column_misses():
    rng = np.random.default_rng(2)
    X = rng.random((30, 3))
    y = 3.0 * X[:, 1] + rng.random(30)
    # a mean as the correction: the prior plus the residuals' mean, worked by hand
    constant = ResidualRegressor(DummyRegressor(), prior_column=1).fit(X, y)
    X_new = rng.random((5, 3))
    np.testing.assert_allclose(constant.predict(X_new), X_new[:, 1] + np.mean(y - X[:, 1]))
    # a linear correction recovers y = 2 x0 + x2 - 0.5 exactly from the prior x2
    y = 2.0 * X[:, 0] + X[:, 2] - 0.5
    linear = ResidualRegressor(LinearRegression(), prior_column=2).fit(X, y)
    np.testing.assert_allclose(linear.estimator_.coef_, [2.0, 0.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(linear.predict(X_new), 2.0 * X_new[:, 0] + X_new[:, 2] - 0.5)


def test_residual_regressor_names_a_missing_column_or_a_non_finite_prior():
    X, y = np.ones((4, 2)), np.zeros(4)
    with pytest.raises(ValueError, match="prior_column=2, but X has 2 columns"):
        ResidualRegressor(LinearRegression(), prior_column=2).fit(X, y)
    model = ResidualRegressor(HistGradientBoostingRegressor())  # takes NaN elsewhere
    X[2, 1] = np.nan  # NaN in a feature column is the booster's to handle
    fitted = model.fit(X, y).estimator_
    assert np.isfinite(model.predict(X)).all()
    X_bad = np.ones((5, 3))
    X_bad[3, 0] = np.nan
    with pytest.raises(ValueError, match=r"prior prediction \(column 0\) of row 3 is nan"):
        model.fit(X_bad, np.zeros(5))
    assert model.estimator_ is fitted and model.n_features_in_ == 2  # the last fit, whole


def test_the_residual_hybrid_boosts_from_the_networks_column(jdft2d):
    structures, y = jdft2d
    graph = make_pipeline(CrystalGraphTransformer(), tiny_regressor(max_epochs=1))
    hybrid = make_hybrid(graph, cv=2, max_iter=20, residual=True).fit(structures[:40], y[:40])
    features = hybrid.named_steps["features"].transform(structures[40:45])
    booster = hybrid[-1].estimator_
    np.testing.assert_allclose(
        hybrid.predict(structures[40:45]), features[:, 0] + booster.predict(features)
    )
    out_of_fold = hybrid.named_steps["features"].transformer_list[0][1]
    train_features = hybrid.named_steps["features"].transform(structures[:40])
    assert out_of_fold.n_features_out_ == 1 and train_features.shape[1] == features.shape[1]


def test_without_a_prior_column_the_estimator_learns_the_target_itself():
    rng = np.random.default_rng(3)
    X, y = rng.random((25, 3)), rng.random(25)
    plain = LinearRegression().fit(X, y)
    unprimed = ResidualRegressor(LinearRegression(), prior_column=None).fit(X, y)
    np.testing.assert_allclose(unprimed.predict(X), plain.predict(X))


@pytest.mark.parametrize("prior_quality", ["accurate", "noise"])
def test_the_auto_hybrid_boosts_from_the_prior_only_where_inner_cv_says_it_helps(prior_quality):
    rng = np.random.default_rng(4)
    features = rng.random((200, 3))
    y = np.sin(6 * features[:, 1]) + 0.01 * rng.standard_normal(200)
    # column 0: the network's cross-fitted prediction, nearly exact or unrelated and large
    prior = y + 0.01 * rng.standard_normal(200) if prior_quality == "accurate" else features[:, 0]
    X = np.column_stack([prior * (1 if prior_quality == "accurate" else 50), features[:, 1:]])
    chooser = make_hybrid(KNeighborsRegressor(), cv=3, max_iter=50, residual="auto")[-1]
    chooser.fit(X, y)
    errors = {
        column: -cross_val_score(
            ResidualRegressor(chooser.estimator.estimator, prior_column=column), X, y,
            cv=KFold(3, shuffle=True, random_state=0), scoring="neg_mean_absolute_error",
        ).mean()
        for column in (None, 0)
    }  # fmt: skip
    chosen = chooser.best_params_["prior_column"]
    assert chosen == min(errors, key=errors.get)
    assert chosen == (0 if prior_quality == "accurate" else None)


def test_residual_must_be_true_false_or_auto():
    with pytest.raises(ValueError, match="residual must be True, False or 'auto'; got 'yes'"):
        make_hybrid(KNeighborsRegressor(), residual="yes")
