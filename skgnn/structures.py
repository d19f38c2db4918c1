"""Reading the ``X`` a user hands us into pymatgen structures.

An item of ``X`` is a pymatgen structure of any kind (``Structure``,
``IStructure``, ``SymmetrizedStructure``, ``Slab``, ``Interface``, ...), a
``Structure.as_dict()`` mapping, the path of a structure file (``str`` or
``os.PathLike``), or CIF text. Whether what was read is a crystal that can be
graphed is :mod:`skgnn.crystal`'s question.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping
from fnmatch import fnmatch
from pathlib import Path

import numpy as np
from monty.io import zopen
from pymatgen.core import IMolecule, IStructure, Structure
from pymatgen.io.cif import CifParser

from .crystal import check_crystal
from .exceptions import StructureError

ACCEPTED = (
    "a pymatgen Structure (or IStructure), a Structure.as_dict() mapping, the path of a "
    "structure file (CIF, POSCAR, ...), or CIF text"
)

# pymatgen's own name patterns for CIF files (Structure.from_file); zopen reads
# any compressed variant (.gz, .bz2, .xz, .lzma, .Z) by its suffix
_CIF_NAMES = ("*.cif*", "*.mcif*")
_SNIFF_CHARS = 65536  # a CIF's first data_ line comes before this, after any comments


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
    single = (str, bytes, os.PathLike, IStructure, IMolecule, Mapping)
    if isinstance(X, single) or not isinstance(X, Iterable):
        raise TypeError(
            f"X must be a sequence of structures (list, array or pandas Series); got a single "
            f"{type(X).__name__}. Wrap one structure in a list."
        )
    return list(X)


def to_structure(item, index: int) -> IStructure:
    """Read one item of ``X``; ``index`` is its position, used in error messages.

    A pymatgen structure is returned as it is (no copy). A string that names
    an existing file is read as that file, whatever its name looks like; any
    other string with a line break is read as CIF text.

    Raises
    ------
    skgnn.exceptions.StructureError
        For an item of another type, a missing or unreadable file, a CIF
        holding several structures, or a mapping that is not a Structure dict.
    """
    if isinstance(item, IStructure):  # Structure and every other kind subclass it
        return item
    if isinstance(item, IMolecule):
        raise StructureError(
            f"X[{index}] is a pymatgen {type(item).__name__}, which has no lattice; crystal "
            "graphs need a periodic Structure. Box it with molecule.get_boxed_structure(a, b, c) "
            "if a periodic model of it is what you want."
        )
    if isinstance(item, Mapping):
        try:
            return Structure.from_dict(item)
        except Exception as exc:  # from_dict fails in as many ways as a dict can be wrong
            raise StructureError(
                f"X[{index}] is a mapping but not a Structure dict: {type(exc).__name__}: {exc}"
            ) from exc
    if isinstance(item, str) and not os.path.isfile(item):
        if "\n" in item or "\r" in item:
            return _read_cif(lambda: CifParser.from_str(item), "CIF text", index)
        raise StructureError(
            f"X[{index}] = {item[:80]!r} is neither an existing file nor CIF text; "
            f"expected {ACCEPTED}."
        )
    if isinstance(item, (str, os.PathLike)):
        return _read_file(Path(item), index)
    raise StructureError(f"X[{index}] is a {type(item).__name__}; expected {ACCEPTED}.")


def to_structures(X) -> list[IStructure]:
    """Read and check every item of ``X``; the first bad item raises, naming its index.

    Each structure passes the checks of :func:`skgnn.crystal.check_crystal`,
    so the tabular line refuses the same inputs as the graph line.
    """
    items = as_sequence(X)
    if not items:
        raise ValueError("X is empty; pass at least one structure.")
    structures = [to_structure(item, i) for i, item in enumerate(items)]
    for i, structure in enumerate(structures):
        check_crystal(structure, i)
    return structures


def _read_file(path: Path, index: int) -> IStructure:
    if not path.is_file():
        raise StructureError(f"X[{index}] = {str(path)[:200]!r} is not an existing file.")
    if any(fnmatch(path.name.lower(), pattern) for pattern in _CIF_NAMES):
        return _read_cif(lambda: CifParser(str(path)), f"the CIF file {str(path)!r}", index)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # readers warn on routine quirks
            return Structure.from_file(path)
    except Exception as exc:  # an unknown name, or a reader's own complaint
        if _looks_like_cif(path):
            return _read_cif(lambda: CifParser(str(path)), f"the CIF file {str(path)!r}", index)
        raise StructureError(
            f"X[{index}]: could not read the file {str(path)!r} with pymatgen's "
            f"Structure.from_file ({type(exc).__name__}: {exc}); name a CIF file *.cif, "
            "a VASP file POSCAR or *.vasp, and so on, as Structure.from_file expects."
        ) from exc


def _looks_like_cif(path: Path) -> bool:
    try:
        with zopen(str(path), mode="rt", encoding="utf-8", errors="replace") as file:
            head = file.read(_SNIFF_CHARS)
    except Exception:  # unreadable: not a CIF we could parse either
        return False
    return any(line.lstrip().startswith("data_") for line in head.splitlines())


def _read_cif(make_parser, source: str, index: int) -> IStructure:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pymatgen warns on routine CIF quirks
            structures = make_parser().parse_structures(primitive=False)
    except Exception as exc:  # the parser's errors name neither item nor file
        raise StructureError(f"X[{index}]: could not read {source}: {exc}") from exc
    if len(structures) > 1:
        # X and y are aligned row by row: one item may not become several rows
        raise StructureError(
            f"X[{index}]: {source} holds {len(structures)} structures (data_ blocks), and "
            "each item of X must be one structure, aligned with its row of y. Split it, e.g. "
            "CifParser(path).parse_structures(primitive=False), and pass one item (and one "
            "target) per structure."
        )
    return structures[0]
