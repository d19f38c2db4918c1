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
    distribution_to_json,
)
from sklearn.base import BaseEstimator

from ..architectures import ARCHITECTURES

__all__ = [
    "ArchitectureChoice",
    "architecture_space",
    "cgcnn_space",
    "message_space",
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


def message_space(
    transformer: str = "crystalgraphtransformer", net: str = "cgcnnregressor"
) -> dict[str, BaseDistribution]:
    """Search space of a pipeline whose net trains :class:`~skgnn.MessageNet` (``"message"``).

    Parameters
    ----------
    transformer, net : str
        The pipeline's step names.

    Returns
    -------
    dict of str to optuna distribution
    """
    module = f"{net}__module"
    return {
        f"{transformer}__max_neighbors": IntDistribution(12, 24, step=4),
        f"{module}__atom_fea_len": CategoricalDistribution([64, 128]),
        f"{module}__n_conv": IntDistribution(2, 5),
        f"{module}__edge_layers": IntDistribution(1, 3),
        f"{module}__edge_width": CategoricalDistribution([64, 128]),
        f"{module}__aggregation": CategoricalDistribution(["sum", "mean"]),
        f"{module}__edge_basis": CategoricalDistribution(["gaussian", "radial"]),
        f"{module}__pool_layers": CategoricalDistribution(["last", "all"]),
        f"{net}__lr": FloatDistribution(1e-4, 3e-3, log=True),
        f"{net}__optimizer__weight_decay": FloatDistribution(1e-6, 1e-1, log=True),
        f"{net}__batch_size": CategoricalDistribution([32, 64, 128]),
        f"{net}__max_epochs": IntDistribution(40, 200, step=20),
    }


class ArchitectureChoice(CategoricalDistribution):
    """A choice of network whose every option brings its own search space.

    Put under the net's ``module`` key of a space (see
    :func:`architecture_space`); :func:`suggest` first draws the network's
    name, then the parameters of that network's space only. Optuna names
    those ``"<network>:<parameter>"``, so that two networks may give one
    parameter (``lr``) different ranges; ``suggest`` returns the plain
    parameter names, ready for ``set_params``. ``OptunaSearchCV`` takes
    flat spaces only: tune each network there, or use :func:`~skgnn.tuning.tune`.

    Parameters
    ----------
    branches : mapping of str to space
        Network name (a key of :data:`skgnn.architectures.ARCHITECTURES`, the
        value ``module`` takes) to that network's space.
    """

    def __init__(self, branches: Mapping[str, Mapping[str, BaseDistribution]]) -> None:
        unknown = sorted(set(branches) - set(ARCHITECTURES))
        if unknown:
            raise ValueError(
                f"ArchitectureChoice takes networks among {sorted(ARCHITECTURES)}; got {unknown}."
            )
        super().__init__(list(branches))
        # kept as nested tuples: optuna hashes a distribution from its attributes
        self.branches = tuple(
            (name, tuple(sorted(space.items()))) for name, space in branches.items()
        )

    def branch(self, name: str) -> dict[str, BaseDistribution]:
        """The space of the network ``name``."""
        return dict(dict(self.branches)[name])

    def _asdict(self) -> dict:
        # what describe_space records of a persistent study: every branch, in Optuna's JSON
        return {
            "choices": list(self.choices),
            "branches": {
                name: {key: distribution_to_json(dist) for key, dist in space}
                for name, space in self.branches
            },
        }


def architecture_space(
    transformer: str = "crystalgraphtransformer", net: str = "cgcnnregressor"
) -> dict[str, BaseDistribution]:
    """One search over both networks, each in its own space.

    The CGCNN's is :func:`cgcnn_space`, MessageNet's :func:`message_space`.

    Returns
    -------
    dict of str to optuna distribution
        ``{f"{net}__module": ArchitectureChoice(...)}``, for :func:`~skgnn.tuning.tune`.
    """
    return {
        f"{net}__module": ArchitectureChoice(
            {"cgcnn": cgcnn_space(transformer, net), "message": message_space(transformer, net)}
        )
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
    return _suggest(trial, space, prefix="")


def _suggest(trial: optuna.Trial, space: Mapping[str, BaseDistribution], prefix: str) -> dict:
    params = {}
    for name, dist in space.items():
        if isinstance(dist, ArchitectureChoice):
            choice = trial.suggest_categorical(prefix + name, dist.choices)
            params[name] = choice
            params.update(_suggest(trial, dist.branch(choice), prefix=f"{prefix}{choice}:"))
        elif isinstance(dist, FloatDistribution):
            params[name] = trial.suggest_float(
                prefix + name, dist.low, dist.high, log=dist.log, step=dist.step
            )
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(
                prefix + name, dist.low, dist.high, log=dist.log, step=dist.step
            )
        elif isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(prefix + name, dist.choices)
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
    return _params_within(space, estimator.get_params(), prefix="")


def _params_within(space: Mapping[str, BaseDistribution], current: dict, prefix: str) -> dict:
    within = {}
    for name, dist in space.items():
        value = current[name] if name in current else _signature_default(current, name)
        if isinstance(dist, ArchitectureChoice):
            value = _architecture_name(value)
            if value in dist.choices:
                within[prefix + name] = value
                branch_prefix = f"{prefix}{value}:"
                within.update(_params_within(dist.branch(value), current, branch_prefix))
            continue
        try:
            drawable = value is not _UNSET and dist._contains(dist.to_internal_repr(value))
        except (TypeError, ValueError):  # e.g. a choice missing from a categorical
            drawable = False
        if drawable:
            within[prefix + name] = value
    return within


def _architecture_name(module) -> str | None:
    """The :data:`~skgnn.architectures.ARCHITECTURES` name of a ``module`` value, if it has one."""
    if isinstance(module, str):
        return module
    return next((name for name, cls in ARCHITECTURES.items() if cls is module), None)


def _signature_default(params: dict, name: str):
    """Default of an argument skorch routes but does not list, e.g. ``net__module__n_conv``.

    skorch's ``get_params`` shows ``module__*`` and ``optimizer__*`` arguments
    only once set; until then they are the defaults of the module's or the
    optimizer's signature.
    """
    owner, _, argument = name.rpartition("__")
    target = params.get(owner)
    if isinstance(target, str):  # a network by name: module="message"
        target = ARCHITECTURES.get(target)
    if not (
        isinstance(target, type) and issubclass(target, (torch.nn.Module, torch.optim.Optimizer))
    ):
        return _UNSET
    parameter = inspect.signature(target).parameters.get(argument)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        return _UNSET
    return parameter.default
