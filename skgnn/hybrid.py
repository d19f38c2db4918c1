"""A hybrid of the two lines: a model's out-of-fold outputs as features beside matminer's."""

from __future__ import annotations

from numbers import Integral

import numpy as np
from sklearn.base import (
    BaseEstimator,
    MetaEstimatorMixin,
    RegressorMixin,
    TransformerMixin,
    clone,
)
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.model_selection import GridSearchCV, KFold, check_cv, cross_val_predict
from sklearn.pipeline import FeatureUnion, Pipeline, make_pipeline
from sklearn.utils import _safe_indexing, get_tags, indexable
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, check_X_y, validate_data

from .baselines import STRONG_COMPOSITION, STRONG_STRUCTURE, StructureFeaturizer


class CrossFittedFeatures(MetaEstimatorMixin, TransformerMixin, BaseEstimator):
    """An estimator's outputs as features, out of fold for the rows it learns from.

    A feature made by a model that saw a row's target leaks that target into
    any model stacked on it. As scikit-learn's ``StackingRegressor`` builds its
    training features and ``TargetEncoder`` encodes its training rows,
    ``fit_transform`` returns, for each training row, the output of a clone
    fitted on the other folds (``cross_val_predict``); ``transform`` of new
    rows uses a clone fitted on all training rows. In a Pipeline, ``fit``
    calls ``fit_transform``, so the downstream model never sees an in-sample
    output.

    Parameters
    ----------
    estimator : estimator
        E.g. ``make_pipeline(CrystalGraphTransformer(), CGCNNRegressor())``.
    method : {"predict", "transform"}, default="predict"
        Which output becomes the features: predictions, or the estimator's
        ``transform``. Predictions are in the target's units whichever fold's
        model made them; learned embeddings are not comparable across the
        folds' networks (their coordinates are arbitrary), so ``"transform"``
        suits estimators whose outputs have a fixed meaning (e.g. a fitted
        featurizer or a PCA), not a network's embeddings.
    cv : int or CV splitter, default=5
        Inner folds for the out-of-fold outputs (shuffled ``KFold`` seeded 0 for an int).
    n_jobs : int or None, default=None
        Folds fitted at once (``cross_val_predict``'s).

    Attributes
    ----------
    estimator_ : the estimator fitted on all training rows, for ``transform``
    n_features_out_ : int
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit"])],
        "method": [StrOptions({"predict", "transform"})],
        "cv": ["cv_object"],
        "n_jobs": [Integral, None],
    }

    def __init__(self, estimator, *, method: str = "predict", cv=5, n_jobs=None) -> None:
        self.estimator = estimator
        self.method = method
        self.cv = cv
        self.n_jobs = n_jobs

    def fit(self, X, y, **fit_params) -> CrossFittedFeatures:
        """Fit the estimator on all rows (for ``transform`` of new rows)."""
        self._validate_params()
        X, y = indexable(X, y)  # one length; sparse and array-likes made indexable by rows
        self.estimator_ = clone(self.estimator).fit(X, y, **fit_params)
        first_row = self._output(self.estimator_, _safe_indexing(X, [0]))
        self.n_features_out_ = self._as_table(first_row).shape[1]
        return self

    def fit_transform(self, X, y=None, **fit_params) -> np.ndarray:
        """Fit on all rows, and return each row's output from a model that never saw it."""
        self.fit(X, y, **fit_params)
        cv = self.cv
        if isinstance(cv, Integral):
            cv = KFold(cv, shuffle=True, random_state=0)
        out_of_fold = cross_val_predict(
            self.estimator, X, y, cv=check_cv(cv), method=self.method, n_jobs=self.n_jobs,
            params=fit_params or None,
        )  # fmt: skip
        return self._as_table(out_of_fold)

    def transform(self, X) -> np.ndarray:
        """Outputs of the model fitted on all training rows."""
        check_is_fitted(self)
        return self._as_table(self._output(self.estimator_, X))

    def _output(self, estimator, X):
        return getattr(estimator, self.method)(X)

    @staticmethod
    def _as_table(output) -> np.ndarray:
        output = np.asarray(output, dtype=float)
        return output.reshape(len(output), -1)

    @property
    def n_features_in_(self) -> int:
        """Features the fitted estimator saw (absent where it takes structures or graphs)."""
        return self.estimator_.n_features_in_

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        check_is_fitted(self)
        return np.array([f"{self.method}_{i}" for i in range(self.n_features_out_)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags = get_tags(self.estimator).input_tags
        return tags


class ResidualRegressor(MetaEstimatorMixin, RegressorMixin, BaseEstimator):
    """A regressor that learns what a prior prediction, one column of ``X``, misses.

    ``fit`` fits the estimator to ``y - X[:, prior_column]`` and ``predict``
    returns ``X[:, prior_column]`` plus its output: boosting that starts from
    a network's prediction (LightGBM's ``init_score``, XGBoost's
    ``base_margin``) rather than rebuilding it from splits. Trees that must
    rebuild an accurate prediction from one feature lose accuracy to its
    binning (255 bins in ``HistGradientBoostingRegressor``) and to their
    steps; a correction close to zero costs little. The prior column stays a
    feature, so the correction may depend on it.

    Parameters
    ----------
    estimator : regressor
    prior_column : int or None, default=0
        Position of the prior prediction among the columns of ``X`` (0: the
        first transformer of a ``FeatureUnion``). ``None``: no prior, the
        estimator learns ``y`` itself, so that a search over this parameter
        chooses between the two (``make_hybrid(residual="auto")``).

    Attributes
    ----------
    estimator_ : the estimator fitted to the residuals
    n_features_in_ : int
    """

    _parameter_constraints: dict = {
        "estimator": [HasMethods(["fit", "predict"])],
        "prior_column": [Interval(Integral, 0, None, closed="left"), None],
    }

    def __init__(self, estimator, *, prior_column: int | None = 0) -> None:
        self.estimator = estimator
        self.prior_column = prior_column

    def fit(self, X, y) -> ResidualRegressor:
        """Fit the estimator to what the prior column misses of ``y``."""
        self._validate_params()
        table, y = check_X_y(X, y, ensure_all_finite=self._finite_rule(), y_numeric=True)
        estimator = clone(self.estimator).fit(X, y - self._prior(table))
        # fitted attributes only once nothing can fail: a refused refit leaves the last fit
        validate_data(self, X, skip_check_array=True)
        self.estimator_ = estimator
        return self

    def predict(self, X) -> np.ndarray:
        """The prior column plus the learned correction."""
        check_is_fitted(self)
        table = validate_data(self, X, reset=False, ensure_all_finite=self._finite_rule())
        return self._prior(table) + self.estimator_.predict(X)

    def _finite_rule(self) -> bool | str:
        # NaN in the other columns is the estimator's to take or refuse
        return "allow-nan" if get_tags(self.estimator).input_tags.allow_nan else True

    def _prior(self, table: np.ndarray) -> np.ndarray | float:
        if self.prior_column is None:
            return 0.0
        if self.prior_column >= table.shape[1]:
            raise ValueError(
                f"prior_column={self.prior_column}, but X has {table.shape[1]} columns"
            )
        prior = table[:, self.prior_column].astype(float)
        if not np.isfinite(prior).all():
            row = int(np.flatnonzero(~np.isfinite(prior))[0])
            raise ValueError(
                f"the prior prediction (column {self.prior_column}) of row {row} is "
                f"{prior[row]}: it must be finite"
            )
        return prior

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = get_tags(self.estimator).input_tags.allow_nan
        return tags


def make_hybrid(
    graph_model: BaseEstimator | None = None,
    *,
    cv: int = 5,
    max_iter: int = 500,
    learning_rate: float = 0.05,
    random_state: int | None = None,
    residual: bool | str = False,
) -> Pipeline:
    """Gradient boosting on matminer features plus a graph network's out-of-fold predictions.

    The tabular features are those of :func:`~skgnn.baselines.make_strong_tabular`;
    the graph network (``None``: the default CGCNN after a
    :class:`~skgnn.CrystalGraphTransformer`) adds one column, its prediction,
    cross-fitted with ``cv`` inner folds on the training rows
    (:class:`CrossFittedFeatures`), so the booster learns how far to trust it
    from predictions as good as those it will get on new structures. The
    network trains ``cv + 1`` times per ``fit``. With ``residual=True`` the
    booster learns what the network's prediction misses
    (:class:`ResidualRegressor`) instead of the target: it keeps the
    network's accuracy where the network is the stronger line (where the
    plain booster loses some), and costs accuracy where it is the weaker. With
    ``residual="auto"`` ``cv``-fold cross-validation on the training rows'
    cross-fitted features chooses between the two (``GridSearchCV`` over
    ``prior_column``; mean absolute error), so the choice, too, sees
    training rows only.
    """
    if residual not in (True, False, "auto"):
        raise ValueError(f"residual must be True, False or 'auto'; got {residual!r}")
    if graph_model is None:
        from .regressor import CGCNNRegressor
        from .transformer import CrystalGraphTransformer

        graph_model = make_pipeline(CrystalGraphTransformer(), CGCNNRegressor(random_state=0))
    features = FeatureUnion([
        ("graph_network", CrossFittedFeatures(graph_model, cv=cv)),
        ("matminer", StructureFeaturizer(composition_featurizers=STRONG_COMPOSITION,
                                         structure_featurizers=STRONG_STRUCTURE)),
    ])  # fmt: skip
    booster = HistGradientBoostingRegressor(
        loss="absolute_error", max_iter=max_iter, learning_rate=learning_rate,
        min_samples_leaf=10, random_state=random_state,
    )  # fmt: skip
    if residual == "auto":
        booster = GridSearchCV(
            ResidualRegressor(booster), {"prior_column": [None, 0]},
            scoring="neg_mean_absolute_error", cv=KFold(cv, shuffle=True, random_state=0),
        )  # fmt: skip
    elif residual:
        booster = ResidualRegressor(booster, prior_column=0)  # the graph network's column
    return Pipeline([("features", features), ("model", booster)])
