"""What skgnn is compared with in benchmarks/speed.py, written from their descriptions.

- ``graphs_like_original_cgcnn``: graph construction as the original CGCNN code
  does it: ``Structure.get_all_neighbors``, sort each atom's list by distance,
  keep 12 (padding is left out, which only favours the baseline).
- ``PygCGCNN``: the CGCNN most users would assemble from PyTorch Geometric's
  ``CGConv``, with the same sizes as skgnn's module, fed by PyG's own
  ``Data`` objects and ``DataLoader``.
- ``OriginalCGCNN``: the network as the original code (txie-93/cgcnn) runs it:
  every atom's 12 neighbours in a padded ``(atoms, 12)`` array, the gate
  input ``v_i ⊕ v_j ⊕ u_ij`` concatenated per edge before one linear layer,
  mean pooling by a loop over the crystals, batches joined graph by graph
  (``original_collate``, its ``collate_pool``). The Gaussian features are
  expanded once beforehand, as its dataset caches them.
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


class OriginalConvLayer(nn.Module):
    """The original gated convolution on padded neighbour arrays."""

    def __init__(self, atom_fea_len: int, nbr_fea_len: int) -> None:
        super().__init__()
        self.atom_fea_len = atom_fea_len
        self.fc_full = nn.Linear(2 * atom_fea_len + nbr_fea_len, 2 * atom_fea_len)
        self.bn1 = nn.BatchNorm1d(2 * atom_fea_len)
        self.bn2 = nn.BatchNorm1d(atom_fea_len)

    def forward(self, atom_fea, nbr_fea, nbr_idx):
        n, m = nbr_idx.shape
        total = torch.cat(
            [atom_fea[:, None, :].expand(n, m, self.atom_fea_len), atom_fea[nbr_idx, :], nbr_fea],
            dim=2,
        )
        gated = self.bn1(self.fc_full(total).view(n * m, -1)).view(n, m, -1)
        nbr_filter, nbr_core = gated.chunk(2, dim=2)
        summed = torch.sum(torch.sigmoid(nbr_filter) * nn.functional.softplus(nbr_core), dim=1)
        return nn.functional.softplus(atom_fea + self.bn2(summed))


class OriginalCGCNN(nn.Module):
    """Embedding, ``n_conv`` original convolutions, mean pooling by a loop, softplus MLP head."""

    def __init__(self, orig_atom_fea_len=92, nbr_fea_len=41, atom_fea_len=64, n_conv=3,
                 h_fea_len=128):  # fmt: skip
        super().__init__()
        self.embedding = nn.Linear(orig_atom_fea_len, atom_fea_len)
        self.convs = nn.ModuleList(
            OriginalConvLayer(atom_fea_len, nbr_fea_len) for _ in range(n_conv)
        )
        self.conv_to_fc = nn.Linear(atom_fea_len, h_fea_len)
        self.fc_out = nn.Linear(h_fea_len, 1)

    def forward(self, atom_fea, nbr_fea, nbr_idx, crystal_atom_idx):
        atom_fea = self.embedding(atom_fea)
        for conv in self.convs:
            atom_fea = conv(atom_fea, nbr_fea, nbr_idx)
        crystal = torch.cat([atom_fea[idx].mean(dim=0, keepdim=True) for idx in crystal_atom_idx])
        crystal = nn.functional.softplus(self.conv_to_fc(nn.functional.softplus(crystal)))
        return self.fc_out(crystal)


def original_dataset(graphs, y, max_neighbors: int = 12, pad_length: float = 9.0) -> list:
    """Per graph: atom features, ``(atoms, 12, n_gaussians)`` edge features, neighbour indices.

    Atoms with fewer than ``max_neighbors`` neighbours are padded with atom 0
    at ``pad_length`` Å, as the original code pads them.
    """
    items = []
    for i in range(len(graphs)):
        batch = graphs.batch(np.array([i]))
        n_atoms = len(batch.atom_fea)
        center, neighbor = batch.edge_index.numpy()
        lengths = batch.edge_length.numpy()
        nbr_idx = np.zeros((n_atoms, max_neighbors), dtype=np.int64)
        nbr_length = np.full((n_atoms, max_neighbors), pad_length, dtype=np.float32)
        for atom in range(n_atoms):
            mine = np.flatnonzero(center == atom)[:max_neighbors]
            nbr_idx[atom, : len(mine)] = neighbor[mine]
            nbr_length[atom, : len(mine)] = lengths[mine]
        expanded = batch.expansion.dense(torch.from_numpy(nbr_length.ravel()))
        nbr_fea = expanded.view(n_atoms, max_neighbors, -1)
        target = torch.tensor([float(y[i])], dtype=torch.float32)
        items.append((batch.atom_fea, nbr_fea, torch.from_numpy(nbr_idx), target))
    return items


def original_collate(items: list) -> tuple:
    """Join graphs one by one, as the original ``collate_pool`` does."""
    atom_fea, nbr_fea, nbr_idx, crystal_atom_idx, targets = [], [], [], [], []
    base = 0
    for atoms, edges, neighbors, target in items:
        n = len(atoms)
        atom_fea.append(atoms)
        nbr_fea.append(edges)
        nbr_idx.append(neighbors + base)
        crystal_atom_idx.append(torch.arange(base, base + n))
        targets.append(target)
        base += n
    inputs = (torch.cat(atom_fea), torch.cat(nbr_fea), torch.cat(nbr_idx), crystal_atom_idx)
    return inputs, torch.stack(targets)


def original_epoch(model, loader, optimizer) -> None:
    model.train()
    for inputs, target in loader:
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(*inputs), target)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def original_predict(model, loader) -> torch.Tensor:
    model.eval()
    return torch.cat([model(*inputs) for inputs, _ in loader])
