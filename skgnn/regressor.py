"""CGCNNRegressor: the CGCNN as a scikit-learn regressor (a skorch NeuralNetRegressor)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from skorch import NeuralNetRegressor

from ._net import (
    SHARED_PARAMETERS_DOC,
    TRAINING_DEFAULTS,
    CrystalGraphNetMixin,
    check_target_length,
)
from .contract import Contract
from .dataset import CrystalGraphDataset


def _majority_elements(graphs) -> np.ndarray:
    """The symbol of each site's most abundant species."""
    from pymatgen.core import Element

    n_sites = int(graphs.atom_offsets[-1])
    owner = graphs.species_atom.astype(np.int64) + np.repeat(
        graphs.atom_offsets[:-1], np.diff(graphs.species_offsets)
    )
    best = np.full(n_sites, -1.0)
    symbol = np.empty(n_sites, dtype=object)
    for site, z, amount in zip(owner, graphs.atomic_numbers, graphs.occupancy, strict=True):
        if amount > best[site]:
            best[site], symbol[site] = amount, Element.from_Z(int(z)).symbol
    return symbol


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
    module_ : torch.nn.Module
        The trained network (a :class:`~skgnn.CGCNN` or :class:`~skgnn.MessageNet`, as
        ``module`` says). Its ``state_dict`` carries the contract below, so
        ``save_params``/``load_params`` restore a model that predicts alike.
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
        embedding_layer: str = "pooled",
        **kwargs,
    ) -> None:
        defaults = {k: v for k, v in TRAINING_DEFAULTS.items() if k != "module"}
        super().__init__(module, criterion=criterion, **{**defaults, **kwargs})
        self._init_shared(validation_fraction, patience, random_state, embedding_layer)

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

    def predict_contributions(self, X) -> pd.DataFrame:
        """Each site's share of the prediction, with ``module__readout="atom"``.

        The head then acts on every atom and the pooling comes last, so each
        prediction is exactly the sum (``module__pooling="sum"``) or the mean
        (``"mean"``) of its sites' contributions, in the units of ``y``.

        Returns
        -------
        DataFrame
            One row per site: ``structure`` (row of ``X``), ``site`` (index in
            the structure), ``element`` (its majority species) and
            ``contribution``.
        """
        graphs = self._check_predict_input(X)
        contract, module = self.contract_, self.module_
        if module.readout != "atom" or module.pooling not in ("sum", "mean") or contract.n_out > 1:
            raise ValueError(
                "Contributions need module__readout='atom', module__pooling 'sum' or 'mean' "
                f"and one target; this model has readout={module.readout!r}, "
                f"pooling={module.pooling!r} and {contract.n_out} target(s)."
            )
        module.eval()
        with torch.no_grad():
            scaled = torch.cat([
                module.atom_outputs(batch.to(self.device)).cpu()
                for batch, _ in self.get_iterator(CrystalGraphDataset(graphs), training=False)
            ]).numpy()[:, 0].astype(np.float64)  # fmt: skip
        n_atoms = graphs.n_atoms
        structure = np.repeat(np.arange(len(graphs)), n_atoms)
        # the mean's share is spread over the sites so that the shares add up (or average) to it
        share = 1.0 if module.pooling == "mean" else 1.0 / n_atoms[structure]
        contribution = scaled * contract.target_scale[0] + contract.target_mean[0] * share
        return pd.DataFrame({
            "structure": structure,
            "site": np.arange(len(structure)) - np.repeat(graphs.atom_offsets[:-1], n_atoms),
            "element": _majority_elements(graphs),
            "contribution": contribution,
        })  # fmt: skip

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
