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


class GraphSettingsError(SkgnnError, ValueError):
    """Crystal graphs built with other settings than those a model was fitted on."""


class IncompatibleModelError(SkgnnError, ValueError):
    """Saved weights that do not belong to the estimator loading them."""


class StudyMismatchError(SkgnnError, ValueError):
    """A persistent Optuna study resumed with another estimator, space, data, CV or scoring.

    The message names what differs; pass another ``study_name`` or the same inputs.
    """


class StudyStorageError(SkgnnError, OSError):
    """An Optuna storage URL that cannot be opened; the message names the URL."""
