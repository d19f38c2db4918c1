"""The networks the estimators train, by name, so that a search can span architectures.

``CGCNNRegressor(module="message")`` and ``CGCNNRegressor(module=MessageNet)``
are the same estimator; a name is a plain string, which Optuna's categorical
distributions and persistent studies accept where a class is not.
"""

from __future__ import annotations

import inspect

from torch import nn

from .message import MessageNet
from .module import CGCNN

#: Network name -> class; ``module=<name>`` in the estimators.
ARCHITECTURES: dict[str, type[nn.Module]] = {"cgcnn": CGCNN, "message": MessageNet}


def resolve_module(module, estimator_name: str) -> type[nn.Module]:
    """The network class that ``module`` (a name of :data:`ARCHITECTURES`, or a class) means."""
    if isinstance(module, str):
        if module not in ARCHITECTURES:
            raise ValueError(
                f"The 'module' parameter of {estimator_name} must be one of "
                f"{sorted(ARCHITECTURES)} or a torch module class. Got {module!r} instead."
            )
        return ARCHITECTURES[module]
    if isinstance(module, type) and issubclass(module, nn.Module):
        return module
    if isinstance(module, nn.Module):  # skorch rebuilds an instance from its class with sizes
        return type(module)
    raise ValueError(
        f"The 'module' parameter of {estimator_name} must be one of {sorted(ARCHITECTURES)} "
        f"or a torch module class. Got {module!r} instead."
    )


def qualified_name(cls: type) -> str:
    """``package.module.Class``: what a contract records of the network that carries it."""
    return f"{cls.__module__}.{cls.__qualname__}"


def accepted_arguments(cls: type[nn.Module]) -> set[str] | None:
    """The keyword arguments ``cls`` takes, or ``None`` when it takes any (``**kwargs``)."""
    parameters = inspect.signature(cls).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind is not inspect.Parameter.VAR_POSITIONAL}
