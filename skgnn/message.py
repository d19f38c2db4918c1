r"""MessageNet: message passing with a deep edge MLP, in the spirit of coGN.

coGN (Ruff et al., 2023) reached the top of Matbench's perovskites board with
no angles at all: 24 nearest neighbours, an edge MLP of several layers on
both atoms and the edge, sum aggregation and a residual node update. Its
authors credit "optimized connectivity and deeper message functions".
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import NamedTuple

import torch
from sklearn.utils._param_validation import Interval, StrOptions
from torch import Tensor, nn

from .angles import ThreeBody, Triplets, triplets
from .edges import EdgeFeatures, Segments, _grouped, segment_sum
from .graphs import GraphBatch
from .radial import RadialBasis
from .readout import CrystalReadout


class EdgeRows(NamedTuple):
    """Where each edge reads its three first-layer terms, shared by the layers of a batch.

    ``rows[3k : 3k + 3]`` are edge ``k``'s rows of the table
    ``[centre terms; neighbour terms; edge terms]`` (``2 n_atoms + n_values``
    rows); ``degree`` counts each atom's edges as a centre; ``by_row`` groups
    the edges of each table row, for the backward pass (``None`` without
    gradients).
    """

    rows: Tensor
    offsets: Tensor
    center: Tensor
    degree: Tensor
    n_atoms: int
    by_row: Segments | None = None


def edge_rows(edges: EdgeFeatures, edge_index: Tensor, n_atoms: int) -> EdgeRows:
    """The :class:`EdgeRows` of a batch."""
    center, neighbor = edge_index
    rows = torch.stack([center, neighbor + n_atoms, edges.index + 2 * n_atoms], dim=1).view(-1)
    offsets = torch.arange(0, rows.numel(), 3, device=center.device)
    degree = torch.bincount(center, minlength=n_atoms)
    by_row = None
    if torch.is_grad_enabled():  # grouped once here, not sorted again by every layer's backward
        by_row, _ = _grouped(rows, 2 * n_atoms + len(edges.table))
        by_row = by_row._replace(order=by_row.order // 3)  # entries 3k..3k+2 are edge k
    return EdgeRows(rows, offsets, center, degree, n_atoms, by_row)


class RowSum(torch.autograd.Function):
    """``embedding_bag(table, rows)``: each edge sums its three table rows.

    The backward sums each table row's edges by the groups of
    :attr:`EdgeRows.by_row`, made once per batch, where autograd's
    ``embedding_bag`` backward sorts the rows again in every layer.
    """

    @staticmethod
    def forward(ctx, table: Tensor, rows: EdgeRows) -> Tensor:
        ctx.rows = rows
        return torch.embedding_bag(table, rows.rows, rows.offsets, False, 0)[0]

    @staticmethod
    def backward(ctx, grad: Tensor):
        if ctx.rows.by_row is None:
            raise RuntimeError("The EdgeRows were made without gradients enabled.")
        return segment_sum(grad.contiguous(), ctx.rows.by_row), None


class MessageLayer(nn.Module):
    r"""One layer: an edge MLP on both atoms and the edge, aggregated, a residual update.

    .. math::
        \mathbf{h}^{(1)}_{ij} = \phi(\mathbf{v}_i \mathbf{W}_1 + \mathbf{v}_j \mathbf{W}_2
            + \mathbf{e}_{ij} \mathbf{W}_3 + \mathbf{b}_1), \qquad
        \mathbf{h}^{(l)}_{ij} = \phi(\mathbf{h}^{(l-1)}_{ij} \mathbf{W}_l + \mathbf{b}_l),

    .. math::
        \mathbf{v}_i' = \mathbf{v}_i + \phi\Big(\Big(\bigoplus_j \mathbf{h}^{(L)}_{ij}\Big)
            \mathbf{W}_v + \mathbf{b}_v\Big)

    with ``φ`` the SiLU and ``⊕`` a sum or a mean over atom ``i``'s edges.
    With ``n_angle_basis``, the first layer's sum also holds the edge's
    three-body term :math:`\tilde{\mathbf{e}}_{ij}` (:mod:`skgnn.angles`),
    from the bond angles at ``i``.
    The first layer is one linear layer on ``v_i ⊕ v_j ⊕ e_ij`` applied by
    parts: the atom terms once per atom, the edge term once per distinct
    edge vector (a length recurs across a batch), and each edge sums its
    three rows in one ``embedding_bag``. :meth:`plain_forward` is the form as
    written; the two agree to float64 rounding (``tests/test_message.py``).
    The update's linear layer comes after the aggregation, so it too runs
    once per atom.

    Parameters
    ----------
    atom_fea_len : int
        Length of the atom vectors ``v``.
    edge_fea_len : int
        Length of the edge vectors ``e``.
    edge_layers : int, default=2
        ``L``, the linear layers of the edge MLP.
    edge_width : int, default=128
        Width of the edge MLP.
    aggregation : {"sum", "mean"}, default="sum"
    n_angle_basis : int, default=0
        Angle basis functions of the three-body term (``l_max + 1``); 0 for no term.
    """

    def __init__(
        self,
        atom_fea_len: int,
        edge_fea_len: int,
        edge_layers: int = 2,
        edge_width: int = 128,
        aggregation: str = "sum",
        n_angle_basis: int = 0,
    ) -> None:
        super().__init__()
        self.atom_fea_len = atom_fea_len
        self.edge_fea_len = edge_fea_len
        self.aggregation = aggregation
        self.first = nn.Linear(2 * atom_fea_len + edge_fea_len, edge_width)
        self.edge_mlp = nn.ModuleList(
            nn.Linear(edge_width, edge_width) for _ in range(edge_layers - 1)
        )
        self.update = nn.Linear(edge_width, atom_fea_len)
        self.three_body = (
            ThreeBody(atom_fea_len, n_angle_basis, edge_width) if n_angle_basis else None
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for layer in (self.first, *self.edge_mlp, self.update):
            layer.reset_parameters()
        if self.three_body is not None:
            self.three_body.reset_parameters()

    def forward(
        self,
        atom_fea: Tensor,
        edges: EdgeFeatures,
        rows: EdgeRows,
        triplets: Triplets | None = None,
    ) -> Tensor:
        """Update the atom vectors ``(n_atoms, atom_fea_len)`` from the edges' features."""
        n = self.atom_fea_len
        weight = self.first.weight
        # one matmul for both atom terms: (n_atoms, 2 w), the centre's half then the neighbour's
        atom_terms = atom_fea @ torch.cat([weight[:, :n], weight[:, n : 2 * n]]).T
        centre, neighbour = atom_terms.chunk(2, dim=1)
        edge_terms = torch.addmm(self.first.bias, edges.table, weight[:, 2 * n :].T)
        table = torch.cat([centre, neighbour, edge_terms])
        hidden = RowSum.apply(table, rows)
        if self.three_body is not None:
            hidden = hidden + self.three_body(atom_fea, self._required(triplets))
        return self._finish(atom_fea, nn.functional.silu(hidden), rows)

    def _required(self, triplets: Triplets | None) -> Triplets:
        if triplets is None:
            raise ValueError("This layer has a three-body term: pass the batch's triplets.")
        return triplets

    def plain_forward(
        self,
        atom_fea: Tensor,
        edge_fea: Tensor,
        edge_index: Tensor,
        triplets: Triplets | None = None,
    ) -> Tensor:
        """The layer as written: ``z = v_i ⊕ v_j ⊕ e_ij`` per edge, then the MLP."""
        center, neighbor = edge_index
        z = torch.cat([atom_fea[center], atom_fea[neighbor], edge_fea], dim=1)
        hidden = self.first(z)
        if self.three_body is not None:
            hidden = hidden + self.three_body(atom_fea, self._required(triplets))
        hidden = nn.functional.silu(hidden)
        for layer in self.edge_mlp:
            hidden = nn.functional.silu(layer(hidden))
        summed = hidden.new_zeros(len(atom_fea), hidden.shape[1]).index_add_(0, center, hidden)
        if self.aggregation == "mean":
            degree = torch.bincount(center, minlength=len(atom_fea)).clamp_(min=1)
            summed = summed / degree[:, None]
        return atom_fea + nn.functional.silu(self.update(summed))

    def _finish(self, atom_fea: Tensor, hidden: Tensor, rows: EdgeRows) -> Tensor:
        for layer in self.edge_mlp:
            hidden = nn.functional.silu(layer(hidden))
        summed = hidden.new_zeros(rows.n_atoms, hidden.shape[1]).index_add_(0, rows.center, hidden)
        if self.aggregation == "mean":
            summed = summed / rows.degree.clamp(min=1).to(summed.dtype)[:, None]
        return atom_fea + nn.functional.silu(self.update(summed))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.atom_fea_len}, edge_fea_len={self.edge_fea_len}, "
            f"edge_layers={1 + len(self.edge_mlp)}, edge_width={self.first.out_features}, "
            f"aggregation={self.aggregation!r}"
            + (f", n_angle_basis={self.three_body.gate.out_features}" if self.three_body else "")
            + ")"
        )


class MessageNet(CrystalReadout):
    """Message passing with a deep edge MLP and residual updates, for crystals (coGN-like).

    Embedding of the element features, ``n_conv`` :class:`MessageLayer`
    layers, pooling over the atoms of each crystal (of the last layer or of
    all layers), then an MLP head with SiLU activations. Train it through the
    same estimators as the CGCNN: ``CGCNNRegressor(module="message")`` or
    ``module=MessageNet``; the graphs of a
    ``CrystalGraphTransformer(max_neighbors=24)`` give it coGN's connectivity.

    Parameters
    ----------
    orig_atom_fea_len : int, default=92
        Length of the element feature vectors; the estimators set it from the data.
    nbr_fea_len : int, default=41
        Number of Gaussians per edge; the estimators set it from the data.
    atom_fea_len : int, default=128
        Atom vector length.
    n_conv : int, default=4
        Message passing layers.
    edge_layers : int, default=2
        Linear layers of each edge MLP.
    edge_width : int, default=128
        Width of the edge MLPs.
    aggregation : {"sum", "mean"}, default="sum"
        How an atom combines its edges' messages.
    edge_basis : {"gaussian", "radial"}, default="gaussian"
        The edge features: the graphs' Gaussians, or ``n_radial`` functions
        of a smooth-cutoff radial basis (:mod:`skgnn.radial`) reaching zero at
        ``cutoff``.
    n_radial : int, default=16
        Functions of the radial basis.
    cutoff : float, default=8.0
        Where the radial basis ends, Å; the estimators set it to the graphs' cutoff.
    h_fea_len : int, default=128
        Width of the hidden layers of the head.
    n_h : int, default=1
        Hidden layers of the head.
    pooling : {"mean", "sum", "max"}, default="mean"
    pool_layers : {"last", "all"}, default="last"
        Pool the last layer's atom vectors, or their mean over the embedding
        and every layer (:class:`~skgnn.readout.CrystalReadout`).
    n_out : int, default=1
        Outputs: targets for regression, classes for classification.
    dropout : float, default=0.0
        Dropout before the output layer.
    readout : {"crystal", "atom"}, default="crystal"
        Pool then predict, or predict per atom then pool (contributions).
    three_body : bool, default=False
        Add M3GNet's three-body (bond angle) term to every layer's edge MLP
        (:mod:`skgnn.angles`): angles of the pairs of edges within
        ``three_body_cutoff`` of their common centre, computed per batch
        from the graphs' edge vectors.
    three_body_cutoff : float, default=4.0
        Edges longer than this (Å) form no triplets; the term goes smoothly
        to zero there. Only edges of the graph count, so it should not exceed
        the distance of the graphs' ``max_neighbors``-th neighbour.
    three_body_lmax : int, default=3
        Highest Legendre degree of the angle basis.
    """

    activation = staticmethod(nn.functional.silu)

    _parameter_constraints: dict = {
        **CrystalReadout._parameter_constraints,
        "edge_layers": [Interval(Integral, 1, None, closed="left")],
        "edge_width": [Interval(Integral, 1, None, closed="left")],
        "aggregation": [StrOptions({"sum", "mean"})],
        "edge_basis": [StrOptions({"gaussian", "radial"})],
        "n_radial": [Interval(Integral, 1, None, closed="left")],
        "cutoff": [Interval(Real, 0, None, closed="neither")],
        "three_body": ["boolean"],
        "three_body_cutoff": [Interval(Real, 0, None, closed="neither")],
        "three_body_lmax": [Interval(Integral, 0, None, closed="left")],
    }

    def __init__(
        self,
        orig_atom_fea_len: int = 92,
        nbr_fea_len: int = 41,
        atom_fea_len: int = 128,
        n_conv: int = 4,
        edge_layers: int = 2,
        edge_width: int = 128,
        aggregation: str = "sum",
        edge_basis: str = "gaussian",
        n_radial: int = 16,
        cutoff: float = 8.0,
        h_fea_len: int = 128,
        n_h: int = 1,
        pooling: str = "mean",
        pool_layers: str = "last",
        n_out: int = 1,
        dropout: float = 0.0,
        readout: str = "crystal",
        three_body: bool = False,
        three_body_cutoff: float = 4.0,
        three_body_lmax: int = 3,
    ) -> None:
        self._check_parameters(locals())
        super().__init__()
        self.pooling = pooling
        self.readout = readout
        self.pool_layers = pool_layers
        self.edge_basis = edge_basis
        self.three_body_cutoff = float(three_body_cutoff) if three_body else None
        self.three_body_lmax = three_body_lmax
        self.radial = RadialBasis(cutoff, n_radial) if edge_basis == "radial" else None
        edge_fea_len = n_radial if edge_basis == "radial" else nbr_fea_len
        self.embedding = nn.Linear(orig_atom_fea_len, atom_fea_len)
        n_angles = three_body_lmax + 1 if three_body else 0
        self.convs = nn.ModuleList(
            MessageLayer(atom_fea_len, edge_fea_len, edge_layers, edge_width, aggregation, n_angles)
            for _ in range(n_conv)
        )
        self._build_head(atom_fea_len, h_fea_len, n_h, n_out, dropout)
        self.reset_parameters()

    def edge_features(self, batch: GraphBatch) -> EdgeFeatures:
        """The edge vectors, computed once per distinct edge length of the batch."""
        if self.radial is None:
            return batch.edge_features
        lengths, index = torch.unique(batch.edge_length, return_inverse=True)
        return EdgeFeatures(self.radial(lengths.to(batch.atom_fea.dtype)), index)

    def layer_vectors(self, batch: GraphBatch) -> list[Tensor]:
        """The atom vectors after the embedding and after each message passing layer."""
        layers = [self.embedding(batch.atom_fea)]
        edges = self.edge_features(batch)
        rows = edge_rows(edges, batch.edge_index, len(layers[0]))
        angles = self.triplets(batch)
        for conv in self.convs:
            layers.append(conv(layers[-1], edges, rows, angles))
        return layers

    def triplets(self, batch: GraphBatch) -> Triplets | None:
        """The batch's bond-angle triplets, made once for all layers; ``None`` without the term."""
        if self.three_body_cutoff is None:
            return None
        if batch.edge_vector is None:
            raise ValueError(
                "MessageNet(three_body=True) needs the edges' displacement vectors, and these "
                "crystal graphs have none: they were built, pickled or stored by an skgnn that "
                "did not keep them. Build them again with CrystalGraphTransformer."
            )
        vectors = batch.edge_vector.to(batch.atom_fea.dtype)
        return triplets(vectors, batch.edge_index, self.three_body_cutoff, self.three_body_lmax)

    def __repr__(self) -> str:
        conv = self.convs[0] if len(self.convs) else None
        return (
            f"{type(self).__name__}(n_conv={len(self.convs)}, conv={conv!r}, "
            f"edge_basis={self.edge_basis!r}, three_body_cutoff={self.three_body_cutoff}, "
            f"n_h={len(self.hidden)}, pooling={self.pooling!r}, "
            f"pool_layers={self.pool_layers!r}, readout={self.readout!r}, "
            f"n_out={self.fc_out.out_features})"
        )
