"""Optuna tuning of skgnn pipelines: search spaces, fold-wise pruning, persistent studies.

A study lives in an Optuna storage: an SQLite file by default, so a killed run
resumes where it stopped, or any RDB URL (PostgreSQL) so that many processes on
many machines work on one study, each running the same script. Crystal graphs
are built once per set of transformer parameters and shared by every fold and
every trial that uses them: the transformer is stateless, so graphing all rows
before the split fits nothing on test rows.
"""

from __future__ import annotations

import inspect
import os
import socket
import time
import warnings
from collections.abc import Mapping

import numpy as np
import optuna
import pandas as pd
import sqlalchemy.exc
import torch
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import RDBStorage
from optuna.study import MaxTrialsCallback
from optuna.trial import TrialState
from sklearn.base import clone
from sklearn.metrics import check_scoring
from sklearn.model_selection import check_cv
from sklearn.pipeline import Pipeline
from sklearn.utils import _safe_indexing

from .graphs import CrystalGraphs
from .transformer import CrystalGraphTransformer

try:  # Optuna >= 4.9 renamed it
    from optuna.storages import RetryHeartbeatStaleTrialCallback as RetryStaleTrial
except ImportError:
    from optuna.storages import RetryFailedTrialCallback as RetryStaleTrial

DEFAULT_STORAGE = "sqlite:///skgnn-tuning.db"
_SCHEMA_ATTEMPTS = 5
_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def cgcnn_space(
    transformer: str = "crystalgraphtransformer", net: str = "cgcnnregressor"
) -> dict[str, BaseDistribution]:
    """Search space of a ``make_pipeline(CrystalGraphTransformer(), CGCNNRegressor())``.

    Keys are pipeline parameter names; add, drop or replace entries freely.
    """
    return {
        f"{transformer}__cutoff": FloatDistribution(5.0, 9.0, step=0.5),
        f"{transformer}__max_neighbors": IntDistribution(8, 16, step=2),
        f"{net}__module__atom_fea_len": CategoricalDistribution([32, 64, 96]),
        f"{net}__module__n_conv": IntDistribution(2, 5),
        f"{net}__module__h_fea_len": CategoricalDistribution([32, 64, 128]),
        f"{net}__lr": FloatDistribution(3e-4, 1e-2, log=True),
        f"{net}__optimizer__weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
        f"{net}__batch_size": CategoricalDistribution([32, 64, 128]),
        f"{net}__max_epochs": IntDistribution(40, 200, step=20),
    }


def rf_scm_magpie_space() -> dict[str, BaseDistribution]:
    """Search space of :func:`skgnn.baselines.make_rf_scm_magpie`."""
    return {
        "model__n_estimators": IntDistribution(100, 500, step=100),
        "model__max_features": CategoricalDistribution([0.1, 0.3, 0.5, 1.0]),
        "model__min_samples_leaf": IntDistribution(1, 8),
    }


def strong_tabular_space() -> dict[str, BaseDistribution]:
    """Search space of :func:`skgnn.baselines.make_strong_tabular`."""
    return {
        "model__learning_rate": FloatDistribution(0.01, 0.2, log=True),
        "model__max_iter": IntDistribution(200, 1000, step=100),
        "model__min_samples_leaf": IntDistribution(5, 40),
        "model__max_leaf_nodes": IntDistribution(15, 63),
        "model__l2_regularization": FloatDistribution(1e-6, 10.0, log=True),
    }


def suggest(trial: optuna.Trial, space: Mapping[str, BaseDistribution]) -> dict:
    """Draw one value per parameter of ``space`` through the trial's public API."""
    params = {}
    for name, dist in space.items():
        if isinstance(dist, FloatDistribution):
            params[name] = trial.suggest_float(
                name, dist.low, dist.high, log=dist.log, step=dist.step
            )
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(
                name, dist.low, dist.high, log=dist.log, step=dist.step
            )
        elif isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, dist.choices)
        else:
            raise TypeError(f"Unsupported distribution for {name!r}: {dist!r}")
    return params


_UNSET = object()


def params_within(space: Mapping[str, BaseDistribution], estimator) -> dict:
    """The estimator's current values of the parameters of ``space`` that ``space`` can draw."""
    current = estimator.get_params()
    within = {}
    for name, dist in space.items():
        value = current[name] if name in current else _signature_default(current, name)
        try:
            drawable = value is not _UNSET and dist._contains(dist.to_internal_repr(value))
        except (TypeError, ValueError):  # e.g. a choice missing from a categorical
            drawable = False
        if drawable:
            within[name] = value
    return within


def _signature_default(params: dict, name: str):
    """Default of an argument skorch routes but does not list, e.g. ``net__module__n_conv``.

    skorch's ``get_params`` shows ``module__*`` and ``optimizer__*`` arguments
    only once set; until then they are the defaults of the module's or the
    optimizer's signature.
    """
    owner, _, argument = name.rpartition("__")
    target = params.get(owner)
    if not (
        isinstance(target, type) and issubclass(target, (torch.nn.Module, torch.optim.Optimizer))
    ):
        return _UNSET
    parameter = inspect.signature(target).parameters.get(argument)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return _UNSET
    return parameter.default


class GraphCache:
    """Crystal graphs of one ``X``, kept per set of transformer parameters.

    Parameters
    ----------
    X : sequence of structures
    max_entries : int, default=4
        Graph sets kept at once; the least recently used goes first.
    """

    def __init__(self, X, max_entries: int = 4) -> None:
        self.X = X
        self.max_entries = max_entries
        self._entries: dict[str, tuple[CrystalGraphs, float]] = {}
        self.hits = 0
        self.seconds_saved = 0.0

    def graphs(self, transformer: CrystalGraphTransformer) -> CrystalGraphs:
        key = repr(sorted(transformer.get_params().items()))
        if key in self._entries:
            graphs, seconds = self._entries.pop(key)
            self.hits += 1
            self.seconds_saved += seconds
        else:
            start = time.perf_counter()
            graphs = clone(transformer).fit_transform(self.X)
            seconds = time.perf_counter() - start
            if len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (graphs, seconds)
        return graphs


def _graph_stage(estimator):
    """Split ``[CrystalGraphTransformer, *rest]`` into the transformer and the rest."""
    if isinstance(estimator, Pipeline) and isinstance(
        estimator.steps[0][1], CrystalGraphTransformer
    ):
        rest = estimator.steps[1:]
        return estimator.steps[0][1], rest[0][1] if len(rest) == 1 else Pipeline(rest)
    return None, estimator


class CVObjective:
    """Optuna objective: mean CV score of ``estimator`` with the trial's parameters.

    The running mean is reported after every fold, so a pruner can stop a poor
    trial before its last fold. Each trial records its fold scores, folds run,
    wall time and the worker (host:pid) that ran it.
    """

    def __init__(self, estimator, X, y, space, *, cv=5, scoring="neg_mean_absolute_error",
                 graph_cache: GraphCache | None = None) -> None:  # fmt: skip
        self.estimator = estimator
        self.X = X
        self.y = np.asarray(y)
        self.space = space
        self.cv = check_cv(cv)
        self.scorer = check_scoring(estimator, scoring=scoring)
        self.graph_cache = graph_cache or GraphCache(X)

    def __call__(self, trial: optuna.Trial) -> float:
        start = time.perf_counter()
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        estimator = clone(self.estimator).set_params(**suggest(trial, self.space))
        transformer, model = _graph_stage(estimator)
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


def open_study(study_name: str, storage: str | None = DEFAULT_STORAGE, *, sampler_seed=None,
               pruner: optuna.pruners.BasePruner | None = None, heartbeat_interval: int = 60,
               grace_period: int | None = None) -> optuna.Study:  # fmt: skip
    """Create or load a maximising study on a persistent storage.

    A worker that dies leaves its trial RUNNING; the heartbeat marks it failed
    after ``grace_period`` seconds and its parameters are tried again once.
    """
    for attempt in range(_SCHEMA_ATTEMPTS):
        try:
            return _create_study(study_name, storage, sampler_seed, pruner,
                                 heartbeat_interval, grace_period)  # fmt: skip
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError):
            # workers starting together on a new database race to create its tables
            # ("already exists", unique violations, a locked SQLite file);
            # the loser finds them made on the next attempt
            if attempt == _SCHEMA_ATTEMPTS - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


def _create_study(study_name, storage, sampler_seed, pruner, heartbeat_interval, grace_period):
    rdb = None
    if storage is not None:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            rdb = RDBStorage(
                storage,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=RetryStaleTrial(max_retry=1),
            )
    return optuna.create_study(
        study_name=study_name,
        storage=rdb,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=sampler_seed),
        pruner=pruner or optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0),
    )


def finished_trials(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=_FINISHED))


def tune(estimator, X, y, space: Mapping[str, BaseDistribution], *, n_trials: int = 20,
         timeout: float | None = None, cv=5, scoring="neg_mean_absolute_error",
         study_name: str = "skgnn", storage: str | None = DEFAULT_STORAGE,
         graph_cache: GraphCache | None = None, start_from_estimator: bool = True,
         **study_options) -> optuna.Study:  # fmt: skip
    """Tune ``estimator`` over ``space`` by cross-validation until the study holds ``n_trials``.

    ``n_trials`` counts the finished (complete or pruned) trials of the whole
    study: a resumed run, or several workers on one storage, stop together
    once the study holds that many. The first trial evaluates the estimator's
    own settings (those ``space`` can draw), so the search starts from them
    and the defaults compete in the same CV as every other trial.

    Parameters
    ----------
    estimator : estimator or Pipeline
        A pipeline starting with a :class:`CrystalGraphTransformer` gets its
        graphs from ``graph_cache``.
    X, y : structures and targets
    space : mapping of parameter name to Optuna distribution
        E.g. :func:`cgcnn_space`.
    n_trials : int, default=20
    timeout : float or None
        Seconds this call may run.
    cv : int or CV splitter, default=5
    scoring : str or callable, default="neg_mean_absolute_error"
    study_name : str, default="skgnn"
    storage : str or None, default="sqlite:///skgnn-tuning.db"
        Any Optuna RDB URL; ``None`` keeps the study in memory.
    graph_cache : GraphCache or None
        Share one between calls on the same ``X`` to reuse graphs across studies.
    start_from_estimator : bool, default=True
        Queue the estimator's own parameter values as the first trial.
    **study_options
        Passed to :func:`open_study` (``sampler_seed``, ``pruner``, ``heartbeat_interval``...).

    Returns
    -------
    optuna.Study
    """
    study = open_study(study_name, storage, **study_options)
    if start_from_estimator:
        # skip_if_exists: a resumed run, or a second worker, does not queue it again
        study.enqueue_trial(params_within(space, estimator), skip_if_exists=True)
    objective = CVObjective(estimator, X, y, space, cv=cv, scoring=scoring, graph_cache=graph_cache)
    remaining = n_trials - finished_trials(study)
    if remaining > 0:
        stop_at_total = MaxTrialsCallback(n_trials, states=_FINISHED)
        study.optimize(objective, n_trials=remaining, timeout=timeout, callbacks=[stop_at_total])
    return study


def summarize(name: str, study: optuna.Study, seconds: float | None = None) -> dict:
    """One row of a comparison table: best params, CV score ± std, trial counts, time."""
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


def compare(models: Mapping[str, tuple], X, y, *, n_trials: int = 20,
            timeout: float | None = None, cv=5, scoring="neg_mean_absolute_error",
            storage: str | None = DEFAULT_STORAGE, study_prefix: str = "compare",
            **study_options) -> pd.DataFrame:  # fmt: skip
    """Tune several lines with the same folds and the same budget; one row per line.

    Parameters
    ----------
    models : mapping of name to (estimator, space)
    n_trials, timeout : the budget, identical for every line

    Returns
    -------
    pandas.DataFrame
        Columns model, cv_score, cv_std, complete, pruned, seconds, best_params.
    """
    cv = check_cv(cv)
    rows = []
    cache = GraphCache(X)
    for name, (estimator, space) in models.items():
        start = time.perf_counter()
        study = tune(estimator, X, y, space, n_trials=n_trials, timeout=timeout, cv=cv,
                     scoring=scoring, study_name=f"{study_prefix}-{name}", storage=storage,
                     graph_cache=cache, **study_options)  # fmt: skip
        rows.append(summarize(name, study, time.perf_counter() - start))
    return pd.DataFrame(rows)
