r"""The edge half of a CGCNN convolution as one autograd node, its backward written out.

A convolution's cost sits in its per-edge tensors (12 edges an atom). Through
autograd, its gathers, BatchNorm, activations and scatter make a dozen passes
over them and some fifty small operations. Here the edge half,

.. math::
    \mathbf{s}_i = \sum_{j} \sigma(\mathbf{y}_{ij,f}) \odot g(\mathbf{y}_{ij,s}), \qquad
    \mathbf{y}_{ij} = \mathrm{BN}(\mathbf{v}_i \mathbf{W}_1 + \mathbf{v}_j \mathbf{W}_2
        + \mathbf{u}_{ij} \mathbf{W}_3 + \mathbf{b}),

is :class:`EdgeConvolution`:

- the BatchNorm, an affine map per column once its statistics are known, is
  folded into a table: rows ``v_a W_1`` and ``v_a W_2`` for every atom ``a``,
  then ``u W_3`` for every distinct edge feature vector ``u`` (a length
  recurs ~5 times in a batch of crystals), all scaled; each edge's ``y`` is
  the sum of its three rows, made for all edges by one ``embedding_bag``,
  torch's fastest CPU kernel for summing rows by index;
- the batch statistics come from per-atom and per-Gaussian moments:
  ``Σ y`` and ``Σ y²`` over the edges expand into edge counts, per-atom sums
  of Gaussians, their covariance and one sum of neighbour terms per centre
  atom (:class:`Moments`, built once per batch), so the edges' ``y`` is never
  normalised in a pass of its own;
- the backward sums ``∂y`` per table row (an ``embedding_bag`` and a matmul)
  where autograd would scatter, and differentiates the statistics per atom.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from . import fused
from .gaussians import GaussianWindow


class Segments(NamedTuple):
    """Rows grouped: group ``a`` is rows ``order[offsets[a]:offsets[a + 1]]``."""

    order: Tensor
    offsets: Tensor


def segment_sum(rows: Tensor, segments: Segments) -> Tensor:
    """Sum ``rows`` per group of ``segments``; one output row per group."""
    return torch.embedding_bag(rows, segments.order, segments.offsets, False, 0)[0]


def _grouped(keys: Tensor, n_groups: int) -> tuple[Segments, Tensor]:
    """Positions of ``keys`` grouped by value (stably), and the size of each group."""
    counts = torch.bincount(keys, minlength=n_groups)
    return Segments(torch.argsort(keys, stable=True), counts.cumsum(0) - counts), counts


class EdgeFeatures(NamedTuple):
    """Edge features stored once per distinct value: edge ``e`` has ``table[index[e]]``.

    Symmetry makes most edge lengths of a crystal recur (and every bond is
    also seen from its other end): a batch of perovskites holds ~5 edges per
    distinct length, so the Gaussians' share of the work is done per length.
    """

    table: Tensor
    index: Tensor


class Moments(NamedTuple):
    """What the BatchNorm statistics need of a batch's edges; built once for all convolutions.

    ``counts[a, 0]`` and ``counts[a, 1]`` count the edges with atom ``a`` as
    centre and as neighbour; ``feature_by_atom[2a]`` and ``[2a + 1]`` sum
    their edge features minus ``feature_mean``; ``feature_covariance`` is
    ``Σ (u - feature_mean)(u - feature_mean)ᵀ`` over the edges. ``neighbors``
    groups each centre atom's neighbours, ``centers`` each atom's centres.
    """

    counts: Tensor
    feature_mean: Tensor
    feature_covariance: Tensor
    feature_by_atom: Tensor
    neighbors: Segments
    centers: Segments


class EdgePlan(NamedTuple):
    """A batch's edges as the convolutions read them; built once per forward pass.

    Table row ``2a`` is atom ``a``'s centre term, row ``2a + 1`` its neighbour
    term, row ``2 n_atoms + r`` the Gaussian term of feature row ``r``; edge
    ``e`` sums the three rows ``rows[e]``. The backward pass reads ``by_row``
    (the edges of each table row), batch statistics read ``moments``.
    """

    rows: Tensor
    bag_offsets: Tensor
    center: Tensor
    by_center: Segments
    features: EdgeFeatures
    by_row: Segments | None = None
    moments: Moments | None = None

    @property
    def n_edges(self) -> int:
        return len(self.center)


def edge_plan(
    edges: Tensor | GaussianWindow | EdgeFeatures,
    edge_index: Tensor,
    n_atoms: int,
    *,
    n_features: int | None = None,
    gradients: bool = True,
    statistics: bool = True,
) -> EdgePlan:
    """The :class:`EdgePlan` of a batch.

    Parameters
    ----------
    edges : Tensor of shape (n_edges, n_features), GaussianWindow or EdgeFeatures
        Dense edge features, each edge's non-zero Gaussians, or features
        stored once per distinct value (:attr:`GraphBatch.edge_features`).
    edge_index : Tensor of int64, shape (2, n_edges)
        Centre (row 0) and neighbour (row 1) atom of each edge.
    n_atoms : int
    n_features : int, optional
        Number of Gaussians; required with a window.
    gradients : bool, default=True
        Prepare the backward pass.
    statistics : bool, default=True
        Prepare training-mode BatchNorm statistics (with ``gradients``).
    """
    center, neighbor = edge_index
    n_edges = len(center)
    if isinstance(edges, GaussianWindow):
        dense = edges.value.new_zeros(n_edges, n_features)
        edges = dense.scatter(1, edges.index, edges.value)
    if not isinstance(edges, EdgeFeatures):
        edges = EdgeFeatures(edges, torch.arange(n_edges, device=center.device))
    rows = torch.stack([2 * center, 2 * neighbor + 1, edges.index + 2 * n_atoms], dim=1)
    bag_offsets = torch.arange(0, 3 * n_edges, 3, device=center.device)
    by_center, _ = _grouped(center, n_atoms)
    plan = EdgePlan(rows, bag_offsets, center, by_center, edges)
    if not gradients:
        return plan

    n_values = len(edges.table)
    by_row, row_counts = _grouped(rows.view(-1), 2 * n_atoms + n_values)
    by_row = by_row._replace(order=by_row.order // 3)  # entries 3e, 3e + 1, 3e + 2 are edge e
    moments = None
    if statistics and n_edges > 1:
        table = edges.table.detach()
        value_counts = row_counts[2 * n_atoms :].to(table.dtype)
        mean = (value_counts @ table) / n_edges
        centred = table - mean
        # the atom rows come first in by_row: its first 2 n_edges entries group the atoms' edges
        atom_edges = by_row.order[: 2 * n_edges]
        by_neighbor, _ = _grouped(neighbor, n_atoms)
        moments = Moments(
            counts=row_counts[: 2 * n_atoms].view(n_atoms, 2).to(table.dtype),
            feature_mean=mean,
            feature_covariance=centred.T @ (centred * value_counts[:, None]),
            feature_by_atom=segment_sum(
                centred, Segments(edges.index[atom_edges], by_row.offsets[: 2 * n_atoms])
            ),
            neighbors=Segments(neighbor[by_center.order], by_center.offsets),
            centers=Segments(center[by_neighbor.order], by_neighbor.offsets),
        )
    return plan._replace(by_row=by_row, moments=moments)


class EdgeConvolution(torch.autograd.Function):
    """Atom vectors to the per-atom sums ``s`` of gated messages (see the module docstring).

    ``apply(atom_fea, weight, bias, bn_weight, bn_bias, plan, bn, batch_statistics)``
    with ``weight`` and ``bias`` the gate layer's, ``bn`` the first BatchNorm
    (its running statistics are read, or updated when ``batch_statistics``).
    """

    @staticmethod
    def forward(ctx, atom_fea, weight, bias, bn_weight, bn_bias, plan: EdgePlan,
                bn: nn.BatchNorm1d, batch_statistics: bool):  # fmt: skip
        n_atoms, n = atom_fea.shape
        n_out = weight.shape[0]
        w_atoms = weight[:, : 2 * n].reshape(n_out, 2, n).transpose(0, 1).reshape(2 * n_out, n)
        w_edge = weight[:, 2 * n :]
        atom_terms = (atom_fea @ w_atoms.T).view(n_atoms, 2, n_out)
        combined = None
        if batch_statistics:
            mean, var, statistics = _batch_statistics(atom_terms, w_edge, bias, plan)
            count = plan.n_edges
            # a BatchNorm over several processes' shards (skgnn.synced_batchnorm) combines them
            combine = getattr(bn, "combine_moments", None)
            combined = combine(mean, var, count) if combine is not None else None
            if combined is not None:
                mean, var, count = combined.mean, combined.var, combined.count
            update_running_statistics(bn, mean, var, count)
        else:
            mean, var, statistics = bn.running_mean, bn.running_var, None
        inv_std = torch.rsqrt(var + bn.eps)
        scale = bn_weight * inv_std
        shift = torch.stack([torch.addcmul(bn_bias, bias - mean, scale), torch.zeros_like(scale)])
        features = plan.features.table
        table = atom_terms.new_empty(2 * n_atoms + len(features), n_out)
        torch.addcmul(shift, atom_terms, scale, out=table[: 2 * n_atoms].view_as(atom_terms))
        torch.mm(features, w_edge.T * scale, out=table[2 * n_atoms :])

        summed, gate_filter, core_softplus, core_sigmoid = _gated_messages(table, plan)

        ctx.save_for_backward(gate_filter, core_softplus, core_sigmoid, atom_fea, w_atoms,
                              atom_terms, w_edge, bias, mean, scale, inv_std)  # fmt: skip
        ctx.plan, ctx.statistics = plan, statistics
        ctx.combined, ctx.bn = combined, bn
        return summed

    @staticmethod
    def backward(ctx, grad_summed):
        (gate_filter, core_softplus, core_sigmoid, atom_fea, w_atoms, atom_terms, w_edge, bias,
         mean, scale, inv_std) = ctx.saved_tensors  # fmt: skip
        plan: EdgePlan = ctx.plan
        if plan.by_row is None:
            raise RuntimeError("The EdgePlan was built with gradients=False.")
        # the table's gradient: each row's edges summed
        grad_table = _gated_messages_backward(
            grad_summed, plan, gate_filter, core_softplus, core_sigmoid
        )
        grad_rows = grad_table[: 2 * len(atom_fea)].view_as(atom_terms)
        grad_gaussians = plan.features.table.T @ grad_table[2 * len(atom_fea) :]

        # the fold: table = [atom_terms scale + (shift, 0); w_edgeᵀ scale]
        grad_shift = grad_rows[:, 0].sum(0)
        grad_scale = torch.linalg.vecdot(grad_rows, atom_terms, dim=0).sum(0)
        grad_scale += torch.linalg.vecdot(grad_gaussians, w_edge.T, dim=0)
        grad_scale.addcmul_(bias - mean, grad_shift)
        grad_bn_weight = grad_scale * inv_std
        grad_atom_terms = grad_rows * scale
        grad_w_edge = (grad_gaussians * scale).T
        grad_bias = grad_shift * scale
        if ctx.statistics is not None:
            grad_mean = -grad_bias
            grad_var = -0.5 * grad_scale * scale * inv_std.square()
            if ctx.combined is not None:  # to this shard's moments, from the whole batch's
                grad_mean, grad_var = ctx.bn.local_gradients(ctx.combined, grad_mean, grad_var)
            _batch_statistics_backward(ctx.statistics, grad_mean, grad_var, w_edge, plan,
                                       grad_atom_terms, grad_w_edge)  # fmt: skip
            grad_bias = grad_bias + grad_mean

        grad_atom_terms = grad_atom_terms.view(len(atom_fea), -1)
        grad_atom_fea = grad_atom_terms @ w_atoms
        grad_w_atoms = (grad_atom_terms.T @ atom_fea).view(2, len(scale), -1).transpose(0, 1)
        grad_weight = torch.cat([grad_w_atoms.flatten(1), grad_w_edge], dim=1)
        return grad_atom_fea, grad_weight, grad_bias, grad_bn_weight, grad_shift, None, None, None


def _gated_messages(table: Tensor, plan: EdgePlan) -> tuple[Tensor, ...]:
    """Per-atom sums of ``σ(f) g(s)``, and ``σ(f)``, ``g(s)``, ``σ(s)`` for the backward.

    Edge ``e``'s ``[f, s]`` is the sum of its three table rows. The fused kernel
    (:mod:`skgnn.fused`) makes it all in one pass over the edges; the torch form
    makes the same in a dozen.
    """
    gradients = plan.by_row is not None
    if fused.usable(table):
        out = fused.gate_forward(table, plan.rows, *plan.by_center, len(plan.by_center.offsets),
                                 keep=gradients)  # fmt: skip
        return tuple(out) if gradients else (out[0], None, None, None)
    gate = torch.embedding_bag(table, plan.rows.view(-1), plan.bag_offsets, False, 0)[0]
    gate_filter, gate_core = gate.chunk(2, dim=1)
    gate_filter = torch.sigmoid(gate_filter)
    core_softplus, core_sigmoid = softplus_and_sigmoid(gate_core, gradients)
    return (
        segment_sum(gate_filter * core_softplus, plan.by_center),
        gate_filter,
        core_softplus,
        core_sigmoid,
    )


def _gated_messages_backward(grad_summed: Tensor, plan: EdgePlan, gate_filter: Tensor,
                             core_softplus: Tensor, core_sigmoid: Tensor) -> Tensor:  # fmt: skip
    """The table's gradient: ``∂[f, s]`` of every edge, summed per table row.

    Messages ``σ(f) g(s)``: ``∂s = ∂m σ(f) σ(s)``, ``∂f = ∂m g(s) σ(f) (1 - σ(f))``.
    """
    if fused.usable(gate_filter):
        grad_gate = fused.gate_backward(
            grad_summed, plan.center, gate_filter, core_softplus, core_sigmoid
        )
        return segment_sum(grad_gate, plan.by_row)
    grad_core = grad_summed.index_select(0, plan.center).mul_(gate_filter)
    grad_filter = grad_core * core_softplus
    grad_filter.addcmul_(grad_filter, gate_filter, value=-1.0)
    grad_core.mul_(core_sigmoid)
    # the halves are summed apart, not joined per edge
    return torch.cat([segment_sum(grad_filter, plan.by_row),
                      segment_sum(grad_core, plan.by_row)], dim=1)  # fmt: skip


def _batch_statistics(
    atom_terms: Tensor, w_edge: Tensor, bias: Tensor, plan: EdgePlan
) -> tuple[Tensor, Tensor, tuple]:
    """Mean and biased variance over the edges of ``y = c_i + n_j + W_e u_ij + b``.

    With ``a``, ``b``, ``g`` an edge's centre, neighbour and Gaussian terms
    less their means, ``Σ (a + b + g)²`` takes ``Σ a²`` and ``Σ b²`` per atom
    (weighted by its edge counts), ``Σ g²`` from the features' covariance,
    ``Σ a g`` and ``Σ b g`` from the features summed per atom, and ``Σ a b``
    from the neighbour terms summed per centre atom (the one pass over edges).
    """
    moments, n_edges = plan.moments, plan.n_edges
    counts = moments.counts[:, :, None]
    atom_mean = (counts * atom_terms).sum(0).div_(n_edges)
    centred = atom_terms - atom_mean
    weighted = counts * centred
    neighbors = segment_sum(centred[:, 1].contiguous(), moments.neighbors)
    square_sum = torch.linalg.vecdot(weighted, centred, dim=0).sum(0)
    square_sum += 2 * torch.linalg.vecdot(centred[:, 0], neighbors, dim=0)
    cross = centred.flatten(0, 1).T @ moments.feature_by_atom
    spread = w_edge @ moments.feature_covariance
    square_sum += torch.linalg.vecdot(torch.add(spread, cross, alpha=2.0), w_edge)
    mean = atom_mean.sum(0) + torch.addmv(bias, w_edge, moments.feature_mean)
    return mean, square_sum.div_(n_edges), (centred, weighted, neighbors, cross, spread)


def _batch_statistics_backward(statistics, grad_mean, grad_var, w_edge, plan,
                               grad_atom_terms, grad_w_edge) -> None:  # fmt: skip
    """Add the statistics' share to the gradients of the atom terms and ``W_e`` (in place).

    ∂var/∂(an atom's term) is 2/n of the terms it meets on its edges: its own
    (times its edge count), its partner atoms' and its Gaussians'. These sum
    to zero over the atoms, so the means subtracted add nothing.
    """
    centred, weighted, neighbors, cross, spread = statistics
    moments, n_edges = plan.moments, plan.n_edges
    centers = segment_sum(centred[:, 0].contiguous(), moments.centers)
    partners = torch.stack([neighbors, centers], dim=1).add_(weighted)
    partners += (moments.feature_by_atom @ w_edge.T).view_as(partners)
    grad_var = grad_var * (2.0 / n_edges)
    grad_atom_terms.addcmul_(partners, grad_var)
    grad_atom_terms.addcmul_(moments.counts[:, :, None], grad_mean / n_edges)
    grad_w_edge.addcmul_(cross + spread, grad_var[:, None])
    grad_w_edge.add_(torch.outer(grad_mean, moments.feature_mean))


def update_running_statistics(bn: nn.BatchNorm1d, mean: Tensor, var: Tensor, n: int) -> None:
    """What ``bn`` does to its running statistics in training, from a batch's biased ``var``."""
    if bn.running_mean is None:
        return
    bn.num_batches_tracked.add_(1)
    factor = bn.momentum
    if factor is None:  # a cumulative average, as BatchNorm1d(momentum=None)
        factor = 1.0 / float(bn.num_batches_tracked)
    bn.running_mean.lerp_(mean, factor)
    bn.running_var.lerp_(var * (n / (n - 1)), factor)


def softplus_and_sigmoid(x: Tensor, sigmoid: bool = True) -> tuple[Tensor, Tensor | None]:
    """``softplus(x)``, and ``sigmoid(x)`` (its derivative) from the same exponential.

    The softplus as ``log(1 + e^x)``: torch's (``log1p``-based) takes ~3x as
    long here, and the two differ only where the softplus is below the float
    resolution next to 1 (under 6e-8 in float32), by an absolute error of
    that size. Past 20, where torch's returns ``x`` itself, this one adds
    ``e^-x``, below float32 resolution.
    """
    # exp runs through MKL's vector math on contiguous memory only: clamp copies it there
    exp = x.clamp(max=80.0).exp_()
    one_plus_exp = exp + 1.0
    softplus = torch.log(one_plus_exp)
    if x.numel() and float(softplus.max()) >= 80.0:  # clamped: e^x would overflow float32
        softplus = torch.where(x > 80.0, x, softplus)
    return softplus, exp.div_(one_plus_exp) if sigmoid else None
