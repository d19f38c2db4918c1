"""The CGCNN network in plain torch: gated graph convolutions, pooling and an MLP head."""

from __future__ import annotations

from numbers import Integral, Real
from typing import NamedTuple

import torch
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints
from torch import Tensor, nn

from .gaussians import GaussianWindow
from .graphs import GraphBatch


class CGConv(nn.Module):
    r"""The gated convolution of CGCNN (Xie & Grossman, PRL 2018, eq. 5).

    .. math::
        \mathbf{z}_{ij} = \mathbf{v}_i \oplus \mathbf{v}_j \oplus \mathbf{u}_{ij}, \qquad
        \mathbf{v}_i' = g\Big(\mathbf{v}_i + \mathrm{BN}\Big(\sum_{j}
            \sigma(\mathbf{z}_{ij} \mathbf{W}_f + \mathbf{b}_f) \odot
            g(\mathbf{z}_{ij} \mathbf{W}_s + \mathbf{b}_s)\Big)\Big)

    with ``g`` the softplus and a BatchNorm on the gated pre-activations, as
    in the reference code. The filter and core weights form one linear layer
    on ``z``; it is applied by parts, ``z W = v_i W_1 + v_j W_2 + u_ij W_3``,
    so the two atom terms are computed once per atom instead of once per
    edge (a ``max_neighbors``-fold saving) while the parameters stay those of
    the straightforward form. In evaluation mode the first BatchNorm, an
    affine map then, is folded into that layer's weights. Given
    :class:`EdgeRows`, each edge sums its two atom terms and the rows of
    ``W_3`` for its few non-negligible Gaussians in one ``embedding_bag``
    instead of a dense matmul over all Gaussians.

    Parameters
    ----------
    atom_fea_len : int
        Length of the atom (node) vectors ``v``.
    nbr_fea_len : int
        Length of the edge vectors ``u``.
    """

    def __init__(self, atom_fea_len: int, nbr_fea_len: int) -> None:
        super().__init__()
        self.atom_fea_len = atom_fea_len
        self.nbr_fea_len = nbr_fea_len
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.fc_full.reset_parameters()
        self.bn1.reset_parameters()
        self.bn2.reset_parameters()

    def forward(self, atom_fea: Tensor, edge_fea: Tensor | EdgeRows, edge_index: Tensor) -> Tensor:
        """Update the atom vectors.

        Parameters
        ----------
        atom_fea : Tensor, shape (n_atoms, atom_fea_len)
        edge_fea : Tensor, shape (n_edges, nbr_fea_len), or EdgeRows
            The edge vectors, dense or as the rows each edge sums (built by
            :func:`edge_rows` from the non-negligible Gaussians).
        edge_index : Tensor of int64, shape (2, n_edges)
            Centre atom ``i`` (row 0) and neighbour atom ``j`` (row 1) of each edge.
        """
        weight, bias = self._gate_weights()
        n = self.atom_fea_len
        w_center, w_neighbor, w_edge = weight.split([n, n, self.nbr_fea_len], dim=1)
        center, neighbor = edge_index
        # the bias rides on the centre atoms' term: added once per atom, not per edge
        atom_bias = torch.cat([bias, bias.new_zeros(2 * n)])
        atom_terms = torch.addmm(atom_bias, atom_fea, torch.cat([w_center, w_neighbor]).T)
        center_terms, neighbor_terms = atom_terms.split(2 * n, dim=1)
        if isinstance(edge_fea, EdgeRows):
            table = torch.cat([center_terms, neighbor_terms, w_edge.T])
            gated = nn.functional.embedding_bag(
                edge_fea.index, table, per_sample_weights=edge_fea.weight, mode="sum"
            )
        else:
            gated = torch.addmm(center_terms.index_select(0, center), edge_fea, w_edge.T)
            gated += neighbor_terms.index_select(0, neighbor)
        if self.training:
            gated = batch_norm(self.bn1, gated)
        nbr_filter, nbr_core = gated.chunk(2, dim=1)
        message = torch.sigmoid(nbr_filter) * nn.functional.softplus(nbr_core)
        summed = torch.zeros_like(atom_fea).index_add_(0, center, message)
        return nn.functional.softplus(atom_fea + batch_norm(self.bn2, summed))

    def _gate_weights(self) -> tuple[Tensor, Tensor]:
        """Weights of the gate layer; in evaluation, with ``bn1`` folded in (one pass less)."""
        weight, bias = self.fc_full.weight, self.fc_full.bias
        if self.training:
            return weight, bias
        bn = self.bn1
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        return weight * scale[:, None], (bias - bn.running_mean) * scale + bn.bias

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.atom_fea_len}, nbr_fea_len={self.nbr_fea_len})"


def batch_norm(bn: nn.BatchNorm1d, x: Tensor) -> Tensor:
    """``bn(x)``, normalising a single row with the running statistics.

    A training batch may hold one atom in all (a one-atom cell left alone at
    the end of an epoch): a variance of one row is undefined and ``bn`` would
    raise, so that row is normalised as in evaluation and the statistics are
    left untouched.
    """
    if not bn.training or len(x) > 1:
        return bn(x)
    return nn.functional.batch_norm(
        x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps
    )


class EdgeRows(NamedTuple):
    """Per edge, the rows of ``[centre terms; neighbour terms; W_3ᵀ]`` to sum, and their weights.

    The first two rows are the edge's centre and neighbour atoms (weight 1),
    the others its non-negligible Gaussians (weight: the Gaussian's value);
    one ``embedding_bag`` then does the two gathers, the Gaussian sum and the
    additions in a single pass over the edges. Built once per forward pass by
    :func:`edge_rows`, shared by every convolution.
    """

    index: Tensor
    weight: Tensor


def edge_rows(window: GaussianWindow, edge_index: Tensor, n_atoms: int) -> EdgeRows:
    """The :class:`EdgeRows` of a batch from its Gaussian window and edges."""
    center, neighbor = edge_index
    index = torch.cat(
        [center[:, None], neighbor[:, None] + n_atoms, window.index + 2 * n_atoms], dim=1
    )
    weight = torch.cat([window.value.new_ones(len(center), 2), window.value], dim=1)
    return EdgeRows(index, weight)


def pool(atom_fea: Tensor, graph_index: Tensor, n_graphs: int, how: str) -> Tensor:
    """Reduce atom vectors to one vector per graph by ``how`` in {"mean", "sum", "max"}."""
    index = graph_index[:, None].expand_as(atom_fea)
    out = atom_fea.new_zeros(n_graphs, atom_fea.shape[1])
    reduce = {"mean": "mean", "sum": "sum", "max": "amax"}[how]
    return out.scatter_reduce(0, index, atom_fea, reduce=reduce, include_self=False)


class CGCNN(nn.Module):
    """Crystal Graph Convolutional Neural Network (Xie & Grossman, PRL 120, 145301, 2018).

    Embedding of the element features, ``n_conv`` :class:`CGConv` layers,
    pooling over the atoms of each crystal, then an MLP head of ``n_h``
    hidden layers with softplus activations, as the reference implementation.

    Parameters
    ----------
    orig_atom_fea_len : int, default=92
        Length of the element feature vectors; the estimators set it from the data.
    nbr_fea_len : int, default=41
        Number of Gaussians per edge; the estimators set it from the data.
    atom_fea_len : int, default=64
        Hidden atom vector length.
    n_conv : int, default=3
        Number of convolutions.
    h_fea_len : int, default=128
        Width of the hidden layers of the head.
    n_h : int, default=1
        Number of hidden layers of the head.
    pooling : {"mean", "sum", "max"}, default="mean"
        How atom vectors become the crystal vector.
    n_out : int, default=1
        Outputs: targets for regression, classes for classification.
    dropout : float, default=0.0
        Dropout before the output layer.
    """

    _parameter_constraints: dict = {
        "orig_atom_fea_len": [Interval(Integral, 1, None, closed="left")],
        "nbr_fea_len": [Interval(Integral, 1, None, closed="left")],
        "atom_fea_len": [Interval(Integral, 1, None, closed="left")],
        "n_conv": [Interval(Integral, 0, None, closed="left")],
        "h_fea_len": [Interval(Integral, 1, None, closed="left")],
        "n_h": [Interval(Integral, 1, None, closed="left")],
        "pooling": [StrOptions({"mean", "sum", "max"})],
        "n_out": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
    }

    def __init__(
        self,
        orig_atom_fea_len: int = 92,
        nbr_fea_len: int = 41,
        atom_fea_len: int = 64,
        n_conv: int = 3,
        h_fea_len: int = 128,
        n_h: int = 1,
        pooling: str = "mean",
        n_out: int = 1,
        dropout: float = 0.0,
    ) -> None:
        arguments = locals()
        super().__init__()
        validate_parameter_constraints(
            self._parameter_constraints,
            {name: arguments[name] for name in self._parameter_constraints},
            caller_name=type(self).__name__,
        )
        self.pooling = pooling
        self.embedding = nn.Linear(orig_atom_fea_len, atom_fea_len)
        self.convs = nn.ModuleList(CGConv(atom_fea_len, nbr_fea_len) for _ in range(n_conv))
        hidden = [nn.Linear(atom_fea_len, h_fea_len)]
        hidden += [nn.Linear(h_fea_len, h_fea_len) for _ in range(n_h - 1)]
        self.hidden = nn.ModuleList(hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc_out = nn.Linear(h_fea_len, n_out)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in (self.embedding, *self.convs, *self.hidden, self.fc_out):
            layer.reset_parameters()

    def forward(self, batch: GraphBatch) -> Tensor:
        """Predict one row of ``n_out`` values per graph of ``batch``."""
        atom_fea = self.embedding(batch.atom_fea)
        # summing rows per edge makes prediction ~1.5x faster than the matmul and gathers,
        # but its backward is far slower: it serves only when no gradient is recorded
        if torch.is_grad_enabled():
            edge_fea = batch.edge_fea
        else:
            edge_fea = edge_rows(batch.edge_window, batch.edge_index, len(atom_fea))
        for conv in self.convs:
            atom_fea = conv(atom_fea, edge_fea, batch.edge_index)
        crystal = pool(atom_fea, batch.graph_index, batch.n_graphs, self.pooling)
        crystal = nn.functional.softplus(crystal)
        for layer in self.hidden:
            crystal = nn.functional.softplus(layer(crystal))
        return self.fc_out(self.dropout(crystal))

    def __repr__(self) -> str:
        conv = self.convs[0] if len(self.convs) else None
        return (
            f"{type(self).__name__}(n_conv={len(self.convs)}, conv={conv!r}, "
            f"n_h={len(self.hidden)}, pooling={self.pooling!r}, n_out={self.fc_out.out_features})"
        )
