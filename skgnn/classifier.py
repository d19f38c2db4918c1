"""CGCNNClassifier: the CGCNN as a scikit-learn classifier (a skorch NeuralNetClassifier)."""

from __future__ import annotations

import numpy as np
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import EpochScoring

from ._net import (
    SHARED_PARAMETERS_DOC,
    TRAINING_DEFAULTS,
    CrystalGraphNetMixin,
    check_graphs,
    check_target_length,
)


def _accuracy_of_codes(net, X, y) -> float:
    """Validation accuracy on the integer codes skorch sees during training."""
    return float(np.mean(net.predict_proba(X).argmax(axis=1) == np.asarray(y)))


class CGCNNClassifier(CrystalGraphNetMixin, NeuralNetClassifier):
    __doc__ = (
        """CGCNN classifier on crystal graphs, a skorch ``NeuralNetClassifier``.

    Binary and multiclass; labels may be of any sortable type. The network
    outputs one logit per class and ``predict_proba`` their softmax.

    Parameters
    ----------
    criterion : torch loss class, default=torch.nn.CrossEntropyLoss
    classes : array-like or None, default=None
        All class labels; ``None`` takes those present in the training ``y``."""
        + SHARED_PARAMETERS_DOC
        + """
    Attributes
    ----------
    classes_ : ndarray
        Class labels, in the order of ``predict_proba``'s columns.
    module_ : CGCNN
        The trained network.
    """
    )

    _target_dtype = torch.int64
    _stratified_split = True

    def __init__(
        self,
        module=TRAINING_DEFAULTS["module"],
        *,
        criterion=torch.nn.CrossEntropyLoss,
        classes=None,
        validation_fraction: float | None = None,
        patience: int = 20,
        random_state: int | None = None,
        **kwargs,
    ) -> None:
        defaults = {k: v for k, v in TRAINING_DEFAULTS.items() if k != "module"}
        super().__init__(module, criterion=criterion, classes=classes, **{**defaults, **kwargs})
        self._init_shared(validation_fraction, patience, random_state)

    @property
    def _default_callbacks(self):
        # skorch's valid_acc compares predict() (our labels) with y (our codes)
        accuracy = EpochScoring(
            _accuracy_of_codes, name="valid_acc", lower_is_better=False, use_caching=True
        )
        return [
            (name, accuracy if name == "valid_acc" else callback)
            for name, callback in super()._default_callbacks
        ]

    def _encode(self, graphs, y) -> tuple[np.ndarray, np.ndarray]:
        y = check_target_length(graphs, y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D class labels; got shape {y.shape}.")
        classes = np.unique(y) if self.classes is None else np.asarray(self.classes)
        if len(classes) < 2:
            raise ValueError(
                f"y has a single class ({classes[0]!r}); a classifier needs at least two."
            )
        codes = np.searchsorted(classes, y).clip(0, len(classes) - 1)
        unknown = np.flatnonzero(classes[codes] != y)
        if len(unknown):
            raise ValueError(f"y[{unknown[0]}] = {y[unknown[0]]!r} is not one of {classes}.")
        return classes, codes

    def check_data(self, X, y):
        """Labels are checked and encoded in ``fit``; skorch's own check is not needed."""

    def fit(self, X, y, **fit_params) -> CGCNNClassifier:
        """Train on crystal graphs ``X`` and class labels ``y``.

        Returns
        -------
        self : CGCNNClassifier
        """
        graphs = check_graphs(X, type(self).__name__)
        classes, codes = self._encode(graphs, y)
        if not (self.warm_start and self.initialized_):
            self.classes_inferred_ = classes
            self._set_module_sizes(graphs, n_out=len(classes))
        with self._seeded():
            return super().fit(graphs, codes, **fit_params)

    def partial_fit(self, X, y=None, classes=None, **fit_params) -> CGCNNClassifier:
        """Train for ``max_epochs`` more epochs without re-initialising."""
        graphs = check_graphs(X, type(self).__name__)
        if self.initialized_ and hasattr(self, "classes_inferred_"):
            labels = np.asarray(y)
            codes = np.searchsorted(self.classes_inferred_, labels)
        else:
            self.classes_inferred_, codes = self._encode(graphs, y)
            self._set_module_sizes(graphs, n_out=len(self.classes_inferred_))
        return super().partial_fit(graphs, codes, **fit_params)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, one row per structure, columns in ``classes_`` order."""
        return super().predict_proba(self._check_predict_input(X))

    def predict(self, X) -> np.ndarray:
        """Most probable class label of each structure."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
