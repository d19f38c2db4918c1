"""Search spaces of skgnn's pipelines, and drawing from them with a trial's public API.

A space maps pipeline parameter names (``get_params`` keys) to Optuna
distributions, so it serves :func:`skgnn.tuning.tune`, ``OptunaSearchCV`` and
a hand-written objective alike.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import optuna
import torch
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from sklearn.base import BaseEstimator

__all__ = [
    "cgcnn_space",
    "params_within",
    "rf_scm_magpie_space",
    "strong_tabular_space",
    "suggest",
]


def cgcnn_space(
    transformer: str = "crystalgraphtransformer", net: str = "cgcnnregressor"
) -> dict[str, BaseDistribution]:
    """Search space of a ``make_pipeline(CrystalGraphTransformer(), CGCNNRegressor())``.

    Parameters
    ----------
    transformer, net : str
        The pipeline's step names (``make_pipeline`` names steps by class).

    Returns
    -------
    dict of str to optuna distribution
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


def suggest(trial: optuna.Trial, space: Mapping[str, BaseDistribution]) -> dict[str, Any]:
    """Draw one value per parameter of ``space`` through the trial's public API.

    Parameters
    ----------
    trial : optuna.Trial
    space : mapping of str to optuna distribution

    Returns
    -------
    dict
        Parameter name to drawn value, ready for ``set_params``.
    """
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


def params_within(
    space: Mapping[str, BaseDistribution], estimator: BaseEstimator
) -> dict[str, Any]:
    """The estimator's current values of the parameters of ``space`` that ``space`` can draw.

    Parameters
    ----------
    space : mapping of str to optuna distribution
    estimator : estimator or Pipeline

    Returns
    -------
    dict
        A trial to enqueue, so a search starts from the estimator's own settings.
    """
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
