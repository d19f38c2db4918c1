"""Each process's share of every global batch, in the same order on every process."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import torch.distributed as dist
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler, Subset

__all__ = ["ShardedBatchSampler", "sharded_loader"]

#: What each process's shard of a batch must hold for training-mode BatchNorm on it.
MIN_ATOMS = MIN_EDGES = 2


class ShardedBatchSampler:
    """This process's share of each batch of ``batches``, as drawn by the first process.

    The processes are those of the default ``torch.distributed`` group.

    Every process draws the global batches (so seeded random states stay in
    step), then takes the first process's: all train on one order, the
    order a single process would have drawn with the same random state. Each
    process gets every ``world_size``-th row of a batch, starting at its rank.
    A batch too small to give every process :data:`MIN_ATOMS` atoms and
    :data:`MIN_EDGES` edges (BatchNorm statistics need two rows; processes
    must agree on whether they take them) joins the next one, the last such
    batch the one before.

    Parameters
    ----------
    batches : iterable of lists of int
        The global batches, e.g. a ``torch.utils.data.BatchSampler``.
    sizes : tuple of two int arrays, or None
        Atoms and edges of each row of the dataset; ``None`` checks only
        that every process gets a row.
    """

    def __init__(self, batches: Iterable[list[int]], sizes=None) -> None:
        self.batches = batches
        self.sizes = sizes

    def __len__(self) -> int:
        """The global batches before any small one is joined to another."""
        return len(self.batches)

    def __iter__(self) -> Iterator[list[int]]:
        rank, world_size = dist.get_rank(), dist.get_world_size()
        drawn = [[[int(i) for i in batch] for batch in self.batches]]
        dist.broadcast_object_list(drawn, src=0)
        for batch in self._joined(drawn[0], world_size):
            yield batch[rank::world_size]

    def _joined(self, batches: list[list[int]], world_size: int) -> list[list[int]]:
        joined: list[list[int]] = []
        pending: list[int] = []
        for batch in batches:
            pending = pending + batch
            if self._shares_well(pending, world_size):
                joined.append(pending)
                pending = []
        if pending:
            if not joined or not self._shares_well(joined[-1] + pending, world_size):
                raise ValueError(
                    f"The training data ({sum(map(len, batches))} graphs) cannot give each "
                    f"of {world_size} processes a share of a batch with {MIN_ATOMS} atoms "
                    f"and {MIN_EDGES} edges; use fewer processes or more data."
                )
            joined[-1] = joined[-1] + pending
        return joined

    def _shares_well(self, batch: list[int], world_size: int) -> bool:
        if len(batch) < world_size:
            return False
        if self.sizes is None:
            return True
        atoms, edges = self.sizes
        for rank in range(world_size):
            rows = batch[rank::world_size]
            if atoms[rows].sum() < MIN_ATOMS or edges[rows].sum() < MIN_EDGES:
                return False
        return True


def graph_sizes(dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """Atoms and edges of each row of ``dataset`` (a graph dataset or a Subset of one)."""
    index = None
    while isinstance(dataset, Subset):
        rows = np.asarray(dataset.indices, dtype=np.int64)
        index = rows if index is None else rows[index]
        dataset = dataset.dataset
    graphs = getattr(dataset, "graphs", None)
    if graphs is None or not hasattr(graphs, "n_atoms") or not hasattr(graphs, "n_edges"):
        return None
    atoms, edges = np.asarray(graphs.n_atoms), np.asarray(graphs.n_edges)
    return (atoms, edges) if index is None else (atoms[index], edges[index])


def sharded_loader(dataset, batch_size: int, shuffle: bool = False, drop_last: bool = False,
                   **kwargs) -> DataLoader:  # fmt: skip
    """A ``DataLoader`` over this process's share of each global batch of ``batch_size`` rows.

    Takes the arguments of skorch's ``iterator_train`` (``DataLoader``'s), so
    a net trains on several processes with ``iterator_train=sharded_loader``
    inside a process group (:func:`skgnn.distributed.fit` sets it).
    """
    generator = kwargs.get("generator")
    order = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    batches = BatchSampler(order, batch_size, drop_last)
    sampler = ShardedBatchSampler(batches, graph_sizes(dataset))
    return DataLoader(dataset, batch_sampler=sampler, **kwargs)
