"""Reading the ``X`` a user hands us into pymatgen ``Structure`` objects."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from pymatgen.core import Molecule, Structure
from pymatgen.io.cif import CifParser

from .exceptions import StructureError

ACCEPTED = (
    "a pymatgen Structure, a Structure.as_dict() mapping, the path of a CIF file, or CIF text"
)


def as_sequence(X) -> list:
    """Return ``X`` (list, tuple, numpy array, pandas Series or DataFrame column) as a list."""
    if hasattr(X, "columns"):
        if X.shape[1] != 1:
            raise ValueError(
                f"X is a DataFrame with {X.shape[1]} columns; pass the one column that holds "
                "the structures, e.g. df['structure']."
            )
        X = X.iloc[:, 0]
    if hasattr(X, "to_numpy"):
        X = X.to_numpy()
    if isinstance(X, np.ndarray):
        if X.ndim != 1:
            X = X.reshape(len(X), -1)
            if X.shape[1] != 1:
                raise ValueError(f"X has shape {X.shape}; expected one structure per row.")
            X = X[:, 0]
        return list(X)
    if isinstance(X, (str, bytes, os.PathLike, Structure)) or not isinstance(X, Iterable):
        raise TypeError(
            f"X must be a sequence of structures (list, array or pandas Series); got a single "
            f"{type(X).__name__}. Wrap one structure in a list."
        )
    return list(X)


def _looks_like_cif_text(text: str) -> bool:
    return "_cell_length_a" in text or text.lstrip().startswith("data_")


def _from_cif_text(text: str) -> Structure:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns on routine CIF quirks (occupancy rounding)
        structures = CifParser.from_str(text).parse_structures(primitive=False)
    return structures[0]


def cell_volume(structure: Structure) -> float:
    """Volume of the cell in Å³ (the triple product in plain floats: on the hot path,
    ``np.linalg.det`` costs more than the rest of a small cell's graph bookkeeping)."""
    (a, b, c) = structure.lattice.matrix.tolist()
    return abs(
        a[0] * (b[1] * c[2] - b[2] * c[1])
        - a[1] * (b[0] * c[2] - b[2] * c[0])
        + a[2] * (b[0] * c[1] - b[1] * c[0])
    )


def to_structure(item, index: int) -> Structure:
    """Read one item of ``X``; ``index`` is its position, used in error messages."""
    if isinstance(item, Structure):
        structure = item
    elif isinstance(item, Molecule):
        raise StructureError(
            f"X[{index}] is a pymatgen Molecule, which has no lattice; crystal graphs need a "
            "periodic Structure. Box it with molecule.get_boxed_structure(a, b, c) if a "
            "periodic model of it is what you want."
        )
    elif isinstance(item, Mapping):
        try:
            structure = Structure.from_dict(item)
        except Exception as exc:
            raise StructureError(
                f"X[{index}] is a mapping but not a Structure dict: {exc}"
            ) from exc
    elif isinstance(item, (str, os.PathLike)):
        structure = _read_cif(item, index)
    else:
        raise StructureError(f"X[{index}] is a {type(item).__name__}; expected {ACCEPTED}.")
    if len(structure) == 0:
        raise StructureError(f"X[{index}] is a structure with no sites.")
    if cell_volume(structure) < 1e-6:
        raise StructureError(f"X[{index}] has a degenerate lattice (volume ≈ 0).")
    return structure


def _read_cif(item: str | os.PathLike, index: int) -> Structure:
    text = str(item)
    is_text = isinstance(item, str) and ("\n" in text or _looks_like_cif_text(text))
    try:
        if is_text:
            return _from_cif_text(text)
        path = Path(item)
        if not path.is_file():
            raise StructureError(
                f"X[{index}] = {text[:80]!r} is neither an existing file nor CIF text; "
                f"expected {ACCEPTED}."
            )
        return _from_cif_text(path.read_text(errors="replace"))
    except StructureError:
        raise
    except Exception as exc:
        source = "CIF text" if is_text else f"the CIF file {text!r}"
        raise StructureError(f"X[{index}]: could not read {source}: {exc}") from exc


def to_structures(X) -> list[Structure]:
    """Read every item of ``X``; the first bad item raises, naming its index."""
    items = as_sequence(X)
    if not items:
        raise ValueError("X is empty; pass at least one structure.")
    return [to_structure(item, i) for i, item in enumerate(items)]
