"""The Optuna objective: an estimator's cross-validated score under a trial's parameters."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from sklearn.base import BaseEstimator, clone, is_classifier
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv
from sklearn.utils import _safe_indexing

from .graph_cache import GraphCache, split_graph_stage
from .spaces import suggest

__all__ = ["CVObjective"]


class CVObjective:
    """Optuna objective: mean CV score of ``estimator`` with the trial's parameters.

    The running mean is reported after every fold, so a pruner can stop a poor
    trial before its last fold. Each trial records its fold scores, wall time
    and the worker (host:pid) that ran it as user attributes.

    Parameters
    ----------
    estimator : estimator or Pipeline
        A pipeline starting with a :class:`~skgnn.CrystalGraphTransformer`
        gets its graphs from ``graph_cache``.
    X, y : structures (or any input of ``estimator``) and targets
    space : mapping of str to optuna distribution
    cv : int or CV splitter, default=5
        Checked as ``cross_val_score`` does: an int gives stratified folds for a
        classifier, plain ``KFold`` otherwise.
    scoring : str or callable, default="neg_mean_absolute_error"
        Greater is better.
    graph_cache : GraphCache or None
        Shared graphs of ``X``; a new cache by default.
    """

    def __init__(self, estimator: BaseEstimator, X: Sequence, y: Sequence,
                 space: Mapping[str, BaseDistribution], *, cv=5,
                 scoring: str | Callable = "neg_mean_absolute_error",
                 graph_cache: GraphCache | None = None) -> None:  # fmt: skip
        self.estimator = estimator
        self.X = X
        self.y = np.asarray(y)
        self.space = space
        self.cv = check_cv(cv, self.y, classifier=is_classifier(estimator))
        self.scorer = check_scoring(estimator, scoring=scoring)
        self.graph_cache = graph_cache or GraphCache(X)

    def __call__(self, trial: optuna.Trial) -> float:
        start = time.perf_counter()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        estimator = clone(self.estimator).set_params(**suggest(trial, self.space))
        transformer, model = split_graph_stage(estimator)
        X = self.X if transformer is None else self.graph_cache.graphs(transformer)
        scores = []
        for fold, (train, test) in enumerate(self.cv.split(np.zeros(len(self.y)), self.y)):
            fitted = clone(model).fit(_safe_indexing(X, train), self.y[train])
            scores.append(float(self.scorer(fitted, _safe_indexing(X, test), self.y[test])))
            trial.report(float(np.mean(scores)), fold)
            trial.set_user_attr("fold_scores", scores)
            trial.set_user_attr("seconds", time.perf_counter() - start)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {fold}")
        return float(np.mean(scores))
