"""Element feature tables: the rows a crystal graph's nodes start from.

A table maps an atomic number to a feature vector. The default reproduces the
recipe of CGCNN's ``atom_init.json`` (Xie & Grossman, PRL 2018, Table S2): nine
element properties, each one-hot encoded into categories or equal-width bins,
92 features in all. It is built here from the Magpie element data that ships
with matminer, so no file has to be downloaded.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import lru_cache

import numpy as np
from pymatgen.core import Element

#: Atomic numbers the built-in table covers, as CGCNN's ``atom_init.json`` does.
DEFAULT_MAX_Z = 100

# (Magpie property, number of bins); group, period, valence and block are categories.
_BINNED_PROPERTIES = (
    ("Electronegativity", 10),
    ("CovalentRadius", 10),
)
_LATER_BINNED_PROPERTIES = (
    ("FirstIonizationEnergy", 10),
    ("ElectronAffinity", 10),
)
_N_GROUPS = 19  # 1..18, and 0 for the lanthanide and actinide series
_N_PERIODS = 7
_MAX_VALENCE = 12
_BLOCKS = ("s", "p", "d", "f")


class AtomFeatureTable:
    """Feature vectors of elements, indexed by atomic number.

    Parameters
    ----------
    rows : mapping of int to array-like
        Atomic number to feature vector; all vectors must have the same length.
    name : str
        Where the table came from, for messages.
    """

    def __init__(self, rows: Mapping[int, np.ndarray], name: str) -> None:
        lengths = {len(v) for v in rows.values()}
        if len(lengths) != 1:
            raise ValueError(
                f"Atom feature table {name!r} has rows of different lengths {sorted(lengths)}; "
                "every element needs a vector of the same length."
            )
        max_z = max(rows)
        self.values = np.zeros((max_z + 1, lengths.pop()), dtype=np.float32)
        self.covered = np.zeros(max_z + 1, dtype=bool)
        for z, row in rows.items():
            self.values[z] = row
            self.covered[z] = True
        self.name = name

    @property
    def n_features(self) -> int:
        return self.values.shape[1]

    def missing(self, atomic_numbers: np.ndarray) -> np.ndarray:
        """Return the atomic numbers among ``atomic_numbers`` the table has no row for."""
        z = np.unique(atomic_numbers)
        inside = z < len(self.covered)
        ok = np.zeros(len(z), dtype=bool)
        ok[inside] = self.covered[z[inside]]
        return z[~ok]

    def __repr__(self) -> str:
        return (
            f"AtomFeatureTable({self.name!r}, elements={int(self.covered.sum())}, "
            f"n_features={self.n_features})"
        )


def _one_hot(index: int, size: int) -> np.ndarray:
    row = np.zeros(size, dtype=np.float32)
    row[index] = 1.0
    return row


def _bin_indices(values: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.linspace(values.min(), values.max(), n_bins + 1)
    return np.clip(np.digitize(values, edges[1:-1]), 0, n_bins - 1)


@lru_cache(maxsize=1)
def cgcnn_atom_features() -> AtomFeatureTable:
    """Build the default 92-feature CGCNN-style table for elements 1 to 100.

    The blocks, in CGCNN's order: group (19 categories, 0 for the f-block
    series), period (7), Pauling electronegativity (10 bins), covalent radius
    (10 bins), valence electrons (12 categories, capped at 12), first
    ionization energy (10 bins), electron affinity (10 bins), block s/p/d/f (4),
    and ground-state volume per atom (10 bins). Bins are equal-width over the
    elements covered.

    Returns
    -------
    AtomFeatureTable
    """
    from matminer.utils.data import MagpieData

    props = MagpieData().all_elemental_props
    elements = [Element.from_Z(z) for z in range(1, DEFAULT_MAX_Z + 1)]
    symbols = [el.symbol for el in elements]

    def column(name: str) -> np.ndarray:
        return np.array([props[name][s] for s in symbols], dtype=float)

    def binned(name: str, n_bins: int) -> np.ndarray:
        idx = _bin_indices(column(name), n_bins)
        return np.stack([_one_hot(i, n_bins) for i in idx])

    is_f_block = np.array([el.block == "f" for el in elements])
    group = np.where(is_f_block, 0, column("Column").astype(int))
    period = column("Row").astype(int) - 1
    valence = np.clip(column("NValence").astype(int), 1, _MAX_VALENCE) - 1
    block = [_BLOCKS.index(el.block) for el in elements]
    blocks = [
        np.stack([_one_hot(g, _N_GROUPS) for g in group]),
        np.stack([_one_hot(p, _N_PERIODS) for p in period]),
        *(binned(name, n) for name, n in _BINNED_PROPERTIES),
        np.stack([_one_hot(v, _MAX_VALENCE) for v in valence]),
        *(binned(name, n) for name, n in _LATER_BINNED_PROPERTIES),
        np.stack([_one_hot(b, len(_BLOCKS)) for b in block]),
        binned("GSvolume_pa", 10),
    ]
    features = np.concatenate(blocks, axis=1)
    return AtomFeatureTable({el.Z: features[i] for i, el in enumerate(elements)}, name="cgcnn")


def _atomic_number(key: int | str) -> int:
    if isinstance(key, (int, np.integer)):
        return int(key)
    key = str(key)
    return int(key) if key.isdigit() else Element(key).Z


def resolve_atom_features(
    atom_features: str | os.PathLike | Mapping | AtomFeatureTable | None,
) -> AtomFeatureTable:
    """Turn the ``atom_features`` parameter of the transformer into a table.

    Parameters
    ----------
    atom_features : {"cgcnn"}, path, mapping, AtomFeatureTable or None
        ``None`` or ``"cgcnn"`` gives :func:`cgcnn_atom_features`. A path names
        a JSON file keyed by atomic number, as CGCNN's ``atom_init.json``. A
        mapping takes atomic numbers or element symbols to vectors.

    Returns
    -------
    AtomFeatureTable
    """
    if atom_features is None or atom_features == "cgcnn":
        return cgcnn_atom_features()
    if isinstance(atom_features, AtomFeatureTable):
        return atom_features
    if isinstance(atom_features, Mapping):
        return AtomFeatureTable(
            {_atomic_number(k): np.asarray(v, dtype=np.float32) for k, v in atom_features.items()},
            name="mapping",
        )
    path = os.fspath(atom_features)
    if not os.path.isfile(path):
        raise ValueError(
            f"atom_features={atom_features!r} is neither 'cgcnn', a mapping, nor an existing "
            "JSON file such as CGCNN's atom_init.json."
        )
    with open(path) as handle:
        rows = json.load(handle)
    table = resolve_atom_features(rows)
    table.name = path
    return table
