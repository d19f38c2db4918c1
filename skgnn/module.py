"""The CGCNN network in plain torch: gated graph convolutions, then pooling and an MLP head."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .edges import (
    EdgeConvolution,
    EdgeFeatures,
    EdgePlan,
    edge_plan,
    update_running_statistics,
)
from .gaussians import GaussianWindow
from .graphs import GraphBatch
from .readout import CrystalReadout, pool

__all__ = ["CGCNN", "CGConv", "batch_norm", "edge_rows", "pool"]


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
    the straightforward form. The first BatchNorm, an affine map per column
    once its statistics are known, is folded into those weights: the running
    statistics in evaluation, the batch's in training (from per-atom and
    per-Gaussian moments). Each edge then sums three rows in one pass: its
    centre's term, its neighbour's, and the Gaussian term of its length,
    computed once per distinct length. This edge half is one autograd node
    with a hand-written backward (:class:`skgnn.edges.EdgeConvolution`).
    :meth:`plain_forward` is the form as written, used when the edge features
    need a gradient; the two agree to float64 rounding (``tests/test_module.py``).

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

    def forward(
        self,
        atom_fea: Tensor,
        edge_fea: Tensor | GaussianWindow | EdgeFeatures | EdgePlan,
        edge_index: Tensor,
    ) -> Tensor:
        """Update the atom vectors.

        Parameters
        ----------
        atom_fea : Tensor, shape (n_atoms, atom_fea_len)
        edge_fea : Tensor of shape (n_edges, nbr_fea_len), GaussianWindow, EdgeFeatures or EdgePlan
            The edge vectors: dense, as each edge's non-zero Gaussians, stored
            once per distinct value, or as the :class:`~skgnn.edges.EdgePlan`
            that several convolutions share.
        edge_index : Tensor of int64, shape (2, n_edges)
            Centre atom ``i`` (row 0) and neighbour atom ``j`` (row 1) of each edge.
        """
        if isinstance(edge_fea, EdgePlan):
            plan = edge_fea
        else:
            plan = edge_plan(
                edge_fea, edge_index, len(atom_fea), n_features=self.nbr_fea_len,
                gradients=torch.is_grad_enabled(), statistics=self.bn1.training,
            )  # fmt: skip
        bn = self.bn1
        batch_statistics = bn.training or bn.running_mean is None
        # one edge has no variance: normalised with the running statistics, as in batch_norm()
        if plan.n_edges <= 1 and bn.running_mean is not None:
            batch_statistics = False
        features = plan.features
        if features.table.requires_grad:  # gradients for the edge features too: the plain form
            edge_fea = features.table[features.index]
            return self.plain_forward(atom_fea, edge_fea, edge_index, batch_statistics)
        if batch_statistics and plan.moments is None:
            raise ValueError("Batch statistics need an EdgePlan built with statistics=True.")
        fc = self.fc_full
        summed = EdgeConvolution.apply(
            atom_fea, fc.weight, fc.bias, bn.weight, bn.bias, plan, bn, batch_statistics
        )
        return nn.functional.softplus(atom_fea + batch_norm(self.bn2, summed))

    def plain_forward(
        self, atom_fea: Tensor, edge_fea: Tensor, edge_index: Tensor, batch_statistics: bool
    ) -> Tensor:
        """The convolution as written: ``z = v_i ⊕ v_j ⊕ u_ij`` per edge, then one layer."""
        center, neighbor = edge_index
        z = torch.cat([atom_fea[center], atom_fea[neighbor], edge_fea], dim=1)
        gated, bn = self.fc_full(z), self.bn1
        if batch_statistics:
            var, mean = torch.var_mean(gated, dim=0, correction=0)
            with torch.no_grad():
                update_running_statistics(bn, mean, var, len(gated))
        else:
            mean, var = bn.running_mean, bn.running_var
        gated = (gated - mean) * (torch.rsqrt(var + bn.eps) * bn.weight) + bn.bias
        nbr_filter, nbr_core = gated.chunk(2, dim=1)
        message = torch.sigmoid(nbr_filter) * nn.functional.softplus(nbr_core)
        summed = torch.zeros_like(atom_fea).index_add_(0, center, message)
        return nn.functional.softplus(atom_fea + batch_norm(self.bn2, summed))

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


def edge_rows(window: GaussianWindow, edge_index: Tensor, n_atoms: int) -> GaussianWindow:
    """What :class:`CGConv` takes for a window: the window itself.

    Kept for callers of the former per-edge row index; ``CGConv`` builds its
    :class:`~skgnn.edges.EdgePlan` from the window and ``edge_index``.
    """
    return window


class CGCNN(CrystalReadout):
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
    readout : {"crystal", "atom"}, default="crystal"
        ``"crystal"`` pools the atom vectors, then the head predicts (the
        reference CGCNN). ``"atom"`` applies the head to every atom and pools
        its outputs last, so each prediction is exactly the sum or mean of
        per-atom contributions (:meth:`atom_outputs`).
    pool_layers : {"last", "all"}, default="last"
        Pool the atom vectors of the last convolution (the reference code) or
        their mean over the embedding and every convolution (the paper's
        equation, :class:`~skgnn.readout.CrystalReadout`).
    """

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
        readout: str = "crystal",
        pool_layers: str = "last",
    ) -> None:
        self._check_parameters(locals())
        super().__init__()
        self.pooling = pooling
        self.readout = readout
        self.pool_layers = pool_layers
        self.embedding = nn.Linear(orig_atom_fea_len, atom_fea_len)
        self.convs = nn.ModuleList(CGConv(atom_fea_len, nbr_fea_len) for _ in range(n_conv))
        self._build_head(atom_fea_len, h_fea_len, n_h, n_out, dropout)
        self.reset_parameters()

    def layer_vectors(self, batch: GraphBatch) -> list[Tensor]:
        """The atom vectors after the embedding and after each convolution."""
        atom_fea = self.embedding(batch.atom_fea)
        plan = edge_plan(
            batch.edge_features, batch.edge_index, len(atom_fea),
            gradients=torch.is_grad_enabled(), statistics=self.training,
        )  # fmt: skip
        layers = [atom_fea]
        for conv in self.convs:
            layers.append(conv(layers[-1], plan, batch.edge_index))
        return layers

    def __repr__(self) -> str:
        conv = self.convs[0] if len(self.convs) else None
        layers = "" if self.pool_layers == "last" else f"pool_layers={self.pool_layers!r}, "
        return (
            f"{type(self).__name__}(n_conv={len(self.convs)}, conv={conv!r}, "
            f"n_h={len(self.hidden)}, pooling={self.pooling!r}, readout={self.readout!r}, "
            f"{layers}n_out={self.fc_out.out_features})"
        )
