"""Calibrated uncertainty: rescaling a predicted spread on held-out rows, and how to score it."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from scipy.stats import norm, spearmanr
from sklearn.base import BaseEstimator, MetaEstimatorMixin, RegressorMixin, clone
from sklearn.utils import _safe_indexing
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

#: Confidence levels at which calibration curves are read (central intervals).
LEVELS = np.linspace(0.01, 0.99, 99)


def _z(y_true, y_mean, y_std) -> np.ndarray:
    y_std = np.maximum(np.asarray(y_std, dtype=float), np.finfo(float).tiny)
    return (np.asarray(y_true, dtype=float) - np.asarray(y_mean, dtype=float)) / y_std


def fit_std_scale(y_true, y_mean, y_std) -> float:
    """The factor ``s`` for which ``s * y_std`` maximises the Gaussian likelihood of the errors.

    ``s² = mean(((y - mean) / std)²)``: the held-out errors then have unit
    variance in units of the spread.
    """
    return float(np.sqrt(np.mean(_z(y_true, y_mean, y_std) ** 2)))


def fit_coverage_scale(y_true, y_mean, y_std) -> float:
    """The factor ``s`` for which ``s * y_std`` has the least :func:`miscalibration_area`.

    Errors with heavier tails than a Gaussian's cannot match every interval
    with one factor; this one balances the coverage over all levels rather
    than the likelihood (searched on a log grid from 1/20 to 20).
    """
    scales = np.geomspace(0.05, 20.0, 241)
    z = np.abs(_z(y_true, y_mean, y_std)).ravel()
    areas = [miscalibration_area(z, 0.0, scale) for scale in scales]
    return float(scales[int(np.argmin(areas))])


def calibration_curve(y_true, y_mean, y_std, levels: np.ndarray = LEVELS):
    """Expected and observed fraction of targets inside each central Gaussian interval.

    Returns
    -------
    expected : ndarray
        The confidence levels ``p``.
    observed : ndarray
        Fraction of ``|y - mean| <= Φ⁻¹((1 + p) / 2) · std``.
    """
    half_widths = norm.ppf((1 + levels) / 2)
    inside = np.abs(_z(y_true, y_mean, y_std)).ravel()[:, None] <= half_widths
    return levels, inside.mean(axis=0)


def miscalibration_area(y_true, y_mean, y_std) -> float:
    """Mean absolute gap between observed and expected coverage over the levels (0 is ideal)."""
    expected, observed = calibration_curve(y_true, y_mean, y_std)
    return float(np.mean(np.abs(observed - expected)))


def gaussian_nll(y_true, y_mean, y_std) -> float:
    """Mean negative log-likelihood of the targets under ``N(mean, std²)``."""
    y_std = np.maximum(np.asarray(y_std, dtype=float), np.finfo(float).tiny)
    return float(
        np.mean(np.log(y_std) + 0.5 * np.log(2 * np.pi) + 0.5 * _z(y_true, y_mean, y_std) ** 2)
    )


def error_std_spearman(y_true, y_mean, y_std) -> float:
    """Spearman rank correlation of the absolute errors with the predicted spread."""
    errors = np.abs(np.asarray(y_true, dtype=float) - np.asarray(y_mean, dtype=float))
    return float(spearmanr(errors.ravel(), np.asarray(y_std, dtype=float).ravel()).statistic)


class RecalibratedRegressor(MetaEstimatorMixin, RegressorMixin, BaseEstimator):
    """A regressor with ``predict(X, return_std=True)`` whose spread is rescaled on held-out rows.

    ``fit`` holds out ``held_out_fraction`` of the rows it is given (the
    training fold, inside a CV split), fits ``estimator`` on the rest, and
    learns one factor for the spread from the held-out rows. Test rows never
    take part.

    Parameters
    ----------
    estimator : regressor with ``predict(X, return_std=...)``
        E.g. a :class:`~skgnn.ensemble.DeepEnsembleRegressor` or a Pipeline
        ending in :class:`~skgnn.baselines.RandomForestWithStd`.
    held_out_fraction : float in (0, 1), default=0.1
    method : {"likelihood", "coverage"}, default="likelihood"
        The factor that maximises the held-out Gaussian likelihood
        (:func:`fit_std_scale`) or the one that best matches the coverage of
        every interval (:func:`fit_coverage_scale`, which suits heavy-tailed
        errors).
    random_state : int, default=0
        Seeds the held-out split.

    Attributes
    ----------
    estimator_ : the fitted regressor
    std_scale_ : float
        Factor applied to its spread.
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict"])],
        "held_out_fraction": [Interval(Real, 0, 1, closed="neither")],
        "method": [StrOptions({"likelihood", "coverage"})],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        estimator,
        *,
        held_out_fraction: float = 0.1,
        method: str = "likelihood",
        random_state: int = 0,
    ) -> None:
        self.estimator = estimator
        self.held_out_fraction = held_out_fraction
        self.method = method
        self.random_state = random_state

    def fit(self, X, y, **fit_params) -> RecalibratedRegressor:
        """Fit on all but the held-out rows, then the spread's scale on those.

        Returns
        -------
        self : RecalibratedRegressor
        """
        self._validate_params()
        y = np.asarray(y)
        n_held_out = max(2, round(self.held_out_fraction * len(y)))
        if n_held_out > len(y) - 2:
            raise ValueError(
                f"held_out_fraction={self.held_out_fraction} holds out {n_held_out} of "
                f"{len(y)} rows, leaving too few to fit on."
            )
        order = np.random.default_rng(self.random_state).permutation(len(y))
        train, held_out = np.sort(order[n_held_out:]), np.sort(order[:n_held_out])
        self.estimator_ = clone(self.estimator).fit(
            _safe_indexing(X, train), y[train], **fit_params
        )
        mean, std = self.estimator_.predict(_safe_indexing(X, held_out), return_std=True)
        fit_scale = fit_std_scale if self.method == "likelihood" else fit_coverage_scale
        self.std_scale_ = fit_scale(y[held_out], mean, std)
        return self

    def predict(self, X, return_std: bool = False):
        """The estimator's prediction and, with ``return_std``, its rescaled spread."""
        check_is_fitted(self)
        if not return_std:
            return self.estimator_.predict(X)
        mean, std = self.estimator_.predict(X, return_std=True)
        return mean, std * self.std_scale_
