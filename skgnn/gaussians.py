"""The Gaussian expansion of edge lengths: dense, or only the Gaussians that are not zero."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import torch
from torch import Tensor

# A Gaussian centred more than 4.5 widths from a length weighs under e^-20 = 2e-9 there, below
# float32 resolution next to the nearest Gaussian (about 1), so it is left out: an exact zero in
# the dense features too, so training and prediction see the same edge features.
TAIL_WIDTHS = 4.5


class GaussianWindow(NamedTuple):
    """The Gaussians of each edge that are not negligible.

    ``value[k, m]`` is the Gaussian ``index[k, m]`` evaluated at edge ``k``'s
    length; every Gaussian outside the window is zero there. Multiplying
    by a weight matrix is then a sum of ``K`` of its rows per edge
    (``torch.nn.functional.embedding_bag``) instead of a dense matmul.
    """

    index: Tensor
    value: Tensor


@dataclass(frozen=True)
class GaussianExpansion:
    """``exp(-(d - μ)² / σ²)`` for the centres ``μ`` and the width ``σ``, zero beyond
    ``TAIL_WIDTHS`` widths (where it is below 2e-9).

    Parameters
    ----------
    centers : Tensor, shape (n_gaussians,)
        Evenly spaced centres in Å, as :class:`~skgnn.CrystalGraphTransformer` makes them.
    width : float
        ``σ`` in Å.
    """

    centers: Tensor
    width: float

    def dense(self, length: Tensor) -> Tensor:
        """All Gaussians at each length, shape ``(n_edges, n_gaussians)``."""
        return self._evaluate(length[:, None] - self.centers)

    def window(self, length: Tensor) -> GaussianWindow:
        """The ``K`` Gaussians nearest each length, where all others are negligible."""
        n, size = len(self.centers), self.window_size
        if size == n:
            first = torch.zeros(len(length), dtype=torch.int64, device=length.device)
        else:
            nearest = torch.round((length - self.centers[0]) / self._spacing).to(torch.int64)
            first = (nearest - size // 2).clamp_(0, n - size)
        index = first[:, None] + torch.arange(size, device=length.device)
        return GaussianWindow(index, self._evaluate(length[:, None] - self.centers[index]))

    def _evaluate(self, offset: Tensor) -> Tensor:
        exponent = -((offset / self.width) ** 2)
        # The tails are zeros, not e^-80-sized values: multiplied by small gradients those fell
        # below float32's smallest normal number, which Intel cores handle in microcode (3.5x
        # slower training). Clamping first also keeps exp off its slow underflow path.
        tail = exponent < -(TAIL_WIDTHS**2)
        return torch.exp(exponent.clamp_(min=-(TAIL_WIDTHS**2))).masked_fill_(tail, 0.0)

    @cached_property
    def _spacing(self) -> float | None:
        """The step between centres, or ``None`` when they are not evenly spaced."""
        if len(self.centers) < 2:
            return None
        step = float(self.centers[1] - self.centers[0])
        evenly_spaced = bool(((self.centers.diff() - step).abs() <= 1e-4 * step).all())
        return step if evenly_spaced else None

    @cached_property
    def window_size(self) -> int:
        """Gaussians per window: enough to reach ``TAIL_WIDTHS`` widths beyond any length."""
        if self._spacing is None:
            return len(self.centers)
        # the nearest centre is within step / 2 of the length, so half a step more on each side
        half = math.ceil(TAIL_WIDTHS * self.width / self._spacing + 0.5)
        return min(len(self.centers), 2 * half + 1)

    def to(self, device: str | torch.device) -> GaussianExpansion:
        centers = self.centers.to(device)
        return self if centers is self.centers else GaussianExpansion(centers, self.width)
