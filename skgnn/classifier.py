"""CGCNNClassifier: the CGCNN as a scikit-learn classifier (a skorch NeuralNetClassifier)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from skorch import NeuralNetClassifier
from skorch.callbacks import EpochScoring

from ._net import (
    SHARED_PARAMETERS_DOC,
    TRAINING_DEFAULTS,
    CrystalGraphNetMixin,
    check_target_length,
)
from .contract import Contract


def _accuracy_of_codes(net, X, y) -> float:
    """Validation accuracy on the integer codes skorch sees during training."""
    return float(np.mean(net.predict_proba(X).argmax(axis=1) == np.asarray(y)))


def _sorted_labels(labels: np.ndarray, what: str) -> np.ndarray:
    try:
        return np.unique(labels)
    except TypeError as exc:
        raise ValueError(
            f"{what} mix types that cannot be sorted ({exc}); use labels of one type."
        ) from exc


def _first_unknown(y: np.ndarray, classes: np.ndarray) -> int | None:
    known = set(classes.tolist())
    return next((i for i, label in enumerate(y.tolist()) if label not in known), None)


class CGCNNClassifier(CrystalGraphNetMixin, NeuralNetClassifier):
    __doc__ = (
        """CGCNN classifier on crystal graphs, a skorch ``NeuralNetClassifier``.

    Binary and multiclass; labels may be of any sortable type (strings,
    integers, booleans). The network outputs one logit per class and
    ``predict_proba`` their softmax, in the order of ``classes_``.

    Parameters
    ----------
    criterion : torch loss class, default=torch.nn.CrossEntropyLoss
    classes : array-like or None, default=None
        All class labels, in any order; ``None`` takes those present in the
        training ``y``. Needed when a first ``partial_fit`` does not see every
        class."""
        + SHARED_PARAMETERS_DOC
        + """
    Attributes
    ----------
    classes_ : ndarray
        Sorted class labels, the order of ``predict_proba``'s columns.
    contract_ : skgnn.contract.Contract
        The graph settings the network was trained on and the classes,
        carried in the ``state_dict`` of ``module_``.
    module_ : torch.nn.Module
        The trained network (a :class:`~skgnn.CGCNN` or :class:`~skgnn.MessageNet`, as
        ``module`` says).
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
        embedding_layer: str = "pooled",
        **kwargs,
    ) -> None:
        defaults = {k: v for k, v in TRAINING_DEFAULTS.items() if k != "module"}
        super().__init__(module, criterion=criterion, classes=classes, **{**defaults, **kwargs})
        self._init_shared(validation_fraction, patience, random_state, embedding_layer)

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

    def _check_targets(self, graphs, y) -> np.ndarray:
        y = check_target_length(graphs, y)
        if y.ndim != 1:
            raise ValueError(f"y must be 1-D class labels; got shape {y.shape}.")
        missing = np.flatnonzero(pd.isna(y))
        if len(missing):
            raise ValueError(
                f"y[{missing[0]}] is {y[missing[0]]}, a missing label ({len(missing)} "
                "row(s)); drop those rows or give them a class."
            )
        return y

    def _fit_targets(self, y: np.ndarray, classes=None) -> dict:
        given = self.classes if classes is None else classes
        if given is None:
            labels = _sorted_labels(y, "The labels in y")
        else:
            labels = _sorted_labels(np.asarray(given), "The classes given")
            self._check_known_targets(labels, y)
        if len(labels) < 2:
            raise ValueError(
                f"y has a single class ({labels.tolist()[0]!r}); a classifier needs at least two."
            )
        return {"n_out": len(labels), "classes": labels}

    def _check_known_targets(self, contract: Contract | np.ndarray, y: np.ndarray) -> None:
        classes = contract.classes if isinstance(contract, Contract) else contract
        row = _first_unknown(y, classes)
        if row is not None:
            raise ValueError(
                f"y[{row}] = {y.tolist()[row]!r} is not one of the classes "
                f"{classes.tolist()}; pass every label in `classes` (or to the first partial_fit)."
            )

    def _encode_targets(self, contract: Contract, y: np.ndarray) -> np.ndarray:
        code = {label: i for i, label in enumerate(contract.classes.tolist())}
        return np.fromiter((code[label] for label in y.tolist()), dtype=np.int64, count=len(y))

    @property
    def classes_(self) -> np.ndarray:
        return self.contract_.classes

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, one row per structure, columns in ``classes_`` order."""
        return super().predict_proba(self._check_predict_input(X))

    def predict(self, X) -> np.ndarray:
        """Most probable class label of each structure."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
