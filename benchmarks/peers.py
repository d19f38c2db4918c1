"""What skgnn is compared with in benchmarks/speed.py, written from their descriptions.

- ``graphs_like_original_cgcnn``: graph construction as the original CGCNN code
  does it: ``Structure.get_all_neighbors``, sort each atom's list by distance,
  keep 12 (padding is left out, which only favours the baseline).
- ``PygCGCNN``: the CGCNN most users would assemble from PyTorch Geometric's
  ``CGConv``, with the same sizes as skgnn's module, fed by PyG's own
  ``Data`` objects and ``DataLoader``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def graphs_like_original_cgcnn(structures, cutoff: float = 8.0, max_neighbors: int = 12):
    """Per-structure neighbour lists the way txie-93/cgcnn's data.py builds them."""
    graphs = []
    for structure in structures:
        all_neighbors = structure.get_all_neighbors(cutoff, include_index=True)
        all_neighbors = [sorted(nbrs, key=lambda n: n[1]) for nbrs in all_neighbors]
        index = [[n[2] for n in nbrs[:max_neighbors]] for nbrs in all_neighbors]
        distance = [[n[1] for n in nbrs[:max_neighbors]] for nbrs in all_neighbors]
        graphs.append((index, distance))
    return graphs


class PygCGCNN(nn.Module):
    """Embedding, ``n_conv`` PyG ``CGConv`` layers, mean pooling, softplus MLP head."""

    def __init__(self, orig_atom_fea_len=92, nbr_fea_len=41, atom_fea_len=64, n_conv=3,
                 h_fea_len=128):  # fmt: skip
        super().__init__()
        from torch_geometric.nn import CGConv

        self.embedding = nn.Linear(orig_atom_fea_len, atom_fea_len)
        self.convs = nn.ModuleList(
            CGConv(atom_fea_len, dim=nbr_fea_len, batch_norm=True) for _ in range(n_conv)
        )
        self.conv_to_fc = nn.Linear(atom_fea_len, h_fea_len)
        self.fc_out = nn.Linear(h_fea_len, 1)

    def forward(self, data):
        from torch_geometric.nn import global_mean_pool

        x = self.embedding(data.x)
        for conv in self.convs:
            x = nn.functional.softplus(conv(x, data.edge_index, data.edge_attr))
        crystal = nn.functional.softplus(global_mean_pool(x, data.batch, size=data.num_graphs))
        return self.fc_out(nn.functional.softplus(self.conv_to_fc(crystal)))


def pyg_dataset(graphs, y) -> list:
    """PyG ``Data`` objects with the same atom and edge features as skgnn's batches."""
    from torch_geometric.data import Data

    items = []
    for i in range(len(graphs)):
        batch = graphs.batch(np.array([i]))
        items.append(
            Data(
                x=batch.atom_fea,
                edge_index=batch.edge_index.flip(0),  # PyG sends messages from row 0 to row 1
                edge_attr=batch.edge_fea,
                y=torch.tensor([[y[i]]], dtype=torch.float32),
            )
        )
    return items


def pyg_epoch(model, loader, optimizer) -> None:
    model.train()
    for data in loader:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(data), data.y)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def pyg_predict(model, loader) -> torch.Tensor:
    model.eval()
    return torch.cat([model(data) for data in loader])
