"""The torch Dataset that skorch iterates: whole batches cut from a CrystalGraphs."""

from __future__ import annotations

import numpy as np
import torch

from .graphs import CrystalGraphs, GraphBatch


class CrystalGraphDataset(torch.utils.data.Dataset):
    """Graphs and targets, served a batch at a time.

    torch's ``DataLoader`` calls ``__getitems__`` with the indices of a whole
    batch, so the batch is cut from the concatenated arrays in one vectorised
    step rather than graph by graph; :func:`pass_batch_through` is then the
    ``collate_fn``.

    Parameters
    ----------
    graphs : CrystalGraphs
    y : Tensor or None
        Targets, one row per graph; ``None`` at prediction time.
    sample_weight : Tensor or None
        Weight of each graph in the loss, handed on with its batch.
    """

    def __init__(
        self,
        graphs: CrystalGraphs,
        y: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> None:
        self.graphs = graphs
        self.y = y
        self.sample_weight = sample_weight

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitems__(self, indices: list[int]) -> tuple[GraphBatch, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        y = torch.zeros(len(rows)) if self.y is None else self.y[torch.from_numpy(rows)]
        batch = self.graphs.batch(rows)
        if self.sample_weight is not None:
            batch.sample_weight = self.sample_weight[torch.from_numpy(rows)]
        return batch, y

    def __getitem__(self, index: int) -> tuple[GraphBatch, torch.Tensor]:
        return self.__getitems__([index])


def pass_batch_through(batch: tuple[GraphBatch, torch.Tensor]) -> tuple[GraphBatch, torch.Tensor]:
    """``collate_fn`` for batches that :class:`CrystalGraphDataset` has already joined."""
    return batch
