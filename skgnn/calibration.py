"""Calibrated uncertainty: rescaling a predicted spread on held-out rows, and how to score it."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy.optimize import minimize
from scipy.stats import norm, spearmanr
from sklearn.base import BaseEstimator, MetaEstimatorMixin, RegressorMixin, clone
from sklearn.model_selection import KFold
from sklearn.utils import _safe_indexing, get_tags, indexable
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import (
    _check_method_params,
    check_array,
    check_is_fitted,
    column_or_1d,
)

#: Confidence levels at which calibration curves are read (central intervals).
LEVELS = np.linspace(0.01, 0.99, 99)
LEVELS.flags.writeable = False


def _flat(y_true, y_mean, y_std) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The three as flat float arrays of one length (a scalar mean or spread is broadcast).

    A target column ``(n, 1)`` against predictions ``(n,)`` would otherwise
    broadcast to an ``(n, n)`` table of wrong errors.
    """
    y_true, y_mean, y_std = (np.asarray(a, dtype=float).ravel() for a in (y_true, y_mean, y_std))
    for name, values in (("y_mean", y_mean), ("y_std", y_std)):
        if values.size not in (1, y_true.size):
            raise ValueError(
                f"{name} holds {values.size} values for {y_true.size} targets; they must match."
            )
    return y_true, np.broadcast_to(y_mean, y_true.shape), np.broadcast_to(y_std, y_true.shape)


def _z(y_true, y_mean, y_std) -> np.ndarray:
    y_true, y_mean, y_std = _flat(y_true, y_mean, y_std)
    with np.errstate(over="ignore"):  # a zero spread that missed is infinitely far out
        return (y_true - y_mean) / np.maximum(y_std, np.finfo(float).tiny)


def fit_std_scale(y_true, y_mean, y_std) -> float:
    """The factor ``s`` for which ``s * y_std`` maximises the Gaussian likelihood of the errors.

    ``s² = mean(((y - mean) / std)²)``: the held-out errors then have unit
    variance in units of the spread. A row with zero spread and an error
    makes ``s`` infinite; no factor calibrates it (a noise floor does, see
    :func:`fit_scale_and_noise`).
    """
    return float(np.sqrt(np.mean(_z(y_true, y_mean, y_std) ** 2)))


def fit_coverage_scale(y_true, y_mean, y_std) -> float:
    """The factor ``s`` for which ``s * y_std`` has the least :func:`miscalibration_area`.

    Errors with heavier tails than a Gaussian's cannot match every interval
    with one factor; this one balances the coverage over all levels rather
    than the likelihood (searched on a log grid from 1/20 to 20).
    """
    scales = np.geomspace(0.05, 20.0, 241)
    z = np.abs(_z(y_true, y_mean, y_std))
    areas = [miscalibration_area(z, 0.0, scale) for scale in scales]
    return float(scales[int(np.argmin(areas))])


def combined_std(y_std, scale: float, noise_std: float = 0.0) -> np.ndarray:
    """The recalibrated spread ``sqrt((scale * y_std)² + noise_std²)``."""
    return np.hypot(scale * np.asarray(y_std, dtype=float), noise_std)


def fit_scale_and_noise(y_true, y_mean, y_std, method: str = "coverage") -> tuple[float, float]:
    """``(scale, noise_std)`` for :func:`combined_std`, by ``method`` on held-out errors.

    A deep ensemble's spread measures where its members disagree, not the
    error they share (the targets' own noise, what every member misses alike),
    so rows with a small spread have heavier-tailed errors than one factor can
    cover. A constant ``noise_std`` added in quadrature is that shared part.
    ``method="likelihood"`` maximises the Gaussian likelihood (L-BFGS on the
    logarithms of both); ``"coverage"`` minimises :func:`miscalibration_area`
    on a grid (scales from 1/20 to 20; ``noise_std`` 0 or from 1/100 to 10
    times the median absolute error).
    """
    y_true, y_mean, y_std = _flat(y_true, y_mean, y_std)
    error_size = max(float(np.median(np.abs(y_true - y_mean))), np.finfo(float).tiny)
    if method == "likelihood":

        def nll(log_params: np.ndarray) -> float:
            scale, noise_std = np.exp(log_params)
            return gaussian_nll(y_true, y_mean, combined_std(y_std, scale, noise_std))

        spread = y_std > 0  # rows of zero spread leave the scale free; the noise covers them
        start_scale = (
            fit_std_scale(y_true[spread], y_mean[spread], y_std[spread]) if any(spread) else 1.0
        )
        start = np.log(np.maximum([start_scale, 0.1 * error_size], np.finfo(float).tiny))
        scale, noise_std = np.exp(minimize(nll, start, method="L-BFGS-B").x)
        return float(scale), float(noise_std)
    z_scales = np.geomspace(0.05, 20.0, 81)
    noise_stds = np.concatenate([[0.0], np.geomspace(0.01, 10.0, 40) * error_size])
    areas = [[miscalibration_area(y_true, y_mean, combined_std(y_std, scale, noise_std))
              for noise_std in noise_stds] for scale in z_scales]  # fmt: skip
    best_scale, best_noise = np.unravel_index(np.argmin(areas), np.shape(areas))
    return float(z_scales[best_scale]), float(noise_stds[best_noise])


def calibration_curve(
    y_true, y_mean, y_std, levels: np.ndarray = LEVELS
) -> tuple[np.ndarray, np.ndarray]:
    """Expected and observed fraction of targets inside each central Gaussian interval.

    Returns
    -------
    expected : ndarray
        The confidence levels ``p``.
    observed : ndarray
        Fraction of ``|y - mean| <= Φ⁻¹((1 + p) / 2) · std``.
    """
    levels = np.array(levels, dtype=float)  # a copy: the caller may change it
    half_widths = norm.ppf((1 + levels) / 2)
    inside = np.abs(_z(y_true, y_mean, y_std))[:, None] <= half_widths
    return levels, inside.mean(axis=0)


def miscalibration_area(y_true, y_mean, y_std) -> float:
    """Mean absolute gap between observed and expected coverage over the levels (0 is ideal)."""
    expected, observed = calibration_curve(y_true, y_mean, y_std)
    return float(np.mean(np.abs(observed - expected)))


def gaussian_nll(y_true, y_mean, y_std) -> float:
    """Mean negative log-likelihood of the targets under ``N(mean, std²)``."""
    y_true, y_mean, y_std = _flat(y_true, y_mean, y_std)
    y_std = np.maximum(y_std, np.finfo(float).tiny)
    return float(
        np.mean(np.log(y_std) + 0.5 * np.log(2 * np.pi) + 0.5 * _z(y_true, y_mean, y_std) ** 2)
    )


def error_std_spearman(y_true, y_mean, y_std) -> float:
    """Spearman rank correlation of the absolute errors with the predicted spread."""
    y_true, y_mean, y_std = _flat(y_true, y_mean, y_std)
    return float(spearmanr(np.abs(y_true - y_mean), y_std).statistic)


def _refuse_zero_spreads_with_errors(y_true, y_mean, y_std, rows: np.ndarray) -> None:
    """Raise where a row of zero spread missed its target: no factor of the spread covers it."""
    missed = (y_std == 0) & (y_true != y_mean)
    if missed.any():
        raise ValueError(
            f"The spread is zero on {missed.sum()} of the {len(rows)} rows the scale is learned "
            f"from, and the prediction missed (the first at training row "
            f"{rows[np.argmax(missed)]}): no factor calibrates a zero spread. "
            "Use noise=True (a noise floor) or method='coverage'."
        )


class RecalibratedRegressor(MetaEstimatorMixin, RegressorMixin, BaseEstimator):
    """A regressor with ``predict(X, return_std=True)`` whose spread is recalibrated on unseen rows.

    The spread becomes ``sqrt((s · σ)² + τ²)`` (:func:`combined_std`), with ``s``
    and, where ``noise=True``, ``τ`` learned from predictions on training rows
    the fitted model did not see. Two ways to get them: ``cv=None`` holds out
    ``held_out_fraction`` of the rows ``fit`` is given (the training fold,
    inside a CV split) and fits ``estimator`` on the rest; ``cv=k`` predicts
    every row out of fold with ``k`` clones and then fits ``estimator`` on all
    rows (``k + 1`` fits; worth it for a cheap model, where the 10 % held out
    leave the scale noisy). Test rows never take part.

    Parameters
    ----------
    estimator : regressor with ``predict(X, return_std=...)``
        E.g. a :class:`~skgnn.ensemble.DeepEnsembleRegressor` or a Pipeline
        ending in :class:`~skgnn.baselines.RandomForestWithStd`.
    held_out_fraction : float in (0, 1), default=0.1
        Used where ``cv`` is None.
    method : {"likelihood", "coverage"}, default="likelihood"
        The parameters that maximise the held-out Gaussian likelihood or those
        that best match the coverage of every interval (which suits
        heavy-tailed errors).
    noise : bool, default=False
        Also learn ``τ``, a constant standard deviation added in quadrature:
        the error that the spread misses on every row alike.
    cv : int >= 2 or None, default=None
        Out-of-fold predictions of all rows from this many folds.
    random_state : int, default=0
        Seeds the held-out split or the folds.

    Attributes
    ----------
    estimator_ : the fitted regressor
    std_scale_ : float
        ``s``, the factor applied to its spread.
    noise_std_ : float
        ``τ``; 0.0 where ``noise`` is False.
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict"])],
        "held_out_fraction": [Interval(Real, 0, 1, closed="neither")],
        "method": [StrOptions({"likelihood", "coverage"})],
        "noise": ["boolean"],
        "cv": [Interval(Integral, 2, None, closed="left"), None],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        estimator,
        *,
        held_out_fraction: float = 0.1,
        method: str = "likelihood",
        noise: bool = False,
        cv: int | None = None,
        random_state: int = 0,
    ) -> None:
        self.estimator = estimator
        self.held_out_fraction = held_out_fraction
        self.method = method
        self.noise = noise
        self.cv = cv
        self.random_state = random_state

    def fit(self, X, y, **fit_params) -> RecalibratedRegressor:
        """Fit the estimator and the spread's parameters on predictions it did not train on.

        Returns
        -------
        self : RecalibratedRegressor
        """
        self._validate_params()
        if y is None:
            raise ValueError(
                "RecalibratedRegressor requires y to be passed, but the target y is None."
            )
        X, y = indexable(X, y)  # one length; sparse and array-likes made indexable by rows
        y = check_array(y, ensure_2d=False, dtype="numeric", input_name="y")
        if y.ndim > 1 and y.shape[1] != 1:
            raise ValueError(
                f"RecalibratedRegressor learns one scale for one target; y has shape {y.shape}. "
                "Recalibrate each target's model on its own."
            )
        y = column_or_1d(y, warn=True)
        if self.cv is None:
            estimator, rows, mean, std = self._fit_held_out(X, y, fit_params)
        else:
            rows, mean, std = self._predict_out_of_fold(X, y, fit_params)
            estimator = clone(self.estimator).fit(X, y, **fit_params)
        targets, mean, std = _flat(y[rows], mean, std)
        if self.noise:
            scale, noise_std = fit_scale_and_noise(targets, mean, std, method=self.method)
        elif self.method == "likelihood":
            _refuse_zero_spreads_with_errors(targets, mean, std, rows)
            scale, noise_std = fit_std_scale(targets, mean, std), 0.0
        else:
            scale, noise_std = fit_coverage_scale(targets, mean, std), 0.0
        self.estimator_, self.std_scale_, self.noise_std_ = estimator, scale, noise_std
        return self

    def _fit_held_out(self, X, y: np.ndarray, fit_params: dict):
        n_held_out = max(2, round(self.held_out_fraction * len(y)))
        if n_held_out > len(y) - 2:
            raise ValueError(
                f"held_out_fraction={self.held_out_fraction} holds out {n_held_out} of "
                f"n_samples={len(y)} rows, leaving too few to fit on."
            )
        order = np.random.default_rng(self.random_state).permutation(len(y))
        train, held_out = np.sort(order[n_held_out:]), np.sort(order[:n_held_out])
        estimator = clone(self.estimator).fit(
            _safe_indexing(X, train), y[train], **_check_method_params(X, fit_params, train)
        )
        mean, std = estimator.predict(_safe_indexing(X, held_out), return_std=True)
        return estimator, held_out, mean, std

    def _predict_out_of_fold(self, X, y: np.ndarray, fit_params: dict):
        if self.cv > len(y):
            raise ValueError(
                f"cv={self.cv} folds need at least {self.cv} rows; got n_samples={len(y)}."
            )
        mean, std = np.empty(len(y)), np.empty(len(y))
        folds = KFold(self.cv, shuffle=True, random_state=self.random_state)
        for train, held_out in folds.split(np.arange(len(y))):
            model = clone(self.estimator).fit(
                _safe_indexing(X, train), y[train], **_check_method_params(X, fit_params, train)
            )
            mean[held_out], std[held_out] = model.predict(
                _safe_indexing(X, held_out), return_std=True
            )
        return np.arange(len(y)), mean, std

    def predict(self, X, return_std: bool = False):
        """The estimator's prediction and, with ``return_std``, its recalibrated spread."""
        check_is_fitted(self)
        if not return_std:
            return self.estimator_.predict(X)
        mean, std = self.estimator_.predict(X, return_std=True)
        return mean, combined_std(std, self.std_scale_, self.noise_std_)

    @property
    def n_features_in_(self) -> int:
        """Features the fitted estimator saw (absent where it takes structures or graphs)."""
        return self.estimator_.n_features_in_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags = get_tags(self.estimator).input_tags
        return tags
