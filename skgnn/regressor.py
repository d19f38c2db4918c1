"""CGCNNRegressor: the CGCNN as a scikit-learn regressor (a skorch NeuralNetRegressor)."""

from __future__ import annotations

import numpy as np
import torch
from skorch import NeuralNetRegressor

from ._net import (
    SHARED_PARAMETERS_DOC,
    TRAINING_DEFAULTS,
    CrystalGraphNetMixin,
    check_target_length,
)
from .contract import Contract


class CGCNNRegressor(CrystalGraphNetMixin, NeuralNetRegressor):
    __doc__ = (
        """CGCNN regressor on crystal graphs, a skorch ``NeuralNetRegressor``.

    Takes the output of :class:`CrystalGraphTransformer` and 1-D (or 2-D)
    targets. The targets are standardised with the mean and standard deviation
    of the ``y`` given to ``fit`` (the training fold only, inside a CV split)
    and predictions come back in the original units and shape.

    Parameters
    ----------
    criterion : torch loss class, default=torch.nn.SmoothL1Loss
        Loss on the standardised targets. The Huber loss is quadratic within
        one standard deviation and linear beyond, so outliers weigh less
        (compared with ``MSELoss`` and ``L1Loss`` in the README's results)."""
        + SHARED_PARAMETERS_DOC
        + """
    Attributes
    ----------
    module_ : CGCNN
        The trained network. Its ``state_dict`` carries the contract below,
        so ``save_params``/``load_params`` restore a model that predicts alike.
    contract_ : skgnn.contract.Contract
        The graph settings the network was trained on (``predict`` refuses
        graphs built otherwise) and the target standardisation.
    target_mean_, target_scale_ : ndarray of shape (n_targets,)
        Standardisation of the targets, from the training ``y``.
    history_ : skorch History
        Losses per epoch (also reachable as ``history``).

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from skgnn import CrystalGraphTransformer, CGCNNRegressor
    >>> pipe = make_pipeline(CrystalGraphTransformer(), CGCNNRegressor(max_epochs=30))
    """
    )

    _target_dtype = torch.float32
    _stratified_split = False

    def __init__(
        self,
        module=TRAINING_DEFAULTS["module"],
        *,
        criterion=torch.nn.SmoothL1Loss,
        validation_fraction: float | None = None,
        patience: int = 20,
        random_state: int | None = None,
        **kwargs,
    ) -> None:
        defaults = {k: v for k, v in TRAINING_DEFAULTS.items() if k != "module"}
        super().__init__(module, criterion=criterion, **{**defaults, **kwargs})
        self._init_shared(validation_fraction, patience, random_state)

    def _check_targets(self, graphs, y) -> np.ndarray:
        y = check_target_length(graphs, y)
        if y.ndim not in (1, 2):
            raise ValueError(f"y must be 1-D or 2-D; got shape {y.shape}.")
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"y must be numeric for regression: {exc}") from exc
        bad = np.flatnonzero(~np.isfinite(y.reshape(len(y), -1)).all(axis=1))
        if len(bad):
            raise ValueError(
                f"y[{bad[0]}] is {y[bad[0]]}; regression targets must be finite "
                f"({len(bad)} row(s) are not). Drop or fill those rows first."
            )
        return y

    def _fit_targets(self, y: np.ndarray, classes=None) -> dict:
        table = y.reshape(len(y), -1)
        scale = table.std(axis=0)
        return {
            "n_out": table.shape[1],
            "target_mean": table.mean(axis=0),
            "target_scale": np.where(scale > 0, scale, 1.0),
            "target_ndim": y.ndim,
        }

    def _check_known_targets(self, contract: Contract, y: np.ndarray) -> None:
        n_targets = 1 if y.ndim == 1 else y.shape[1]
        if y.ndim != contract.target_ndim or n_targets != contract.n_out:
            raise ValueError(
                f"y has shape {y.shape}; {type(self).__name__} was fitted on "
                f"{'1-D targets' if contract.target_ndim == 1 else f'{contract.n_out} targets'}."
            )

    def _encode_targets(self, contract: Contract, y: np.ndarray) -> np.ndarray:
        table = y.reshape(len(y), -1)
        return ((table - contract.target_mean) / contract.target_scale).astype(np.float32)

    @property
    def target_mean_(self) -> np.ndarray:
        return self.contract_.target_mean

    @property
    def target_scale_(self) -> np.ndarray:
        return self.contract_.target_scale

    def predict(self, X) -> np.ndarray:
        """Predict targets, in the units of the training ``y``.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,) or (n_samples, n_targets)
        """
        graphs = self._check_predict_input(X)
        contract = self.contract_
        y = super().predict(graphs) * contract.target_scale + contract.target_mean
        return y.ravel() if contract.target_ndim == 1 else y
