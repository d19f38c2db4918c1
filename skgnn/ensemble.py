"""A deep ensemble: the same regressor fitted with several seeds, its spread as the uncertainty."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator, MetaEstimatorMixin, RegressorMixin, clone
from sklearn.utils import get_tags
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import check_is_fitted


def _seed_names(estimator: BaseEstimator) -> list[str]:
    """The parameters that seed ``estimator``: its ``random_state`` and its steps'."""
    return [
        k for k in estimator.get_params() if k == "random_state" or k.endswith("__random_state")
    ]


def _seeded(estimator: BaseEstimator, seed: int) -> BaseEstimator:
    """A clone of ``estimator`` with every ``random_state`` it has (nested ones too) set."""
    member = clone(estimator)
    return member.set_params(**dict.fromkeys(_seed_names(member), seed))


def _fit_member(member: BaseEstimator, X, y, fit_params: dict) -> BaseEstimator:
    return member.fit(X, y, **fit_params)


class DeepEnsembleRegressor(MetaEstimatorMixin, RegressorMixin, BaseEstimator):
    """Mean and spread of ``n_estimators`` copies of a regressor fitted with different seeds.

    The deep ensemble of Lakshminarayanan et al. (NeurIPS 2017) without the
    variance head: each member is ``estimator`` cloned and seeded
    ``random_state + i``; ``predict`` returns their mean and, with
    ``return_std=True``, their standard deviation, as scikit-learn's
    ``GaussianProcessRegressor`` and ``BayesianRidge`` spell it (a Pipeline's
    ``predict(X, return_std=True)`` passes it on). Members are fitted in
    parallel through joblib (``n_jobs``): each process worker gets the
    machine's cores divided by ``n_jobs`` as torch threads, so ``n_jobs=2``
    on two cores trains two members at a time, one thread each.

    Parameters
    ----------
    estimator : regressor, default=None
        What to ensemble; ``None`` means ``CGCNNRegressor()``, which takes
        crystal graphs: put a :class:`~skgnn.CrystalGraphTransformer` first.
    n_estimators : int, default=5
    n_jobs : int or None, default=None
        Members fitted at once (joblib; ``-1`` for all cores).
    random_state : int, default=0
        Seed of the first member; the others follow (``random_state + i``), so
        ensembles to be compared as independent need seeds at least
        ``n_estimators`` apart.

    Attributes
    ----------
    estimators_ : list of fitted regressors

    See Also
    --------
    skgnn.calibration.RecalibratedRegressor : rescales the spread on held-out training rows.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from skgnn import CGCNNRegressor, CrystalGraphTransformer
    >>> from skgnn.ensemble import DeepEnsembleRegressor
    >>> pipe = make_pipeline(CrystalGraphTransformer(),
    ...                      DeepEnsembleRegressor(CGCNNRegressor(max_epochs=30), n_jobs=2))
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict"]), None],
        "n_estimators": [Interval(Integral, 2, None, closed="left")],
        "n_jobs": [Integral, None],
        "random_state": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        estimator: BaseEstimator | None = None,
        *,
        n_estimators: int = 5,
        n_jobs: int | None = None,
        random_state: int = 0,
    ) -> None:
        self.estimator = estimator
        self.n_estimators = n_estimators
        self.n_jobs = n_jobs
        self.random_state = random_state

    def fit(self, X, y, **fit_params) -> DeepEnsembleRegressor:
        """Fit every member on ``X, y``.

        Returns
        -------
        self : DeepEnsembleRegressor
        """
        self._validate_params()
        base = self._base_estimator()
        if not _seed_names(base):
            raise ValueError(
                f"{type(base).__name__} has no random_state parameter (nor do its steps), so "
                "every member would be the same model and the spread zero."
            )
        members = [_seeded(base, self.random_state + i) for i in range(self.n_estimators)]
        self.estimators_ = Parallel(n_jobs=self.n_jobs)(
            delayed(_fit_member)(member, X, y, fit_params) for member in members
        )
        return self

    def _base_estimator(self) -> BaseEstimator:
        if self.estimator is not None:
            return self.estimator
        from .regressor import CGCNNRegressor

        return CGCNNRegressor()

    def predict(self, X, return_std: bool = False):
        """Mean prediction of the members, and their spread.

        Parameters
        ----------
        X : as the members take it
        return_std : bool, default=False
            Also return the standard deviation of each prediction.

        Returns
        -------
        y_mean : ndarray of shape (n_samples,) or (n_samples, n_targets)
        y_std : ndarray of the same shape, only when ``return_std``
            The members' sample standard deviation (``ddof=1``).
        """
        check_is_fitted(self)
        predictions = np.stack([member.predict(X) for member in self.estimators_])
        mean = predictions.mean(axis=0)
        if not return_std:
            return mean
        return mean, predictions.std(axis=0, ddof=1)  # the members are a sample of seeds

    @property
    def n_features_in_(self) -> int:
        """Features the fitted members saw (absent where they take structures or graphs)."""
        return self.estimators_[0].n_features_in_

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags = get_tags(self._base_estimator()).input_tags
        tags.non_deterministic = False
        return tags
