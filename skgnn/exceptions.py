"""Exceptions of skgnn.

Each also derives from the built-in exception callers already catch
(``StructureError`` is a ``ValueError``); predicting before ``fit`` raises
skorch's ``NotInitializedError``, a scikit-learn ``NotFittedError``.
"""


class SkgnnError(Exception):
    """Base class of skgnn's own errors."""


class StructureError(SkgnnError, ValueError):
    """An input structure cannot be read or turned into a crystal graph.

    The message names the item by its position in ``X``.
    """
