r"""A radial basis of edge lengths that goes smoothly to zero at the cutoff.

The sine ("Bessel") basis of DimeNet (Gasteiger et al., ICLR 2020), as
M3GNet also uses it, times a polynomial envelope:

.. math::
    e_n(d) = \sqrt{2/c}\, \frac{\sin(n \pi d / c)}{d}\, u(d / c), \qquad
    u(x) = 1 - \tfrac{(p + 1)(p + 2)}{2} x^p + p (p + 2) x^{p + 1}
        - \tfrac{p (p + 1)}{2} x^{p + 2}

for :math:`n = 1 \ldots N` and :math:`d < c`, zero beyond. ``u`` falls from
1 at 0 to 0 at the cutoff with zero first and second derivatives there, so an
edge that crosses the cutoff changes its features, and their gradient,
continuously (Gaussians are cut off with a jump where they are not yet zero).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def envelope(x: Tensor, exponent: int) -> Tensor:
    """``u(x)``: 1 at 0, then to 0 at 1 with zero slope and curvature; 0 beyond 1."""
    p = exponent
    a, b, c = -(p + 1) * (p + 2) / 2, p * (p + 2), -p * (p + 1) / 2
    inside = 1 + x**p * (a + x * (b + c * x))
    return torch.where(x < 1, inside, torch.zeros_like(x))


class RadialBasis(nn.Module):
    """``n_basis`` sine functions of the edge length times a smooth cutoff envelope.

    Parameters
    ----------
    cutoff : float
        ``c`` in Å: every function and its first two derivatives are zero there.
    n_basis : int
        ``N``, the number of functions (frequencies ``n π / c``).
    exponent : int, default=5
        ``p`` of the envelope ``u`` above, its lowest power (the polynomial's
        degree is ``p + 2``). One lower than DimeNet's ``p = 6`` (which its
        code spells ``envelope_exponent=5``, adding one).
    """

    def __init__(self, cutoff: float, n_basis: int, exponent: int = 5) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        self.n_basis = n_basis
        self.exponent = exponent

    def forward(self, length: Tensor) -> Tensor:
        """The basis at each length, shape ``(n_edges, n_basis)``."""
        x = (length / self.cutoff)[:, None]
        scale = math.sqrt(2.0 / self.cutoff)
        # made in the lengths' dtype: a float32 π would cost float64 callers 1e-8 of accuracy
        frequencies = torch.arange(1, self.n_basis + 1, dtype=length.dtype, device=length.device)
        frequencies = frequencies * math.pi
        return scale * torch.sin(frequencies * x) / length[:, None] * envelope(x, self.exponent)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(cutoff={self.cutoff:g}, n_basis={self.n_basis}, "
            f"exponent={self.exponent})"
        )
