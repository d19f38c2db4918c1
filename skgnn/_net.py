"""What the CGCNN regressor and classifier share: graph input, seeding, defaults, callbacks."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from skorch.callbacks import EarlyStopping, LRScheduler
from skorch.dataset import ValidSplit

from .dataset import CrystalGraphDataset, pass_batch_through
from .graphs import CrystalGraphs, GraphBatch
from .module import CGCNN

TRAINING_DEFAULTS = {
    "module": CGCNN,
    "optimizer": torch.optim.AdamW,
    "lr": 2e-3,
    "max_epochs": 100,
    "batch_size": 128,
    "train_split": None,
    "iterator_train__shuffle": True,
    "iterator_train__collate_fn": pass_batch_through,
    "iterator_valid__collate_fn": pass_batch_through,
    "verbose": 0,
}

SHARED_PARAMETERS_DOC = """
    module : torch module class, default=CGCNN
        Built with ``module__*`` parameters (``module__n_conv``,
        ``module__atom_fea_len``, ``module__h_fea_len``, ``module__n_h``,
        ``module__pooling``...). Its input and output sizes are set from the
        data at ``fit``.
    optimizer : torch optimizer class, default=torch.optim.AdamW
        Set its options with ``optimizer__*``, e.g. ``optimizer__weight_decay``.
    lr : float, default=2e-3
        Initial learning rate, annealed to zero over ``max_epochs`` on a cosine.
    max_epochs : int, default=100
    batch_size : int, default=128
    validation_fraction : float or None, default=None
        Share of the training data held out, at random, to stop early and keep
        the best epoch's weights. By default nothing is held out: the cosine
        schedule anneals the learning rate to zero over ``max_epochs`` and the
        last epoch is kept. On small data the held-out rows cost more than
        early stopping gains (matbench_jdft2d's folds, five seeds: 47.0 ± 1.0
        meV/atom training on all rows, 49.6 ± 1.8 with 0.1 held out; see
        ``benchmarks/results/seeds``). Ignored when ``train_split`` is given.
    patience : int, default=20
        Epochs without improvement of the validation loss before stopping,
        when a share is held out.
    random_state : int or None, default=None
        Seeds weight initialisation, shuffling, dropout and the validation
        split, so that the same value gives the same predictions.
    device : str, default="cpu"
        ``"cuda"`` trains on a GPU.
    verbose : int, default=0
        1 prints skorch's table of epochs.
    **kwargs
        Any other skorch ``NeuralNet`` parameter, e.g. ``train_split``,
        ``callbacks`` or ``iterator_train__num_workers``.
"""


def check_graphs(X, estimator_name: str) -> CrystalGraphs:
    """Return ``X`` as one CrystalGraphs, or say how to make one."""
    if isinstance(X, CrystalGraphs):
        return X
    if isinstance(X, (list, tuple)) and X and all(isinstance(x, CrystalGraphs) for x in X):
        return CrystalGraphs.concatenate(list(X))
    raise TypeError(
        f"{estimator_name} takes the crystal graphs made by CrystalGraphTransformer; got "
        f"{type(X).__name__}. Put the transformer first: "
        f"make_pipeline(CrystalGraphTransformer(), {estimator_name}())."
    )


def check_target_length(graphs: CrystalGraphs, y) -> np.ndarray:
    if y is None:
        raise ValueError("y is required to fit.")
    y = np.asarray(y)
    if len(y) != len(graphs):
        raise ValueError(
            f"X has {len(graphs)} structures but y has {len(y)} values; they must match."
        )
    return y


class CrystalGraphNetMixin:
    """skorch hooks for crystal graph input; mixed in left of a skorch net."""

    def _init_shared(self, validation_fraction, patience, random_state) -> None:
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state

    @property
    def _default_callbacks(self):
        callbacks = list(super()._default_callbacks)
        callbacks.append(
            ("lr_scheduler", LRScheduler(torch.optim.lr_scheduler.CosineAnnealingLR,
                                         T_max=self.max_epochs))
        )  # fmt: skip
        if self._has_validation():
            callbacks.append(
                ("early_stopping", EarlyStopping(patience=self.patience, load_best=True))
            )
        return callbacks

    def _has_validation(self) -> bool:
        return bool(self.train_split) or bool(self.validation_fraction)

    def get_split_datasets(self, X, y=None, **fit_params):
        if self.train_split or not self.validation_fraction:
            return super().get_split_datasets(X, y, **fit_params)
        split = ValidSplit(
            self.validation_fraction,
            stratified=self._stratified_split,
            random_state=self.random_state,
        )
        return split(self.get_dataset(X, y), y)

    def get_dataset(self, X, y=None) -> torch.utils.data.Dataset:
        if isinstance(X, torch.utils.data.Dataset):  # skorch's internal validation subset
            return X
        y = None if y is None else torch.as_tensor(np.asarray(y), dtype=self._target_dtype)
        return CrystalGraphDataset(check_graphs(X, type(self).__name__), y)

    def infer(self, x: GraphBatch, **fit_params) -> torch.Tensor:
        return self.module_(x.to(self.device), **fit_params)

    def initialize_module(self):
        params = {**self.get_params_for("module"), **getattr(self, "module_sizes_", {})}
        self.module_ = self.initialized_instance(self.module, params)
        return self

    def _set_module_sizes(self, graphs: CrystalGraphs, n_out: int) -> None:
        self.module_sizes_ = {
            "orig_atom_fea_len": graphs.n_atom_features,
            "nbr_fea_len": graphs.n_edge_features,
            "n_out": n_out,
        }

    @contextmanager
    def _seeded(self):
        if self.random_state is None:
            yield
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            yield

    def _check_predict_input(self, X) -> CrystalGraphs | torch.utils.data.Dataset:
        self.check_is_fitted()
        if isinstance(X, torch.utils.data.Dataset):  # skorch's internal validation subset
            return X
        return check_graphs(X, type(self).__name__)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.non_deterministic = self.random_state is None
        return tags
