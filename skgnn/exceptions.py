"""Exceptions of skgnn, each also an exception that sklearn users already catch."""

from sklearn.exceptions import NotFittedError


class SkgnnError(Exception):
    """Base class of skgnn's own errors."""


class StructureError(SkgnnError, ValueError):
    """An input structure cannot be read or turned into a crystal graph.

    The message names the item by its position in ``X``.
    """


class NotFittedEstimatorError(SkgnnError, NotFittedError):
    """A skgnn estimator was used before ``fit``."""
