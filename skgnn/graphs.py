"""Many crystal graphs in a few concatenated arrays, and the batches cut from them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from .edges import EdgeFeatures
from .gaussians import GaussianExpansion, GaussianWindow
from .settings import GraphSettings


def _ragged_indices(offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions of the segments ``rows`` of a ragged array, and each segment's length."""
    starts = offsets[rows]
    counts = offsets[rows + 1] - starts
    ends = np.cumsum(counts)
    flat = np.arange(ends[-1] if len(ends) else 0) + np.repeat(starts - (ends - counts), counts)
    return flat, counts


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])


@dataclass(frozen=True)
class CrystalGraph:
    """One crystal graph, as read from a :class:`CrystalGraphs` by an integer index.

    Atom ``i`` holds the elements ``atomic_numbers[species_atom == i]`` with
    their occupancies (one element of occupancy 1 on an ordered site). Edge
    ``k`` joins the centre atom ``edge_src[k]`` to the neighbour ``edge_dst[k]``
    at distance ``edge_length[k]`` in Å.
    """

    atomic_numbers: np.ndarray
    occupancy: np.ndarray
    species_atom: np.ndarray
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_length: np.ndarray
    n_atoms: int
    edge_vector: np.ndarray | None = None
    """Displacement from the centre to the neighbour's periodic image, Å, ``(n_edges, 3)``."""


@dataclass
class GraphBatch:
    """A mini-batch of graphs joined into one disconnected graph, as the module reads it.

    Edges carry their lengths; the Gaussian edge features are computed from
    them when read, as :attr:`edge_fea` (all Gaussians), :attr:`edge_window`
    (only the non-zero ones) or :attr:`edge_features` (once per distinct
    length, what the module reads). ``len(batch)`` is the number of graphs,
    which is what skorch counts. ``edge_vector`` holds each edge's
    displacement (for bond angles), or ``None`` for graphs built without.
    """

    atom_fea: torch.Tensor
    edge_length: torch.Tensor
    edge_index: torch.Tensor
    graph_index: torch.Tensor
    n_graphs: int
    expansion: GaussianExpansion
    sample_weight: torch.Tensor | None = None
    edge_vector: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.n_graphs

    @property
    def edge_fea(self) -> torch.Tensor:
        """Gaussian-expanded edge lengths, shape ``(n_edges, n_gaussians)``."""
        return self.expansion.dense(self.edge_length)

    @property
    def edge_window(self) -> GaussianWindow:
        """The same features, only the Gaussians that are not negligible."""
        return self.expansion.window(self.edge_length)

    @property
    def edge_features(self) -> EdgeFeatures:
        """The same features, expanded once per distinct edge length."""
        lengths, index = torch.unique(self.edge_length, return_inverse=True)
        return EdgeFeatures(self.expansion.dense(lengths), index)

    def to(self, device: str | torch.device) -> GraphBatch:
        return GraphBatch(
            self.atom_fea.to(device),
            self.edge_length.to(device),
            self.edge_index.to(device),
            self.graph_index.to(device),
            self.n_graphs,
            self.expansion.to(device),
            None if self.sample_weight is None else self.sample_weight.to(device),
            None if self.edge_vector is None else self.edge_vector.to(device),
        )


class CrystalGraphs:
    """Crystal graphs of many structures, stored flat for speed and memory.

    Atoms, species and edges of all graphs sit in concatenated arrays with
    per-graph offsets; an edge stores its atoms and length (12 bytes) and its
    displacement vector (12 bytes, for bond angles), and the Gaussian
    expansion is done per batch. Index it like a sequence: an integer
    gives a :class:`CrystalGraph`, a slice, integer or boolean array gives a
    new ``CrystalGraphs``.

    Built by :class:`skgnn.CrystalGraphTransformer`; not meant to be made by hand.
    """

    _ARRAYS = (
        "atom_offsets", "species_offsets", "edge_offsets",
        "atomic_numbers", "occupancy", "species_atom",
        "edge_src", "edge_dst", "edge_length",
    )  # fmt: skip
    #: Arrays a container may lack: those pickled or stored by skgnn before they existed.
    _OPTIONAL_ARRAYS = ("edge_vector",)
    edge_vector: np.ndarray | None = None  # what an old pickle, without the field, reads

    def __init__(
        self,
        *,
        atom_offsets: np.ndarray,
        species_offsets: np.ndarray,
        edge_offsets: np.ndarray,
        atomic_numbers: np.ndarray,
        occupancy: np.ndarray,
        species_atom: np.ndarray,
        edge_src: np.ndarray,
        edge_dst: np.ndarray,
        edge_length: np.ndarray,
        atom_feature_values: np.ndarray,
        gaussian_centers: np.ndarray,
        gaussian_width: float,
        cutoff: float,
        max_neighbors: int,
        edge_vector: np.ndarray | None = None,
    ) -> None:
        self.atom_offsets = atom_offsets
        self.species_offsets = species_offsets
        self.edge_offsets = edge_offsets
        self.atomic_numbers = atomic_numbers
        self.occupancy = occupancy
        self.species_atom = species_atom
        self.edge_src = edge_src
        self.edge_dst = edge_dst
        self.edge_length = edge_length
        self.edge_vector = edge_vector
        self.atom_feature_values = atom_feature_values
        self.gaussian_centers = gaussian_centers
        self.gaussian_width = gaussian_width
        self.cutoff = cutoff
        self.max_neighbors = max_neighbors

    @classmethod
    def from_graphs(cls, graphs: list[CrystalGraph], **settings) -> CrystalGraphs:
        """Concatenate single graphs; ``settings`` are the table and expansion arguments."""
        species_counts = np.array([len(g.atomic_numbers) for g in graphs], dtype=np.int64)
        vectors = [g.edge_vector for g in graphs]
        return cls(
            atom_offsets=_offsets(np.array([g.n_atoms for g in graphs], dtype=np.int64)),
            species_offsets=_offsets(species_counts),
            edge_offsets=_offsets(np.array([len(g.edge_src) for g in graphs], dtype=np.int64)),
            **{
                name: np.concatenate([getattr(g, name) for g in graphs])
                for name in cls._ARRAYS[3:]  # the per-atom, per-species and per-edge arrays
            },  # fmt: skip
            edge_vector=None if any(v is None for v in vectors) else np.concatenate(vectors),
            **settings,
        )

    @classmethod
    def concatenate(cls, parts: list[CrystalGraphs]) -> CrystalGraphs:
        """Join containers built with the same settings, in order."""
        first = parts[0]
        for part in parts[1:]:
            if not first.same_settings(part):
                differences = "; ".join(part.settings.differences(first.settings))
                raise ValueError(
                    f"Cannot join CrystalGraphs built with different settings ({differences}); "
                    "build them with the same CrystalGraphTransformer settings."
                )
        arrays = {}
        for name in ("atom", "species", "edge"):
            counts = np.concatenate([np.diff(getattr(p, f"{name}_offsets")) for p in parts])
            arrays[f"{name}_offsets"] = _offsets(counts)
        for name in cls._ARRAYS[3:]:
            arrays[name] = np.concatenate([getattr(p, name) for p in parts])
        vectors = [p.edge_vector for p in parts]
        if all(v is not None for v in vectors):  # else joined without: angles need them all
            arrays["edge_vector"] = np.concatenate(vectors)
        return cls(**arrays, **first._settings())

    def _settings(self) -> dict:
        return {
            "atom_feature_values": self.atom_feature_values,
            "gaussian_centers": self.gaussian_centers,
            "gaussian_width": self.gaussian_width,
            "cutoff": self.cutoff,
            "max_neighbors": self.max_neighbors,
        }

    @property
    def array_names(self) -> tuple[str, ...]:
        """The arrays this container holds: :attr:`_ARRAYS`, and the optional ones it has."""
        present = (name for name in self._OPTIONAL_ARRAYS if getattr(self, name) is not None)
        return self._ARRAYS + tuple(present)

    def same_settings(self, other: CrystalGraphs) -> bool:
        return self.settings.same_as(other.settings)

    def __len__(self) -> int:
        return len(self.atom_offsets) - 1

    @property
    def shape(self) -> tuple[int]:
        """``(n_graphs,)``, so scikit-learn indexes the container like an array in CV splits."""
        return (len(self),)

    @cached_property
    def expansion(self) -> GaussianExpansion:
        """The Gaussians that batches expand the edge lengths on."""
        return GaussianExpansion(torch.from_numpy(self.gaussian_centers), self.gaussian_width)

    @property
    def settings(self) -> GraphSettings:
        """What these graphs were built with (atom features, Gaussians, cutoff, neighbours)."""
        return GraphSettings.of(self)

    @property
    def n_atom_features(self) -> int:
        return self.atom_feature_values.shape[1]

    @property
    def n_edge_features(self) -> int:
        return len(self.gaussian_centers)

    @property
    def n_atoms(self) -> np.ndarray:
        return np.diff(self.atom_offsets)

    @property
    def n_edges(self) -> np.ndarray:
        return np.diff(self.edge_offsets)

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays, in bytes."""
        return sum(getattr(self, name).nbytes for name in self.array_names) + sum(
            np.asarray(v).nbytes for v in self._settings().values()
        )

    def __repr__(self) -> str:
        return (
            f"CrystalGraphs(n_graphs={len(self)}, n_atoms={self.atom_offsets[-1]}, "
            f"n_edges={self.edge_offsets[-1]}, {self.nbytes / 1e6:.1f} MB)"
        )

    def _rows(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # sklearn's _safe_indexing asks for X[key, ...]
            key = key[0]
        if isinstance(key, slice):
            return np.arange(len(self))[key]
        rows = np.asarray(key)
        if rows.dtype == bool:
            if len(rows) != len(self):
                raise IndexError(f"Boolean index of length {len(rows)} for {len(self)} graphs.")
            return np.flatnonzero(rows)
        if rows.size and not np.issubdtype(rows.dtype, np.integer):
            raise IndexError(f"Cannot index CrystalGraphs with {rows.dtype} values.")
        rows = rows.astype(np.int64).ravel()
        if rows.size and (rows.max() >= len(self) or rows.min() < -len(self)):
            raise IndexError(f"Graph index out of range for {len(self)} graphs.")
        return rows % max(len(self), 1)

    def __getitem__(self, key) -> CrystalGraph | CrystalGraphs:
        if isinstance(key, (int, np.integer)):
            return self._single(int(self._rows([key])[0]))
        rows = self._rows(key)
        arrays = {}
        for name, members in (
            ("atom", ()),
            ("species", ("atomic_numbers", "occupancy", "species_atom")),
            ("edge", ("edge_src", "edge_dst", "edge_length")),
        ):
            flat, counts = _ragged_indices(getattr(self, f"{name}_offsets"), rows)
            arrays[f"{name}_offsets"] = _offsets(counts)
            for member in members:
                arrays[member] = getattr(self, member)[flat]
        if self.edge_vector is not None:
            arrays["edge_vector"] = self.edge_vector[flat]  # flat is the edges', cut last
        return CrystalGraphs(**arrays, **self._settings())

    def _single(self, i: int) -> CrystalGraph:
        species = slice(self.species_offsets[i], self.species_offsets[i + 1])
        edges = slice(self.edge_offsets[i], self.edge_offsets[i + 1])
        return CrystalGraph(
            atomic_numbers=self.atomic_numbers[species],
            occupancy=self.occupancy[species],
            species_atom=self.species_atom[species],
            edge_src=self.edge_src[edges],
            edge_dst=self.edge_dst[edges],
            edge_length=self.edge_length[edges],
            n_atoms=int(self.atom_offsets[i + 1] - self.atom_offsets[i]),
            edge_vector=None if self.edge_vector is None else self.edge_vector[edges],
        )

    def batch(self, rows: np.ndarray) -> GraphBatch:
        """Join the graphs ``rows`` into one :class:`GraphBatch` of torch tensors."""
        rows = np.asarray(rows, dtype=np.int64)
        n_atoms = self.atom_offsets[rows + 1] - self.atom_offsets[rows]
        first_atom = _offsets(n_atoms)[:-1]

        species, species_counts = _ragged_indices(self.species_offsets, rows)
        species_atom = self.species_atom[species] + np.repeat(first_atom, species_counts)
        table = torch.from_numpy(self.atom_feature_values)
        weighted = table[torch.from_numpy(self.atomic_numbers[species].astype(np.int64))]
        weighted *= torch.from_numpy(self.occupancy[species])[:, None]
        atom_fea = torch.zeros(int(n_atoms.sum()), table.shape[1])
        atom_fea.index_add_(0, torch.from_numpy(species_atom.astype(np.int64)), weighted)

        edges, edge_counts = _ragged_indices(self.edge_offsets, rows)
        shift = np.repeat(first_atom, edge_counts)
        edge_index = np.stack([self.edge_src[edges] + shift, self.edge_dst[edges] + shift])
        return GraphBatch(
            atom_fea=atom_fea,
            edge_length=torch.from_numpy(self.edge_length[edges]),
            edge_index=torch.from_numpy(edge_index.astype(np.int64)),
            graph_index=torch.from_numpy(np.repeat(np.arange(len(rows)), n_atoms)),
            n_graphs=len(rows),
            expansion=self.expansion,
            edge_vector=None
            if self.edge_vector is None
            else torch.from_numpy(np.ascontiguousarray(self.edge_vector[edges])),
        )
