"""What a structure must be for a crystal graph: a cell, sites and elements that make sense.

pymatgen builds structures with NaN or infinite lattices and coordinates,
partial periodicity and placeholder species without complaint; each of these
would hang the neighbour search, crash deep inside numpy, or index the atom
feature table with a hash. The checks here run on every structure, so they
are written for small cells: plain floats for the 3×3 lattice, one pass over
the sites, and the detailed diagnosis only once something is wrong.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from pymatgen.core import Element, IStructure, Lattice
from pymatgen.core.periodic_table import DummySpecies

from .exceptions import StructureError

#: Sites closer than this (Å) are taken for a duplicated or overlapping atom.
MIN_INTERATOMIC_DISTANCE = 0.5

#: Volume per site (Å³) below which two sites must lie closer than
#: :data:`MIN_INTERATOMIC_DISTANCE`: no packing of points that far apart is
#: denser than face-centred cubic, ``d³/√2`` per point (Kepler, Hales).
MIN_VOLUME_PER_SITE = MIN_INTERATOMIC_DISTANCE**3 / math.sqrt(2)

#: Largest atomic number of an element (pymatgen's ``DummySpecies.Z`` is a hash).
MAX_Z = max(element.Z for element in Element)

# occupancies of one site may exceed 1 by float noise from CIF rounding
_OCCUPANCY_TOLERANCE = 1e-6

# Above this many sites, look for sites sharing a cube of diagonal
# MIN_INTERATOMIC_DISTANCE before searching: n sites piled up within the
# cutoff make the search list n² pairs (3,000 took 1.3 GB) before the overlap
# check after it could speak.
_GRID_CHECK_SITES = 256
_GRID_EDGE = MIN_INTERATOMIC_DISTANCE / math.sqrt(3)


class PeriodicCell(NamedTuple):
    """The numbers of a checked structure that the neighbour search needs."""

    coords: np.ndarray
    """Cartesian coordinates of the sites (Å), C-contiguous float64."""
    matrix: np.ndarray
    """Lattice vectors as rows (Å)."""
    volume: float
    """Cell volume (Å³)."""
    inverse_heights: tuple[float, float, float]
    """1 / the spacing of the lattice planes spanned by the other two vectors (1/Å)."""
    extent: float
    """A bound on every site's distance from the origin (Å): the norm of all the
    Cartesian coordinates together."""

    @property
    def shortest(self) -> float:
        """Length of the shortest of the three lattice vectors (Å): every site has
        a periodic image of itself at this distance."""
        return float(np.sqrt((self.matrix**2).sum(axis=1).min()))


def periodic_cell(structure: IStructure, index: int) -> PeriodicCell:
    """Check that ``structure`` is a finite, 3-D periodic cell with room for its sites.

    Parameters
    ----------
    structure : IStructure
        Any pymatgen structure (``Structure``, ``IStructure`` and subclasses).
    index : int
        Position of the structure in ``X``, named in errors.

    Returns
    -------
    PeriodicCell

    Raises
    ------
    skgnn.exceptions.StructureError
        For no sites, periodicity in fewer than three directions, a lattice
        or coordinates that are not finite, or a cell too small for its sites.
    """
    n_sites = len(structure)
    if n_sites == 0:
        raise StructureError(f"X[{index}] is a structure with no sites.")
    if not all(structure.pbc):
        raise StructureError(
            f"X[{index}] is periodic only along {_axes(structure.pbc)} (pbc={structure.pbc}); "
            "CGCNN graphs need periodicity in all three directions. For a slab, surface or "
            "molecule, give the open directions enough vacuum that periodic images do not "
            "touch, then make them periodic: structure.lattice = "
            "Lattice(structure.lattice.matrix, pbc=(True, True, True))."
        )
    matrix = structure.lattice.matrix
    volume, inverse_heights = _geometry(matrix)
    # NaN or inf anywhere in the matrix reaches the triple product, which holds every entry
    if not math.isfinite(volume):
        raise _lattice_error(matrix, index)
    if volume < n_sites * MIN_VOLUME_PER_SITE:
        raise StructureError(
            f"X[{index}] packs {n_sites} site(s) into a cell of {volume:.3g} Å³ "
            f"(lattice {matrix.tolist()}): less than {MIN_VOLUME_PER_SITE:.3f} Å³ a site "
            f"puts some sites, or a site and its own periodic image, closer than "
            f"{MIN_INTERATOMIC_DISTANCE} Å. Check the lattice (a zero or near-zero volume "
            "is a degenerate lattice) and remove duplicated sites."
        )
    coords = structure.cart_coords
    # one dot product carries any NaN or inf, and bounds every site's distance from the origin
    squares = float(np.vdot(coords, coords))
    if not math.isfinite(squares):
        raise _coordinates_error(structure, coords, index)
    if n_sites > _GRID_CHECK_SITES:
        _check_piled_up_sites(coords, index)
    return PeriodicCell(
        np.ascontiguousarray(coords, dtype=float),
        np.ascontiguousarray(matrix, dtype=float),
        volume,
        inverse_heights,
        math.sqrt(squares),
    )


def reduced_cell(cell: PeriodicCell) -> PeriodicCell:
    """The same crystal in its LLL-reduced cell, every site wrapped into it.

    The lattice points and the sites' positions modulo the lattice are
    unchanged, so every neighbour and distance is too; a skewed cell or
    coordinates many cells away, which make the periodic search visit vast
    numbers of images, become a compact cell with its sites inside.
    """
    matrix = np.ascontiguousarray(Lattice(cell.matrix).get_lll_reduced_lattice().matrix)
    fractional = np.linalg.solve(matrix.T, cell.coords.T).T
    coords = np.ascontiguousarray((fractional - np.floor(fractional)) @ matrix)
    volume, inverse_heights = _geometry(matrix)
    return PeriodicCell(coords, matrix, volume, inverse_heights, float(np.linalg.norm(coords)))


def _geometry(matrix: np.ndarray) -> tuple[float, tuple[float, float, float]]:
    """Volume and inverse plane spacings of a lattice.

    Plain floats, inlined: on the hot path numpy's per-call overhead on a 3×3
    matrix, or even Python's per-call overhead, costs more than the arithmetic.
    """
    ((a0, a1, a2), (b0, b1, b2), (c0, c1, c2)) = matrix.tolist()
    # the cross products of pairs of lattice vectors; their norms are the face areas
    bc0, bc1, bc2 = b1 * c2 - b2 * c1, b2 * c0 - b0 * c2, b0 * c1 - b1 * c0
    ca0, ca1, ca2 = c1 * a2 - c2 * a1, c2 * a0 - c0 * a2, c0 * a1 - c1 * a0
    ab0, ab1, ab2 = a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0
    volume = abs(a0 * bc0 + a1 * bc1 + a2 * bc2)
    if volume == 0:
        return volume, (math.inf, math.inf, math.inf)
    return volume, (
        math.sqrt(bc0 * bc0 + bc1 * bc1 + bc2 * bc2) / volume,
        math.sqrt(ca0 * ca0 + ca1 * ca1 + ca2 * ca2) / volume,
        math.sqrt(ab0 * ab0 + ab1 * ab1 + ab2 * ab2) / volume,
    )


def site_species(structure: IStructure, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Atomic numbers, occupancies and owning site of every species on every site.

    Ionic species (``Species("Fe", 2)``) count as their element.

    Raises
    ------
    skgnn.exceptions.StructureError
        For a species that is not an element (a pymatgen ``DummySpecies``),
        a site with no species, or occupancies that are not in (0, 1] or sum
        to more than 1 on a site.
    """
    z = []
    for site in structure:
        # one species at occupancy 1 is the common case: no arrays of owners needed
        items = site.species.items()
        if len(items) != 1:
            return _all_species(structure, index)
        ((species, amount),) = items
        if amount != 1:
            return _all_species(structure, index)
        z.append(species.Z)
    if not z or min(z) < 1 or max(z) > MAX_Z:
        return _all_species(structure, index)
    n_sites = len(z)
    return (
        np.array(z, dtype=np.int16),
        np.ones(n_sites, dtype=np.float32),
        np.arange(n_sites, dtype=np.int32),
    )


def check_crystal(structure: IStructure, index: int) -> None:
    """Run every check of this module on ``structure``; ``index`` names it in errors."""
    periodic_cell(structure, index)
    site_species(structure, index)


def _all_species(structure, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z, occupancy, owner = [], [], []
    for i, site in enumerate(structure):
        species = dict(site.species.items())
        if not species:
            raise StructureError(
                f"X[{index}] site {i} holds no species (its occupancies are zero or not "
                "numbers); remove the site or give it an element."
            )
        for sp, amount in species.items():
            # a DummySpecies has a hash for Z
            atomic_number = 0 if isinstance(sp, DummySpecies) else sp.Z
            if not 1 <= atomic_number <= MAX_Z:
                raise StructureError(
                    f"X[{index}] site {i} holds {sp!s} ({type(sp).__name__}), which is not a "
                    "chemical element; crystal graphs need elements to look up atom "
                    f"features. Replace it, e.g. structure.replace_species({{'{sp!s}': 'Na'}})."
                )
            if not (math.isfinite(amount) and amount > 0):
                raise StructureError(
                    f"X[{index}] site {i} has occupancy {amount} of {sp!s}; occupancies "
                    "must be numbers in (0, 1]."
                )
            z.append(atomic_number)
            occupancy.append(amount)
            owner.append(i)
        total = sum(species.values())
        if total > 1 + _OCCUPANCY_TOLERANCE:
            raise StructureError(
                f"X[{index}] site {i} has occupancies summing to {total:.6g} > 1 "
                f"({', '.join(f'{sp!s}: {amount}' for sp, amount in species.items())})."
            )
    return (
        np.array(z, dtype=np.int16),
        np.array(occupancy, dtype=np.float32),
        np.array(owner, dtype=np.int32),
    )


def overlap_error(index: int, site: int, other: int, distance: float) -> StructureError:
    """The error for two sites closer than :data:`MIN_INTERATOMIC_DISTANCE`."""
    return StructureError(
        f"X[{index}] has sites {site} and {other} only {distance:.3f} Å apart "
        f"(less than {MIN_INTERATOMIC_DISTANCE} Å): overlapping atoms, usually a site "
        "listed twice. Remove the duplicate, e.g. with structure.merge_sites(mode='delete')."
    )


def _check_piled_up_sites(coords: np.ndarray, index: int) -> None:
    """Raise for two sites in one grid cube, which lie closer than the overlap distance.

    Sites are binned as given, not wrapped: a cheap guard against piles of
    sites, not a full overlap check (the search does that).
    """
    cube = np.floor((coords - coords.min(axis=0)) / _GRID_EDGE)
    if not cube.max() < 2**53:  # beyond, float cube numbers no longer tell cubes apart
        return
    order = np.lexsort(cube.T)
    sorted_cube = cube[order]
    same = np.flatnonzero((sorted_cube[1:] == sorted_cube[:-1]).all(axis=1))
    if len(same):
        site, other = sorted(order[same[0] : same[0] + 2].tolist())
        distance = float(np.linalg.norm(coords[site] - coords[other]))
        if distance < MIN_INTERATOMIC_DISTANCE:  # a cube's diagonal, but for float rounding
            raise overlap_error(index, site, other, distance)


def _lattice_error(matrix: np.ndarray, index: int) -> StructureError:
    if np.isfinite(matrix).all():
        problem = "entries so large that its volume overflows"
    else:
        problem = "entries that are NaN or infinite"
    return StructureError(f"X[{index}] has a lattice with {problem}: {matrix.tolist()}.")


def _coordinates_error(structure, coords: np.ndarray, index: int) -> StructureError:
    bad = np.flatnonzero(~np.isfinite(coords).all(axis=1))
    if len(bad) == 0:  # finite, but their sum overflowed
        return StructureError(
            f"X[{index}] has site coordinates too large to compute with "
            f"(up to {np.abs(coords).max():.3g} Å); wrap them into the cell."
        )
    site = int(bad[0])
    return StructureError(
        f"X[{index}] has {len(bad)} site(s) with coordinates that are NaN or infinite, "
        f"the first site {site} at fractional {structure[site].frac_coords.tolist()}."
    )


def _axes(pbc) -> str:
    axes = [name for name, periodic in zip("abc", pbc, strict=True) if periodic]
    return " and ".join(axes) if axes else "no direction"
