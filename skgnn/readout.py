"""What every skgnn network ends with: atom vectors pooled per crystal, then an MLP head."""

from __future__ import annotations

from numbers import Integral, Real

import torch
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from torch import Tensor, nn

from .graphs import GraphBatch

POOLINGS = ("mean", "sum", "max")


def pool(atom_fea: Tensor, graph_index: Tensor, n_graphs: int, how: str) -> Tensor:
    """Reduce atom vectors to one vector per graph by ``how`` in {"mean", "sum", "max"}."""
    index = graph_index[:, None].expand_as(atom_fea)
    out = atom_fea.new_zeros(n_graphs, atom_fea.shape[1])
    reduce = {"mean": "mean", "sum": "sum", "max": "amax"}[how]
    return out.scatter_reduce(0, index, atom_fea, reduce=reduce, include_self=False)


class CrystalReadout(nn.Module):
    r"""Base of skgnn's networks: per-layer atom vectors, pooling and the MLP head.

    A subclass builds ``embedding`` (element features to atom vectors),
    ``hidden`` (the head's hidden layers), ``dropout`` and ``fc_out``, sets
    ``pooling``, ``readout`` and ``pool_layers``, and implements
    :meth:`layer_vectors`. The crystal vector pools the atom vectors of the
    last layer (``pool_layers="last"``, the reference CGCNN code) or their
    mean over every layer, the embedding included (``"all"``): for mean
    pooling that is the CGCNN paper's
    :math:`\mathbf{v}_c = \mathrm{Pool}(\mathbf{v}^{(0)}_0, \ldots, \mathbf{v}^{(R)}_N)`,
    which keeps the less smoothed early layers in the crystal vector.
    """

    #: The head's activation, applied to the pooled vector and after each hidden layer.
    activation = staticmethod(nn.functional.softplus)

    #: The arguments every network takes; a subclass adds its own to these.
    _parameter_constraints: dict = {
        "orig_atom_fea_len": [Interval(Integral, 1, None, closed="left")],
        "nbr_fea_len": [Interval(Integral, 1, None, closed="left")],
        "atom_fea_len": [Interval(Integral, 1, None, closed="left")],
        "n_conv": [Interval(Integral, 0, None, closed="left")],
        "h_fea_len": [Interval(Integral, 1, None, closed="left")],
        "n_h": [Interval(Integral, 1, None, closed="left")],
        "pooling": [StrOptions(set(POOLINGS))],
        "pool_layers": [StrOptions({"last", "all"})],
        "n_out": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "readout": [StrOptions({"crystal", "atom"})],
    }

    @classmethod
    def _check_parameters(cls, arguments: dict) -> None:
        """Refuse ``__init__`` arguments outside ``cls._parameter_constraints``, by name."""
        validate_parameter_constraints(
            cls._parameter_constraints,
            {name: arguments[name] for name in cls._parameter_constraints},
            caller_name=cls.__name__,
        )

    def _build_head(
        self, atom_fea_len: int, h_fea_len: int, n_h: int, n_out: int, dropout: float
    ) -> None:
        """The head: ``n_h`` hidden layers of ``h_fea_len``, dropout, ``n_out`` outputs."""
        hidden = [nn.Linear(atom_fea_len, h_fea_len)]
        hidden += [nn.Linear(h_fea_len, h_fea_len) for _ in range(n_h - 1)]
        self.hidden = nn.ModuleList(hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc_out = nn.Linear(h_fea_len, n_out)

    def reset_parameters(self) -> None:
        for layer in (self.embedding, *self.convs, *self.hidden, self.fc_out):
            layer.reset_parameters()

    def layer_vectors(self, batch: GraphBatch) -> list[Tensor]:
        """The atom vectors after the embedding and after each layer, ``n_layers + 1`` tensors."""
        raise NotImplementedError

    def atom_vectors(self, batch: GraphBatch) -> Tensor:
        """The atom vectors that are pooled: the last layer's, or all layers' mean."""
        layers = self.layer_vectors(batch)
        if self.pool_layers == "last":
            return layers[-1]
        return torch.stack(layers).mean(dim=0)

    def forward(self, batch: GraphBatch) -> Tensor:
        """Predict one row of ``n_out`` values per graph of ``batch``."""
        if self.readout == "atom":
            return pool(self.atom_outputs(batch), batch.graph_index, batch.n_graphs, self.pooling)
        return self.fc_out(self.dropout(self.embed(batch, "hidden")))

    def embed(self, batch: GraphBatch, layer: str = "hidden") -> Tensor:
        """Crystal vectors: after pooling (``"pooled"``) or the head's hidden layers (``"hidden"``).

        With ``readout="atom"`` the head acts on atoms, and the vectors are
        pooled from its per-atom hidden activations.
        """
        if self.readout == "atom":
            atoms = self._head(self.atom_vectors(batch), layer)
            return pool(atoms, batch.graph_index, batch.n_graphs, self.pooling)
        crystal = pool(self.atom_vectors(batch), batch.graph_index, batch.n_graphs, self.pooling)
        return self._head(crystal, layer)

    def atom_outputs(self, batch: GraphBatch) -> Tensor:
        """With ``readout="atom"``, each atom's output: pooled, they are the prediction."""
        if self.readout != "atom":
            raise ValueError("atom_outputs needs readout='atom'; this network pools first.")
        return self.fc_out(self.dropout(self._head(self.atom_vectors(batch), "hidden")))

    def _head(self, vectors: Tensor, layer: str) -> Tensor:
        if layer not in ("pooled", "hidden"):
            raise ValueError(f"layer must be 'pooled' or 'hidden'; got {layer!r}.")
        vectors = self.activation(vectors)
        if layer == "pooled":
            return vectors
        for hidden in self.hidden:
            vectors = self.activation(hidden(vectors))
        return vectors
