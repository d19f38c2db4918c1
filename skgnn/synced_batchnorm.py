r"""BatchNorm whose training statistics span the batches of every process.

When a global batch is shared out among processes, each one sees a shard of
it. A plain ``BatchNorm1d`` would normalise each shard with its own mean and
variance, so the network would learn something else than on one process.
Here the processes exchange their shards' moments (count, mean, biased
variance: ``2 C + 1`` numbers each) and every one normalises with those of the
whole batch,

.. math::
    N = \sum_p n_p, \qquad \mu = \sum_p \frac{n_p}{N} \mu_p, \qquad
    \sigma^2 = \sum_p \frac{n_p}{N} \big(\sigma_p^2 + (\mu_p - \mu)^2\big),

and in the backward pass the gradients with respect to ``μ`` and ``σ²`` are
summed over the processes (each process's loss depends on them) and carried
back to each shard's own moments:

.. math::
    \frac{\partial L}{\partial \mu_p} = \frac{n_p}{N}\Big(\frac{\partial L}{\partial \mu}
        + 2 (\mu_p - \mu) \frac{\partial L}{\partial \sigma^2}\Big), \qquad
    \frac{\partial L}{\partial \sigma_p^2} = \frac{n_p}{N} \frac{\partial L}{\partial \sigma^2}.

This is what ``torch.nn.SyncBatchNorm`` does, which runs on GPUs only; this
one runs on any ``torch.distributed`` backend (gloo on CPU included), and the
same two steps serve the BatchNorm folded into the CGCNN convolution
(:class:`skgnn.edges.EdgeConvolution` calls :meth:`SyncedBatchNorm1d.combine_moments`
and :meth:`SyncedBatchNorm1d.local_gradients`). The sum of gradients is right when
the processes' parameter gradients are then averaged, as DDP does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .edges import update_running_statistics

__all__ = [
    "CombinedMoments",
    "SyncedBatchNorm1d",
    "combine_moments",
    "local_gradients",
    "restore_batch_norms",
    "synchronize_batch_norms",
]


class CombinedMoments(NamedTuple):
    """The whole batch's moments, and what the backward pass needs of this process's shard."""

    mean: Tensor
    var: Tensor
    count: int
    local_mean: Tensor
    share: float


def combine_moments(mean: Tensor, var: Tensor, count: int, group=None) -> CombinedMoments:
    """Mean and biased variance over the rows of every process, from each shard's own.

    Every process gathers all shards' moments and combines them in rank
    order, so all hold bit-identical results (and running statistics).
    """
    local = torch.cat([mean.new_tensor([count]), mean, var]).to(torch.float64)
    gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(group))]
    dist.all_gather(gathered, local, group=group)
    table = torch.stack(gathered)
    counts, means, variances = table[:, :1], table[:, 1 : 1 + len(mean)], table[:, 1 + len(mean) :]
    total = counts.sum()
    total_mean = (counts * means).sum(0) / total
    total_var = (counts * (variances + (means - total_mean).square())).sum(0) / total
    return CombinedMoments(
        mean=total_mean.to(mean.dtype),
        var=total_var.to(var.dtype),
        count=int(total),
        local_mean=mean.detach(),
        share=count / float(total),
    )


def local_gradients(
    combined: CombinedMoments, grad_mean: Tensor, grad_var: Tensor, group=None
) -> tuple[Tensor, Tensor]:
    """This shard's moments' gradients, from this process's gradients of the combined ones."""
    summed = torch.cat([grad_mean, grad_var])
    dist.all_reduce(summed, group=group)  # every process's loss reads the combined moments
    grad_mean, grad_var = summed.chunk(2)
    grad_local_mean = grad_mean + 2.0 * (combined.local_mean - combined.mean) * grad_var
    return combined.share * grad_local_mean, combined.share * grad_var


class _Combined(torch.autograd.Function):
    """``(mean, var)`` of one shard to those of the whole batch, with the backward above."""

    @staticmethod
    def forward(ctx, mean, var, combined: CombinedMoments, group):
        ctx.combined, ctx.group = combined, group
        return combined.mean.clone(), combined.var.clone()

    @staticmethod
    def backward(ctx, grad_mean, grad_var):
        grad_mean, grad_var = local_gradients(ctx.combined, grad_mean, grad_var, ctx.group)
        return grad_mean, grad_var, None, None


class SyncedBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` normalising, in training, with the statistics of all processes' rows.

    Outside a ``torch.distributed`` process group, or in evaluation, it is a
    plain ``BatchNorm1d``. Build it from one with :func:`synchronize_batch_norms`.

    Parameters
    ----------
    num_features, eps, momentum, affine, track_running_stats
        As ``torch.nn.BatchNorm1d``.
    process_group : ProcessGroup or None, default=None
        The processes that share a batch; ``None`` is the default (world) group.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True,
                 process_group=None) -> None:  # fmt: skip
        super().__init__(num_features, eps, momentum, affine, track_running_stats)
        self.process_group = process_group

    def synchronizes(self) -> bool:
        """Whether batch statistics are taken now, over several processes."""
        batch_statistics = self.training or self.running_mean is None
        return batch_statistics and dist.is_available() and dist.is_initialized()

    def combine_moments(self, mean: Tensor, var: Tensor, count: int) -> CombinedMoments | None:
        """The whole batch's moments from this shard's, or ``None`` when not synchronising."""
        if not self.synchronizes():
            return None
        return combine_moments(mean.detach(), var.detach(), count, self.process_group)

    def local_gradients(
        self, combined: CombinedMoments, grad_mean: Tensor, grad_var: Tensor
    ) -> tuple[Tensor, Tensor]:
        """See :func:`local_gradients`."""
        return local_gradients(combined, grad_mean, grad_var, self.process_group)

    def forward(self, x: Tensor) -> Tensor:
        if not self.synchronizes():
            return super().forward(x)
        dims = [0, *range(2, x.dim())]  # all but the channels, as BatchNorm1d on (N, C, L)
        var, mean = torch.var_mean(x, dim=dims, correction=0)
        combined = self.combine_moments(mean, var, x.numel() // x.shape[1])
        mean, var = _Combined.apply(mean, var, combined, self.process_group)
        if self.training:
            with torch.no_grad():
                update_running_statistics(self, combined.mean, combined.var, combined.count)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        normalised = (x - mean.view(shape)) * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            normalised = normalised * self.weight.view(shape) + self.bias.view(shape)
        return normalised


def synchronize_batch_norms(module: nn.Module, process_group=None) -> nn.Module:
    """Replace every ``BatchNorm1d`` in ``module`` by a :class:`SyncedBatchNorm1d`, in place.

    The new layers hold the same parameter and buffer tensors, so an
    optimizer built on ``module`` keeps working. Returns ``module``.
    """
    return _swap(module, nn.BatchNorm1d, lambda bn: SyncedBatchNorm1d(
        bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
        process_group=process_group))  # fmt: skip


def restore_batch_norms(module: nn.Module) -> nn.Module:
    """Undo :func:`synchronize_batch_norms`: plain ``BatchNorm1d`` again, same tensors."""
    return _swap(module, SyncedBatchNorm1d, lambda bn: nn.BatchNorm1d(
        bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats))  # fmt: skip


def _swap(module: nn.Module, kind: type, make) -> nn.Module:
    for name, child in module.named_children():
        if type(child) is kind:
            new = make(child)
            for tensor_name, tensor in [*child._parameters.items(), *child._buffers.items()]:
                setattr(new, tensor_name, tensor)
            new.train(child.training)
            setattr(module, name, new)
        else:
            _swap(child, kind, make)
    return module
