r"""Bond angles of a batch, and M3GNet's three-body interaction built on them.

Angles are not stored: each batch pairs the edges that share a centre atom
and lie within a short ``cutoff`` (M3GNet: 4 Å, well inside the graph's),
and computes the angle of each pair from the edges' displacement vectors.
A triplet ``(i; j, k)`` is an ordered pair of distinct edges ``i→j``,
``i→k``; its basis is

.. math::
    b_l(i; j, k) = P_l(\cos\theta_{jik})\, u(r_{ij} / c)\, u(r_{ik} / c),
    \qquad l = 0 \ldots l_\mathrm{max},

with ``P_l`` the Legendre polynomials and ``u`` the smooth envelope of
:mod:`skgnn.radial` (zero, with its first two derivatives, at ``c``), so a
neighbour crossing the short cutoff changes nothing abruptly. The
interaction (Chen & Ong, Nat. Comput. Sci. 2, 718, 2022) sums, for each edge
``i→j``, the triplets' basis gated by the third atom:

.. math::
    \tilde{\mathbf{e}}_{ij} = \mathbf{W}
        \sum_k \mathbf{b}(i; j, k) \odot \sigma(\mathbf{W}_g \mathbf{v}_k + \mathbf{b}_g).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .radial import envelope

#: ``p`` of the smooth cutoff's envelope, as the radial basis uses by default (DimeNet: 6).
ENVELOPE_EXPONENT = 5


class Triplets(NamedTuple):
    """The triplets ``(i; j, k)`` of a batch: two edges sharing centre ``i``.

    ``edge`` is each triplet's edge ``i→j`` (the one it updates), ``other`` its
    edge ``i→k``, ``neighbor`` the atom ``k``; ``basis`` is ``(n_triplets,
    l_max + 1)``; ``n_edges`` counts the batch's edges.
    """

    edge: Tensor
    other: Tensor
    neighbor: Tensor
    basis: Tensor
    n_edges: int


def edge_pairs(center: Tensor, edges: Tensor) -> tuple[Tensor, Tensor]:
    """Every ordered pair of distinct edges among ``edges`` with the same centre.

    ``center`` holds every edge's centre atom; ``edges`` the indices of the
    edges to pair. Vectorised: the edges are grouped by centre, and each is
    repeated once per edge of its group.
    """
    order = edges[torch.argsort(center[edges], stable=True)]
    _, sizes = torch.unique_consecutive(center[order], return_counts=True)
    starts = torch.cumsum(sizes, 0) - sizes
    size_of = sizes.repeat_interleave(sizes)  # for each edge of ``order``: its group's size
    first = torch.arange(len(order), device=order.device).repeat_interleave(size_of)
    rep_start = torch.cumsum(size_of, 0) - size_of
    within = torch.arange(len(first), device=order.device) - rep_start.repeat_interleave(size_of)
    second = starts.repeat_interleave(sizes).repeat_interleave(size_of) + within
    distinct = first != second
    return order[first[distinct]], order[second[distinct]]


def legendre(x: Tensor, l_max: int) -> Tensor:
    """``P_0(x) … P_lmax(x)`` as columns, by Bonnet's recurrence."""
    columns = [torch.ones_like(x), x][: l_max + 1]
    for n in range(1, l_max):
        columns.append(((2 * n + 1) * x * columns[n] - n * columns[n - 1]) / (n + 1))
    return torch.stack(columns, dim=1)


def triplets(edge_vector: Tensor, edge_index: Tensor, cutoff: float, l_max: int) -> Triplets:
    """The :class:`Triplets` of a batch's edges shorter than ``cutoff`` (Å).

    Parameters
    ----------
    edge_vector : Tensor of shape (n_edges, 3)
        Each edge's displacement from its centre to its neighbour, Å.
    edge_index : Tensor of shape (2, n_edges)
        Centre and neighbour atom of each edge.
    cutoff : float
        Only edges shorter than this form triplets.
    l_max : int
        Highest Legendre degree of the angle basis.
    """
    length = torch.linalg.vector_norm(edge_vector, dim=1)
    short = torch.nonzero(length < cutoff).view(-1)
    edge, other = edge_pairs(edge_index[0], short)
    cosine = (edge_vector[edge] * edge_vector[other]).sum(dim=1) / (length[edge] * length[other])
    radial = envelope(length / cutoff, ENVELOPE_EXPONENT)
    basis = legendre(cosine.clamp(-1, 1), l_max) * (radial[edge] * radial[other])[:, None]
    return Triplets(edge, other, edge_index[1][other], basis, len(edge_vector))


class ThreeBody(nn.Module):
    """M3GNet's three-body interaction: each edge's sum over its triplets, to ``width`` values.

    Parameters
    ----------
    atom_fea_len : int
        Length of the atom vectors that gate the triplets.
    n_basis : int
        ``l_max + 1``, the angle basis functions.
    width : int
        Length of the result (the edge MLP's width, whose first layer it joins).
    """

    def __init__(self, atom_fea_len: int, n_basis: int, width: int) -> None:
        super().__init__()
        self.gate = nn.Linear(atom_fea_len, n_basis)
        self.out = nn.Linear(n_basis, width, bias=False)  # the first layer's bias serves

    def reset_parameters(self) -> None:
        self.gate.reset_parameters()
        self.out.reset_parameters()

    def forward(self, atom_fea: Tensor, triplets: Triplets) -> Tensor:
        """``(n_edges, width)``: zero for an edge in no triplet."""
        gate = torch.sigmoid(self.gate(atom_fea))  # once per atom, then gathered
        weighted = triplets.basis * gate[triplets.neighbor]
        summed = weighted.new_zeros(triplets.n_edges, weighted.shape[1])
        return self.out(summed.index_add_(0, triplets.edge, weighted))
