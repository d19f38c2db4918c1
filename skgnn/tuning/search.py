"""Tune one estimator (:func:`tune`), or several with one budget (:func:`compare`)."""

from __future__ import annotations

import numbers
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import optuna
import pandas as pd
from optuna.distributions import BaseDistribution
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from sklearn.base import BaseEstimator
from sklearn.model_selection import check_cv

from .graph_cache import GraphCache
from .objective import CVObjective
from .spaces import params_within
from .studies import FINISHED, bind_study, finished_trials, open_study, study_record

__all__ = ["compare", "summarize", "tune"]


def tune(estimator: BaseEstimator, X: Sequence, y: Sequence,
         space: Mapping[str, BaseDistribution], *, n_trials: int = 20,
         timeout: float | None = None, cv=5,
         scoring: str | Callable = "neg_mean_absolute_error", study_name: str = "skgnn",
         storage: str | None = None, graph_cache: GraphCache | None = None,
         start_from_estimator: bool = True, **study_options) -> optuna.Study:  # fmt: skip
    """Tune ``estimator`` over ``space`` by cross-validation until the study holds ``n_trials``.

    The study lives in memory unless ``storage`` names one, so each call starts
    afresh. With a storage URL (``"sqlite:///study.db"``, PostgreSQL, any
    Optuna RDB URL) the study persists: rerunning the same call resumes it, and
    workers on many machines running the same script share it. Such a study
    records the estimator, ``space``, a fingerprint of ``X`` and ``y``, the CV
    and the scoring it tunes; resuming it with any of them changed raises
    :class:`~skgnn.exceptions.StudyMismatchError` before the study changes.

    ``n_trials`` counts the finished (complete or pruned) trials of the whole
    study: a resumed run, or several workers on one storage, stop together
    once the study holds that many. The first trial evaluates the estimator's
    own settings (those ``space`` can draw), so the search starts from them
    and the defaults compete in the same CV as every other trial.

    Parameters
    ----------
    estimator : estimator or Pipeline
        A pipeline starting with a :class:`~skgnn.CrystalGraphTransformer` gets
        its graphs from ``graph_cache``.
    X, y : structures and targets
    space : mapping of parameter name to Optuna distribution
        E.g. :func:`~skgnn.tuning.cgcnn_space`.
    n_trials : int, default=20
    timeout : float or None
        Seconds this call may run.
    cv : int or CV splitter, default=5
        As in ``cross_val_score``: an int gives stratified folds for a classifier.
    scoring : str or callable, default="neg_mean_absolute_error"
    study_name : str, default="skgnn"
    storage : str or None, default=None
        ``None`` keeps the study in memory; a URL persists it (see above).
    graph_cache : GraphCache or None
        Share one between calls on the same ``X`` to reuse graphs across studies.
    start_from_estimator : bool, default=True
        Queue the estimator's own parameter values as the first trial.
    **study_options
        Passed to :func:`~skgnn.tuning.open_study` (``sampler_seed``, ``pruner``,
        ``heartbeat_interval``, ``grace_period``).

    Returns
    -------
    optuna.Study

    Raises
    ------
    StudyMismatchError
        ``storage`` holds a study named ``study_name`` made for something else.
    StudyStorageError
        ``storage`` cannot be opened.
    """
    objective = CVObjective(estimator, X, y, space, cv=cv, scoring=scoring, graph_cache=graph_cache)
    record = None
    if storage is not None:  # objective.cv: checked, so one-shot folds are not consumed twice
        record = study_record(estimator, X, y, space, cv=objective.cv, scoring=scoring)
    study = open_study(study_name, storage, **study_options)
    if record is not None:
        bind_study(study, record, storage)
    if start_from_estimator:
        # skip_if_exists: a resumed run, or a second worker, does not queue it again
        study.enqueue_trial(params_within(space, estimator), skip_if_exists=True)
    remaining = n_trials - finished_trials(study)
    if remaining > 0:
        stop_at_total = MaxTrialsCallback(n_trials, states=FINISHED)
        study.optimize(objective, n_trials=remaining, timeout=timeout, callbacks=[stop_at_total])
    return study


def summarize(name: str, study: optuna.Study, seconds: float | None = None) -> dict[str, Any]:
    """One row of :func:`compare`'s table: best params, CV score ± std, trial counts, time."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
    best = study.best_trial
    folds = np.asarray(best.user_attrs.get("fold_scores", [best.value]))
    return {
        "model": name,
        "cv_score": float(folds.mean()),
        "cv_std": float(folds.std()),
        "complete": len(complete),
        "pruned": len(pruned),
        "seconds": seconds
        if seconds is not None
        else float(sum(t.user_attrs.get("seconds", 0.0) for t in complete + pruned)),
        "best_params": best.params,
    }


def compare(models: Mapping[str, tuple[BaseEstimator, Mapping[str, BaseDistribution]]],
            X: Sequence, y: Sequence, *, n_trials: int = 20, timeout: float | None = None,
            cv=5, scoring: str | Callable = "neg_mean_absolute_error",
            storage: str | None = None, study_prefix: str = "compare",
            **study_options) -> pd.DataFrame:  # fmt: skip
    """Tune several lines with the same folds and the same budget; one row per line.

    Parameters
    ----------
    models : mapping of name to (estimator, space)
    X, y : structures and targets
    n_trials, timeout : the budget, identical for every line
    cv, scoring : as in :func:`tune`
    storage : str or None, default=None
        In memory by default; with a URL each line's study
        (``f"{study_prefix}-{name}"``) persists as in :func:`tune`.
    study_prefix : str, default="compare"
    **study_options
        Passed to :func:`tune`.

    Returns
    -------
    pandas.DataFrame
        Columns model, cv_score, cv_std, complete, pruned, seconds, best_params.
    """
    if cv is not None and not isinstance(cv, numbers.Integral):
        cv = check_cv(cv)  # a one-shot iterable of folds serves every line
    rows = []
    cache = GraphCache(X)
    for name, (estimator, space) in models.items():
        start = time.perf_counter()
        study = tune(estimator, X, y, space, n_trials=n_trials, timeout=timeout, cv=cv,
                     scoring=scoring, study_name=f"{study_prefix}-{name}", storage=storage,
                     graph_cache=cache, **study_options)  # fmt: skip
        rows.append(summarize(name, study, time.perf_counter() - start))
    return pd.DataFrame(rows)
