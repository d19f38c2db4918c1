"""Uncertainty: deep ensembles, the forest's spread, recalibration and the scores of calibration."""

import pickle

import numpy as np
import pytest
import torch
from scipy.stats import norm, spearmanr
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.exceptions import DataConversionWarning
from sklearn.model_selection import KFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from skgnn import CrystalGraphTransformer
from skgnn.baselines import RandomForestWithStd
from skgnn.calibration import (
    LEVELS,
    RecalibratedRegressor,
    calibration_curve,
    combined_std,
    error_std_spearman,
    fit_coverage_scale,
    fit_scale_and_noise,
    fit_std_scale,
    gaussian_nll,
    miscalibration_area,
)
from skgnn.ensemble import DeepEnsembleRegressor

from .conftest import tiny_regressor


@pytest.fixture(scope="module")
def graphs_60(jdft2d_graphs):
    graphs, y = jdft2d_graphs
    return graphs[:60], y[:60]


def test_ensemble_is_the_mean_and_spread_of_seeded_members(graphs_60):
    graphs, y = graphs_60
    ensemble = DeepEnsembleRegressor(tiny_regressor(max_epochs=2), n_estimators=3, random_state=7)
    mean, std = ensemble.fit(graphs, y).predict(graphs, return_std=True)
    members = np.stack(
        [tiny_regressor(max_epochs=2, random_state=7 + i).fit(graphs, y).predict(graphs)
         for i in range(3)]
    )  # fmt: skip
    np.testing.assert_allclose(mean, members.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, members.std(axis=0, ddof=1), rtol=1e-5)
    np.testing.assert_array_equal(ensemble.predict(graphs), mean)


def test_members_fitted_in_processes_equal_those_fitted_in_turn(graphs_60):
    graphs, y = graphs_60
    base = DeepEnsembleRegressor(tiny_regressor(max_epochs=1), n_estimators=2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what joblib gives each process worker: same sums, same order
    try:
        serial = clone(base).fit(graphs, y).predict(graphs, return_std=True)
    finally:
        torch.set_num_threads(threads)
    parallel = clone(base).set_params(n_jobs=2).fit(graphs, y)
    torch.set_num_threads(1)
    try:
        parallel = parallel.predict(graphs, return_std=True)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(parallel[0], serial[0])
    np.testing.assert_array_equal(parallel[1], serial[1])


def test_pipeline_passes_return_std_on_and_pickles(jdft2d):
    structures, y = jdft2d
    pipe = make_pipeline(
        CrystalGraphTransformer(),
        DeepEnsembleRegressor(tiny_regressor(max_epochs=1), n_estimators=2),
    ).fit(structures[:30], y[:30])
    mean, std = pipe.predict(structures[:5], return_std=True)
    graphs = pipe[0].transform(structures[:5])
    members = np.stack([member.predict(graphs) for member in pipe[-1].estimators_])
    np.testing.assert_allclose(mean, members.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(std, members.std(axis=0, ddof=1), rtol=1e-6)
    assert np.all(std > 0)
    restored = pickle.loads(pickle.dumps(pipe))
    np.testing.assert_array_equal(restored.predict(structures[:5], return_std=True)[1], std)


def test_forest_spread_is_the_standard_deviation_over_trees():
    rng = np.random.default_rng(0)
    X, y = rng.random((80, 4)), rng.random(80)
    forest = RandomForestWithStd(n_estimators=15, random_state=0).fit(X, y)
    mean, std = forest.predict(X[:10], return_std=True)
    trees = np.stack([tree.predict(X[:10]) for tree in forest.estimators_])
    np.testing.assert_allclose(std, trees.std(axis=0))
    np.testing.assert_allclose(mean, forest.predict(X[:10]))


# ---- scores of calibration, against hand-worked and sampled references ----------------------


def test_calibration_scores_of_a_perfectly_calibrated_gaussian():
    rng = np.random.default_rng(0)
    std = rng.uniform(0.5, 2.0, 50_000)
    y = rng.normal(0.0, std)
    assert miscalibration_area(y, 0.0, std) < 0.01
    assert fit_std_scale(y, 0.0, std) == pytest.approx(1.0, abs=0.01)
    # overconfident by 2x: inside at level p is P(|2Z| <= Φ⁻¹((1+p)/2)) = 2Φ(Φ⁻¹((1+p)/2)/2) - 1
    halved = 2 * norm.cdf(norm.ppf((1 + LEVELS) / 2) / 2) - 1
    assert miscalibration_area(y, 0.0, std / 2) == pytest.approx(
        np.mean(np.abs(halved - LEVELS)), abs=0.005
    )
    assert fit_std_scale(y, 0.0, std / 2) == pytest.approx(2.0, abs=0.02)
    assert error_std_spearman(y, 0.0, std) > 0.3


def test_coverage_scale_matches_the_intervals_of_heavy_tailed_errors():
    rng = np.random.default_rng(0)
    errors = rng.standard_t(df=2, size=20_000)  # heavier tails than any Gaussian
    std = np.ones_like(errors)
    by_coverage = fit_coverage_scale(errors, 0.0, std)
    by_likelihood = fit_std_scale(errors, 0.0, std)
    assert miscalibration_area(errors, 0.0, by_coverage * std) < miscalibration_area(
        errors, 0.0, by_likelihood * std
    )
    grid = np.geomspace(0.05, 20.0, 241)
    areas = [miscalibration_area(errors, 0.0, s * std) for s in grid]
    assert miscalibration_area(errors, 0.0, by_coverage * std) == pytest.approx(min(areas))


def test_calibration_curve_by_hand():
    # errors of 0.5, 1.5 and 3 standard deviations: inside the 50 % interval (±0.674 σ) only
    # the first; inside the 95 % interval (±1.96 σ) the first two
    expected, observed = calibration_curve(
        np.array([0.5, -1.5, 3.0]), 0.0, 1.0, levels=np.array([0.5, 0.95])
    )
    np.testing.assert_allclose(observed, [1 / 3, 2 / 3])
    np.testing.assert_allclose(expected, [0.5, 0.95])


def test_gaussian_nll_equals_scipy():
    y, mean, std = np.array([0.1, 2.0, -1.0]), np.array([0.0, 1.0, 0.0]), np.array([1.0, 0.5, 2])
    assert gaussian_nll(y, mean, std) == pytest.approx(-norm.logpdf(y, mean, std).mean())


def test_recalibration_learns_its_scale_from_held_out_training_rows_only():
    rng = np.random.default_rng(1)
    X = rng.random((400, 3))
    y = X @ [1.0, 2.0, 3.0] + rng.normal(0, 0.3, 400)
    model = RecalibratedRegressor(
        RandomForestWithStd(n_estimators=20, random_state=0), held_out_fraction=0.25
    )
    model.fit(X[:300], y[:300])  # the last 100 rows are a test set and never reach fit
    held_out = np.sort(np.random.default_rng(0).permutation(300)[:75])
    mean, std = model.estimator_.predict(X[held_out], return_std=True)
    assert model.std_scale_ == pytest.approx(fit_std_scale(y[held_out], mean, std))
    assert len(model.estimator_.estimators_[0].tree_.value) > 0
    assert model.estimator_.n_features_in_ == 3
    _, test_std = model.predict(X[300:], return_std=True)
    np.testing.assert_allclose(
        test_std, model.estimator_.predict(X[300:], return_std=True)[1] * model.std_scale_
    )
    # recalibrated, the held-out errors have unit variance in units of the spread
    assert np.mean(((y[held_out] - mean) / (std * model.std_scale_)) ** 2) == pytest.approx(1.0)


def test_recalibration_refuses_a_split_that_leaves_nothing_to_fit():
    with pytest.raises(ValueError, match="leaving too few to fit on"):
        RecalibratedRegressor(RandomForestWithStd(), held_out_fraction=0.9).fit(
            np.zeros((4, 1)), np.zeros(4)
        )


# ---- a noise floor under the spread, and out-of-fold recalibration -------------------------


def _spread_with_shared_noise(n: int, scale: float, noise_std: float, seed: int = 0):
    """Errors of variance (scale · σ)² + noise_std², as an ensemble blind to shared noise makes."""
    rng = np.random.default_rng(seed)
    std = np.exp(rng.uniform(np.log(0.01), np.log(2.0), n))  # spreads over two decades
    return rng.normal(0.0, np.hypot(scale * std, noise_std)), std


def test_combined_std_by_hand():
    np.testing.assert_allclose(combined_std([3.0, 0.0], 2.0, 8.0), [10.0, 8.0])
    np.testing.assert_allclose(combined_std([3.0], 2.0), [6.0])


def test_likelihood_recovers_scale_and_noise_from_errors_that_have_both():
    errors, std = _spread_with_shared_noise(40_000, scale=2.0, noise_std=0.5)
    scale, noise_std = fit_scale_and_noise(errors, 0.0, std, method="likelihood")
    assert scale == pytest.approx(2.0, rel=0.03)
    assert noise_std == pytest.approx(0.5, rel=0.05)


def test_the_likelihood_fit_is_the_likelihood_optimum_and_the_coverage_fit_is_not():
    errors, std = _spread_with_shared_noise(2_000, scale=1.5, noise_std=0.3, seed=5)

    def nll(params):
        return gaussian_nll(errors, 0.0, combined_std(std, *params))

    best = fit_scale_and_noise(errors, 0.0, std, method="likelihood")
    for nearby in ((1.01, 1.0), (0.99, 1.0), (1.0, 1.02), (1.0, 0.98)):
        assert nll(best) <= nll(np.multiply(best, nearby))
    assert nll(best) < nll(fit_scale_and_noise(errors, 0.0, std, method="coverage"))


def test_recalibration_does_not_change_when_targets_and_predictions_shift_together():
    errors, std = _spread_with_shared_noise(500, scale=1.5, noise_std=0.3, seed=6)
    mean = np.random.default_rng(7).normal(0.0, 1.0, 500)
    for method in ("coverage", "likelihood"):
        here = fit_scale_and_noise(mean + errors, mean, std, method=method)
        shifted = fit_scale_and_noise(mean + errors + 100.0, mean + 100.0, std, method=method)
        np.testing.assert_allclose(shifted, here, rtol=1e-3)
    with pytest.raises(ValueError, match="y_mean holds 2 values for 500 targets"):
        gaussian_nll(errors, [0.0, 1.0], std)


def test_coverage_with_noise_covers_the_small_spreads_that_one_factor_cannot():
    # the coverage objective is flat along a ridge of (scale, noise) pairs, so only the
    # area it reaches is checked, not the pair
    errors, std = _spread_with_shared_noise(4_000, scale=2.0, noise_std=0.5)
    scale, noise_std = fit_scale_and_noise(errors, 0.0, std, method="coverage")
    with_noise = miscalibration_area(errors, 0.0, combined_std(std, scale, noise_std))
    scale_only = miscalibration_area(errors, 0.0, fit_coverage_scale(errors, 0.0, std) * std)
    assert with_noise < 0.015 and scale_only > 0.04
    assert noise_std > 0


def test_noise_is_not_invented_where_the_spread_alone_is_calibrated():
    errors, std = _spread_with_shared_noise(40_000, scale=1.0, noise_std=0.0, seed=1)
    scale, noise_std = fit_scale_and_noise(errors, 0.0, std, method="likelihood")
    assert scale == pytest.approx(1.0, rel=0.03)
    assert noise_std < 0.05


def test_recalibration_with_noise_applies_both_parameters_learned_on_held_out_rows():
    rng = np.random.default_rng(2)
    X = rng.random((300, 3))
    y = X @ [1.0, 2.0, 3.0] + rng.normal(0, 0.3, 300)
    model = RecalibratedRegressor(
        RandomForestWithStd(n_estimators=20, random_state=0),
        held_out_fraction=0.3,
        method="likelihood",
        noise=True,
    ).fit(X[:250], y[:250])
    held_out = np.sort(np.random.default_rng(0).permutation(250)[:75])
    mean, std = model.estimator_.predict(X[held_out], return_std=True)
    assert (model.std_scale_, model.noise_std_) == pytest.approx(
        fit_scale_and_noise(y[held_out], mean, std, method="likelihood")
    )
    assert model.noise_std_ > 0.05  # the forest's spread misses the 0.3 of noise in every row
    test_mean, test_std = model.predict(X[250:], return_std=True)
    raw_mean, raw_std = model.estimator_.predict(X[250:], return_std=True)
    np.testing.assert_allclose(test_mean, raw_mean)
    np.testing.assert_allclose(test_std, np.hypot(model.std_scale_ * raw_std, model.noise_std_))


def test_out_of_fold_recalibration_uses_every_row_then_refits_on_all():
    rng = np.random.default_rng(3)
    X = rng.random((120, 3))
    y = X @ [1.0, 2.0, 3.0] + rng.normal(0, 0.3, 120)
    forest = RandomForestWithStd(n_estimators=10, random_state=0)
    model = RecalibratedRegressor(forest, cv=4, random_state=5).fit(X, y)
    mean, std = np.empty(120), np.empty(120)
    for train, test in KFold(4, shuffle=True, random_state=5).split(X):
        mean[test], std[test] = (
            clone(forest).fit(X[train], y[train]).predict(X[test], return_std=True)
        )
    assert model.std_scale_ == pytest.approx(fit_std_scale(y, mean, std))
    assert model.noise_std_ == 0.0
    np.testing.assert_allclose(model.predict(X), clone(forest).fit(X, y).predict(X))


@pytest.mark.parametrize("cv", [None, 3])
def test_recalibration_passes_each_fit_its_own_rows_sample_weights(cv):
    rng = np.random.default_rng(4)
    X, y, weights = rng.random((60, 2)), rng.random(60), rng.uniform(0.5, 2.0, 60)
    forest = RandomForestWithStd(n_estimators=20, random_state=0)
    model = RecalibratedRegressor(forest, cv=cv, held_out_fraction=0.2).fit(
        X, y, sample_weight=weights
    )
    if cv is None:
        train = np.sort(np.random.default_rng(0).permutation(60)[12:])
        reference = clone(forest).fit(X[train], y[train], sample_weight=weights[train])
    else:
        reference = clone(forest).fit(X, y, sample_weight=weights)
    np.testing.assert_allclose(model.predict(X), reference.predict(X))


def test_out_of_fold_recalibration_refuses_more_folds_than_rows():
    with pytest.raises(ValueError, match="cv=5 folds need at least 5 rows; got n_samples=3"):
        RecalibratedRegressor(RandomForestWithStd(), cv=5).fit(np.zeros((3, 1)), np.zeros(3))


# ---- inputs that used to give wrong numbers without a word ---------------------------------


class ColumnsAsPrediction(RegressorMixin, BaseEstimator):
    """Predicts ``X[:, 0]`` with the spread ``X[:, 1]``; fitting learns nothing."""

    def fit(self, X, y):
        self.n_features_in_ = np.shape(X)[1]
        return self

    def predict(self, X, return_std=False):
        X = np.asarray(X, dtype=float)
        return (X[:, 0], X[:, 1]) if return_std else X[:, 0]


class FitsCounted(ColumnsAsPrediction):
    fits: list = []

    def fit(self, X, y):
        self.fits.append(len(y))
        return super().fit(X, y)


@pytest.mark.parametrize("cv", [None, 3])
def test_recalibration_refuses_targets_of_another_length_or_none_before_any_fit(cv):
    X, y = np.ones((10, 2)), np.arange(10.0)
    FitsCounted.fits.clear()
    model = RecalibratedRegressor(FitsCounted(), cv=cv, held_out_fraction=0.3)
    with pytest.raises(ValueError, match=r"inconsistent numbers of samples: \[10, 9\]"):
        model.fit(X, y[:9])
    with pytest.raises(ValueError, match="requires y to be passed, but the target y is None"):
        model.fit(X, None)
    assert FitsCounted.fits == [] and not hasattr(model, "estimator_")
    model.fit(X.tolist(), y.astype(object))  # lists and object targets, as numbers
    assert model.n_features_in_ == 2 and model.predict(X, return_std=True)[1].dtype == float


def test_scores_of_a_target_column_equal_those_of_the_flat_targets():
    rng = np.random.default_rng(1)
    std = rng.uniform(0.5, 2.0, 200)
    y = rng.normal(0.0, 1.5 * std)
    mean = rng.normal(0.0, 0.1, 200)
    for score in (fit_std_scale, fit_coverage_scale, miscalibration_area, gaussian_nll,
                  error_std_spearman):  # fmt: skip
        assert score(y[:, None], mean, std) == pytest.approx(score(y, mean, std)), score.__name__
    assert fit_scale_and_noise(y[:, None], mean, std) == fit_scale_and_noise(y, mean, std)
    with pytest.raises(ValueError, match="y_std holds 199 values for 200 targets"):
        miscalibration_area(y, mean, std[:-1])


def test_a_caller_cannot_change_the_levels_every_score_reads():
    rng = np.random.default_rng(2)
    y, std = rng.normal(size=100), np.ones(100)
    area = miscalibration_area(y, 0.0, std)
    expected, _ = calibration_curve(y, 0.0, std)
    expected *= 100  # e.g. to plot percentages
    np.testing.assert_array_equal(LEVELS, np.linspace(0.01, 0.99, 99))
    assert miscalibration_area(y, 0.0, std) == area
    with pytest.raises(ValueError, match="read-only"):
        LEVELS[0] = 0.5


def test_recalibration_of_a_column_target_equals_that_of_the_flat_one():
    rng = np.random.default_rng(3)
    y = rng.normal(size=60)
    X = np.column_stack([y + rng.normal(0.0, 2.0, 60), np.ones(60)])
    flat = RecalibratedRegressor(ColumnsAsPrediction(), cv=3).fit(X, y)
    with pytest.warns(DataConversionWarning, match="column-vector y"):  # as sklearn's say it
        column = RecalibratedRegressor(ColumnsAsPrediction(), cv=3).fit(X, y[:, None])
    assert column.std_scale_ == pytest.approx(flat.std_scale_)
    assert flat.std_scale_ == pytest.approx(fit_std_scale(y, X[:, 0], 1.0))
    with pytest.raises(ValueError, match=r"one scale for one target; y has shape \(60, 2\)"):
        RecalibratedRegressor(ColumnsAsPrediction(), cv=3).fit(X, np.column_stack([y, y]))


def test_zero_spreads_that_missed_are_refused_by_a_scale_and_covered_by_a_noise_floor():
    rng = np.random.default_rng(4)
    y = rng.normal(size=40)
    spread = np.ones(40)
    spread[[5, 17, 30]] = 0.0  # three rows predicted with certainty, and missed
    X = np.column_stack([y + rng.normal(0.0, 1.0, 40), spread])
    with pytest.raises(ValueError, match="zero on 3 of the 40 rows .* training row 5"):
        RecalibratedRegressor(ColumnsAsPrediction(), cv=2).fit(X, y)
    floor = RecalibratedRegressor(ColumnsAsPrediction(), cv=2, noise=True).fit(X, y)
    assert np.isfinite(floor.std_scale_) and floor.noise_std_ > 0
    _, std = floor.predict(X[[5, 6]], return_std=True)
    np.testing.assert_allclose(std, combined_std([0.0, 1.0], floor.std_scale_, floor.noise_std_))
    coverage = RecalibratedRegressor(ColumnsAsPrediction(), cv=2, method="coverage").fit(X, y)
    assert 0.05 < coverage.std_scale_ < 20.0
    certain = np.column_stack([y, np.zeros(40)])  # zero spread and no error: nothing to refuse
    exact = RecalibratedRegressor(ColumnsAsPrediction(), cv=2).fit(np.column_stack([y, spread]), y)
    assert exact.std_scale_ == pytest.approx(0.0)
    assert RecalibratedRegressor(ColumnsAsPrediction(), cv=2).fit(certain, y).std_scale_ == 0.0


def test_an_ensemble_of_a_model_without_seed_is_refused_before_any_fit():
    ensemble = DeepEnsembleRegressor(KNeighborsRegressor(n_neighbors=2))
    with pytest.raises(ValueError, match="KNeighborsRegressor has no random_state parameter"):
        ensemble.fit(np.eye(4), np.arange(4.0))
    assert not hasattr(ensemble, "estimators_")
    seeded = DeepEnsembleRegressor(make_pipeline(StandardScaler(), RandomForestWithStd()))
    assert seeded.set_params(n_estimators=2).fit(np.eye(4), np.arange(4.0)).estimators_


def test_spearman_ranks_the_errors_not_the_sums():
    y, mean, std = np.full(4, 5.0), np.array([1.0, 4.0, 8.0, 2.0]), np.array([4.0, 1.0, 3.0, 3.5])
    expected = spearmanr([4.0, 1.0, 3.0, 3.0], std).statistic  # |y - mean| by hand
    assert error_std_spearman(y, mean, std) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("params", "name"),
    [({"held_out_fraction": 1.5}, "held_out_fraction"), ({"method": "median"}, "method"),
     ({"noise": "yes"}, "noise"), ({"cv": 1}, "cv"), ({"random_state": -1}, "random_state")],
)  # fmt: skip
def test_recalibration_refuses_invalid_parameters_by_name(params, name):
    X, y = np.column_stack([np.zeros(20), np.ones(20)]), np.zeros(20)
    with pytest.raises(ValueError, match=f"The '{name}' parameter of RecalibratedRegressor"):
        RecalibratedRegressor(ColumnsAsPrediction(), **params).fit(X, y)


def test_recalibration_refuses_an_estimator_that_cannot_predict():
    X, y = np.column_stack([np.zeros(20), np.ones(20)]), np.zeros(20)
    with pytest.raises(ValueError, match="The 'estimator' parameter of RecalibratedRegressor"):
        RecalibratedRegressor(object()).fit(X, y)
