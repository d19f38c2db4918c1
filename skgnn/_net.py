"""What the CGCNN regressor and classifier share: input checks, the fit contract, seeding."""

from __future__ import annotations

import copy
from contextlib import contextmanager
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from skorch.callbacks import EarlyStopping, LRScheduler
from skorch.dataset import ValidSplit
from skorch.exceptions import NotInitializedError
from skorch.utils import get_map_location

from .architectures import accepted_arguments, qualified_name, resolve_module
from .contract import CONTRACT_NAME, Contract, ContractModule
from .dataset import CrystalGraphDataset, pass_batch_through
from .exceptions import IncompatibleModelError
from .graphs import CrystalGraphs, GraphBatch
from .module import CGCNN
from .numerics import flush_denormals

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
    module : {"cgcnn", "message"} or torch module class, default=CGCNN
        The network: the CGCNN (:class:`~skgnn.CGCNN`, ``"cgcnn"``) or
        message passing with deep edge MLPs (:class:`~skgnn.MessageNet`,
        ``"message"``), by class or by name, so that a search can span both.
        Built with ``module__*`` parameters (``module__n_conv``,
        ``module__atom_fea_len``, ``module__h_fea_len``, ``module__n_h``,
        ``module__pooling``, ``module__pool_layers``...; a name the network
        does not take is refused at ``fit``). Its input and output sizes (and
        a ``cutoff`` argument, where it takes one) are set from the data at ``fit``.
    optimizer : torch optimizer class, default=torch.optim.AdamW
        Set its options with ``optimizer__*``, e.g. ``optimizer__weight_decay``.
    lr : float, default=2e-3
        Initial learning rate, annealed to zero over ``max_epochs`` on a cosine.
    max_epochs : int, default=100
    batch_size : int, default=128
    validation_fraction : float in (0, 1) or None, default=None
        Share of the training data held out, at random, to stop early and keep
        the best epoch's weights. By default nothing is held out: the cosine
        schedule anneals the learning rate to zero over ``max_epochs`` and the
        last epoch is kept, which did better on small data (see
        ``benchmarks/results/seeds``). Ignored when ``train_split`` is given.
    patience : int, default=20
        Epochs without improvement of the validation loss before stopping,
        when a share is held out.
    random_state : int or None, default=None
        Seeds weight initialisation, shuffling, dropout and the validation
        split, so that the same value gives the same predictions. The
        caller's global torch random state is left as it was.
    embedding_layer : {"pooled", "hidden"}, default="pooled"
        What ``transform`` returns: the crystal vectors after pooling, or
        after the head's hidden layers. A fitted net is then a step of a
        ``FeatureUnion`` or ``ColumnTransformer`` beside matminer features.
    device : str, default="cpu"
        ``"cuda"`` trains on a GPU.
    verbose : int, default=0
        1 prints skorch's table of epochs.
    **kwargs
        Any other skorch ``NeuralNet`` parameter, e.g. ``train_split``,
        ``callbacks`` or ``iterator_train__num_workers``.
"""

SHARED_FIT_DOC = """
        Every check of the input (graphs, targets, ``sample_weight``,
        parameters) runs before any state changes, and a fit that raises for
        any other reason restores the estimator as it was: a fitted model
        stays fitted, with the same predictions.

        Parameters
        ----------
        X : CrystalGraphs
            Made by :class:`~skgnn.CrystalGraphTransformer`.
        y : array-like of shape (n_samples,) or (n_samples, n_targets)
        sample_weight : array-like of shape (n_samples,) or None, default=None
            Non-negative weights of the rows in the loss (a weighted mean).
        **fit_params
            Passed to skorch (and on to the module's ``forward``).
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


def check_sample_weight(sample_weight, n_samples: int) -> np.ndarray | None:
    """Return the weights as float32, or raise naming the first bad row."""
    if sample_weight is None:
        return None
    weight = np.asarray(sample_weight, dtype=np.float64)
    if weight.ndim == 0:
        weight = np.full(n_samples, float(weight))
    if weight.shape != (n_samples,):
        raise ValueError(
            f"sample_weight has shape {weight.shape}; expected ({n_samples},), one per row."
        )
    bad = np.flatnonzero(~np.isfinite(weight) | (weight < 0))
    if len(bad):
        raise ValueError(
            f"sample_weight[{bad[0]}] is {weight[bad[0]]}; weights must be finite and >= 0."
        )
    if not weight.sum() > 0:
        raise ValueError("sample_weight sums to zero; at least one row must weigh.")
    return weight.astype(np.float32)


class CrystalGraphNetMixin(TransformerMixin):
    """skorch hooks for crystal graph input and the fit contract; mixed in left of a skorch net.

    Subclasses say how targets are learned and encoded (:meth:`_check_targets`,
    :meth:`_fit_targets`, :meth:`_encode_targets`); everything else, and the
    order in which it happens, lives here: all checks, then one preparation
    of the targets, then skorch's training loop on a ready dataset.
    """

    _parameter_constraints: dict = {
        "validation_fraction": [Interval(Real, 0, 1, closed="neither"), None],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, 2**32 - 1, closed="both"), None],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "lr": [Interval(Real, 0, None, closed="left")],
        "embedding_layer": [StrOptions({"pooled", "hidden"})],
    }

    def _init_shared(self, validation_fraction, patience, random_state, embedding_layer) -> None:
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state
        self.embedding_layer = embedding_layer

    # ---- fitting ------------------------------------------------------------------------

    def fit(self, X, y, sample_weight=None, **fit_params):
        graphs, y, sample_weight = self._check_fit_input(X, y, sample_weight)
        keep = self.warm_start and self._contract is not None
        return self._fit(graphs, y, sample_weight, None, keep, "fit", fit_params)

    fit.__doc__ = (
        "Train on crystal graphs ``X`` and targets ``y``, from scratch (on, with warm_start).\n"
        + SHARED_FIT_DOC
        + """
        Returns
        -------
        self
        """
    )

    def partial_fit(self, X, y=None, classes=None, sample_weight=None, **fit_params):
        """Train for ``max_epochs`` more epochs without re-initialising.

        The first call on an unfitted estimator fits the target encoding
        (``classes``, if given, lists every label); later calls keep the
        network, the graph settings and the target encoding, and refuse
        graphs built otherwise and labels outside the known classes.

        Returns
        -------
        self
        """
        graphs, y, sample_weight = self._check_fit_input(X, y, sample_weight)
        keep = self._contract is not None
        return self._fit(graphs, y, sample_weight, classes, keep, "partial_fit", fit_params)

    def _fit(self, graphs, y, sample_weight, classes, keep: bool, routing: str, fit_params):
        """Check against the contract kept (or make a new one), then train; all or nothing."""
        if keep:
            contract = self._contract
            contract.graph_settings.check(graphs, type(self).__name__)
            self._check_known_targets(contract, y)
        else:
            contract = self._new_contract(graphs, y, classes)
        with self._restored_on_error(), self._seeded():
            if not keep:
                self._pending_contract = contract
                self.initialize()
            self._train(graphs, y, sample_weight, routing, fit_params)
        return self

    def _check_fit_input(self, X, y, sample_weight):
        name = type(self).__name__
        validate_parameter_constraints(
            self._parameter_constraints, self.get_params(deep=False), caller_name=name
        )
        module = self._network()
        module_constraints = getattr(module, "_parameter_constraints", {})
        validate_parameter_constraints(
            {f"module__{k}": v for k, v in module_constraints.items()},
            self._prefixed_params_for("module"),
            caller_name=name,
        )
        graphs = check_graphs(X, name)
        y = self._check_targets(graphs, y)
        return graphs, y, check_sample_weight(sample_weight, len(graphs))

    def _network(self) -> type[torch.nn.Module]:
        """The network class ``module`` names, after checking that it takes every ``module__*``."""
        name = type(self).__name__
        network = resolve_module(self.module, name)
        accepted = accepted_arguments(network)
        unknown = [key for key in self.get_params_for("module")
                   if accepted is not None and key not in accepted]  # fmt: skip
        if unknown:
            raise ValueError(
                f"module__{unknown[0]} is not a parameter of {network.__name__}, the network "
                f"of this {name}; it takes {sorted(accepted)}."
            )
        return network

    def _prefixed_params_for(self, prefix: str) -> dict:
        """``get_params_for(prefix)`` with the prefix kept in the keys, as messages name them."""
        return {f"{prefix}__{k}": v for k, v in self.get_params_for(prefix).items()}

    def _new_contract(self, graphs: CrystalGraphs, y: np.ndarray, classes) -> Contract:
        return Contract(
            estimator=type(self).__name__,
            graph_settings=graphs.settings,
            module=qualified_name(resolve_module(self.module, type(self).__name__)),
            **self._fit_targets(y, classes),
        )

    def _train(self, graphs, y, sample_weight, routing: str, fit_params: dict) -> None:
        """skorch's ``partial_fit`` body, on a dataset whose targets are already encoded."""
        encoded = self._encode_targets(self._contract, y)
        dataset = CrystalGraphDataset(
            graphs,
            torch.as_tensor(encoded, dtype=self._target_dtype),
            None if sample_weight is None else torch.from_numpy(sample_weight),
        )
        self.notify("on_train_begin", X=dataset, y=encoded)
        # the graphs make no subnormal floats, but Adam's first moment of a weight that gets no
        # gradient for ~750 batches (a rare element's column, in a large dataset) decays 0.9 a
        # step into them; Intel cores take ~100x longer per subnormal operand
        with flush_denormals():
            try:
                self.fit_loop(dataset, encoded, _routing_method=routing, **fit_params)
            except KeyboardInterrupt:  # skorch's convention: stop, keep what was learned
                pass
        self.notify("on_train_end", X=dataset, y=encoded)

    def check_data(self, X, y=None):
        """Graphs and targets are checked, and targets encoded, before skorch sees them."""

    @contextmanager
    def _restored_on_error(self):
        """Put the estimator back as it was if the block raises (not on Ctrl-C, as skorch)."""
        saved_attributes = dict(self.__dict__)
        saved_state = None
        if self.initialized_:
            saved_state = copy.deepcopy(
                {name: self.__dict__.get(name) for name in
                 ("module_", "optimizer_", "criterion_", "history_")}
            )  # fmt: skip
        try:
            yield
        except Exception:
            self.__dict__.clear()
            self.__dict__.update(saved_attributes)
            if saved_state is not None:
                self.__dict__.update(saved_state)
            raise
        finally:
            self.__dict__.pop("_pending_contract", None)

    @contextmanager
    def _seeded(self):
        if self.random_state is None:
            yield
            return
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.random_state)
            yield

    # ---- the contract --------------------------------------------------------------------

    def initialize_module(self):
        contract = self.__dict__.pop("_pending_contract", None)
        network = self._network()
        sizes = contract.module_sizes() if contract is not None else {}
        accepted = accepted_arguments(network)
        if accepted is not None:  # a cutoff for the networks that take one
            sizes = {k: v for k, v in sizes.items() if k in accepted}
        module = self.initialized_instance(network, {**self.get_params_for("module"), **sizes})
        module.add_module(CONTRACT_NAME, ContractModule(contract))
        self.module_ = module
        return self

    @property
    def _contract(self) -> Contract | None:
        holder = getattr(self.__dict__.get("module_"), CONTRACT_NAME, None)
        return getattr(holder, "contract", None)

    @property
    def contract_(self) -> Contract:
        """What the network was trained with: graph settings and target encoding."""
        contract = self._contract
        if contract is None:
            raise AttributeError(f"{type(self).__name__} is not fitted; it has no contract_.")
        return contract

    def load_params(self, f_params=None, **kwargs):
        """Load weights saved by ``save_params``, with the contract they carry.

        The estimator is rebuilt to the saved network's input and output
        sizes, then takes its weights, graph settings and target encoding, so
        it predicts as the saved one did. Weights saved by another kind of
        estimator, or without a contract, raise
        :class:`~skgnn.exceptions.IncompatibleModelError`.
        """
        if f_params is not None:
            with self._restored_on_error():
                self._load_module(f_params, kwargs.get("use_safetensors", False))
        return super().load_params(f_params=None, **kwargs)

    def _load_module(self, f_params, use_safetensors: bool) -> None:
        if not self.initialized_:
            self.initialize()
        state = self._read_state_dict(f_params, use_safetensors)
        prefix = f"{CONTRACT_NAME}."
        holder = ContractModule()
        holder.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}, strict=False
        )
        contract = holder.contract
        name = type(self).__name__
        if contract is None:
            raise IncompatibleModelError(
                f"{f_params!r} holds weights without skgnn's contract (graph settings and "
                f"target scaling), so {name} cannot know their units: it was not saved from "
                "a fitted skgnn estimator."
            )
        if contract.estimator != name:
            raise IncompatibleModelError(
                f"{f_params!r} holds the weights of a {contract.estimator}, not of a {name}."
            )
        network = qualified_name(resolve_module(self.module, name))
        if contract.module is not None and contract.module != network:
            raise IncompatibleModelError(
                f"{f_params!r} holds the weights of a {contract.module.rsplit('.', 1)[-1]} "
                f"network ({contract.module}), but this {name} builds a "
                f"{network.rsplit('.', 1)[-1]}; set module (and its module__* parameters) "
                "as when the weights were saved."
            )
        self._pending_contract = contract
        self.initialize_module()
        try:
            self.module_.load_state_dict(state)
        except RuntimeError as exc:
            raise IncompatibleModelError(
                f"{f_params!r} does not fit this {name}'s network (different module "
                f"parameters?): {exc}"
            ) from exc
        self.initialize_optimizer()  # it must hold the new module's parameters

    def _read_state_dict(self, f_params, use_safetensors: bool) -> dict:
        if use_safetensors:
            from safetensors.torch import load, load_file

            if hasattr(f_params, "read"):
                return load(f_params.read())
            return load_file(f_params, device=str(self.device))
        load_kwargs = self.torch_load_kwargs or {"weights_only": True}
        return torch.load(f_params, map_location=get_map_location(self.device), **load_kwargs)

    # ---- prediction -----------------------------------------------------------------------

    def _check_predict_input(self, X) -> CrystalGraphs | torch.utils.data.Dataset:
        self.check_is_fitted()
        if isinstance(X, torch.utils.data.Dataset):  # skorch's validation set, during fit
            return X
        contract = self._contract
        if contract is None:
            raise NotInitializedError(
                f"{type(self).__name__} is initialized but not fitted; call fit, or "
                "load_params with the weights of a fitted one."
            )
        graphs = check_graphs(X, type(self).__name__)
        contract.graph_settings.check(graphs, type(self).__name__)
        return graphs

    # ---- embeddings -----------------------------------------------------------------------

    def transform(self, X) -> np.ndarray:
        """The learned crystal vectors of ``X``, to feed other models.

        ``embedding_layer`` chooses them: after pooling (``"pooled"``, length
        ``module__atom_fea_len``) or after the head's hidden layers
        (``"hidden"``, length ``module__h_fea_len``). Vectors of the rows the
        network trained on carry their targets. To stack another model on
        the network's outputs without that leak, use
        ``skgnn.hybrid.CrossFittedFeatures(net)`` (out-of-fold predictions).
        Out-of-fold *vectors* (``method="transform"``) come from networks
        trained on other folds, whose coordinates need not agree (a hidden
        unit of one may be another's, permuted or mixed), so a model stacked
        on them learns from several feature spaces at once; train such a model
        on rows the network did not see instead.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        graphs = self._check_predict_input(X)
        self.module_.eval()
        dataset = CrystalGraphDataset(graphs)
        with torch.no_grad():
            vectors = [
                self.module_.embed(batch.to(self.device), self.embedding_layer).cpu()
                for batch, _ in self.get_iterator(dataset, training=False)
            ]
        return torch.cat(vectors).numpy().astype(np.float64)

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        """``<network>_<layer>_<i>`` (``cgcnn_pooled_0``...), one per column of ``transform``."""
        self.check_is_fitted()
        hidden = self.embedding_layer == "hidden"
        width = self.module_.fc_out.in_features if hidden else self.module_.embedding.out_features
        network = type(self.module_).__name__.lower()
        return np.array(
            [f"{network}_{self.embedding_layer}_{i}" for i in range(width)], dtype=object
        )

    # ---- skorch hooks ---------------------------------------------------------------------

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
        # read without truth-testing: get_params builds the callbacks before fit validates
        fraction = self.validation_fraction
        return self.train_split is not None or (isinstance(fraction, Real) and fraction > 0)

    def get_split_datasets(self, X, y=None, **fit_params):
        if self.train_split is not None or not self._has_validation():
            return super().get_split_datasets(X, y, **fit_params)
        split = ValidSplit(
            self.validation_fraction,
            stratified=self._stratified_split,
            random_state=self.random_state,
        )
        return split(self.get_dataset(X, y), y)

    def get_dataset(self, X, y=None) -> torch.utils.data.Dataset:
        if isinstance(X, torch.utils.data.Dataset):
            return X
        if y is not None:
            raise TypeError(
                f"{type(self).__name__}.get_dataset takes graphs only; targets are encoded in fit."
            )
        return CrystalGraphDataset(check_graphs(X, type(self).__name__))

    def infer(self, x: GraphBatch, **fit_params) -> torch.Tensor:
        return self.module_(x.to(self.device), **fit_params)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """The criterion's loss, a weighted mean over the rows when ``sample_weight`` was given."""
        weight = getattr(X, "sample_weight", None)
        if weight is None:
            return super().get_loss(y_pred, y_true, X=X, training=training)
        y_true = y_true.to(y_pred.device)
        reduction = self.criterion_.reduction
        self.criterion_.reduction = "none"
        try:
            per_row = self.criterion_(y_pred, y_true)
        finally:
            self.criterion_.reduction = reduction
        per_row = per_row.reshape(len(weight), -1).mean(dim=1)
        weight = weight.to(per_row.device)
        return (per_row * weight).sum() / weight.sum().clamp_min(torch.finfo(weight.dtype).tiny)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.non_deterministic = self.random_state is None
        return tags
