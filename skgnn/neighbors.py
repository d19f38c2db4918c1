"""From one periodic structure to one crystal graph: sites, species and nearest neighbours."""

from __future__ import annotations

import math

import numpy as np
from pymatgen.core import Element, IStructure
from pymatgen.optimization.neighbors import find_points_in_spheres

from .atom_features import AtomFeatureTable
from .crystal import (
    MIN_INTERATOMIC_DISTANCE,
    PeriodicCell,
    overlap_error,
    periodic_cell,
    reduced_cell,
    site_species,
)
from .exceptions import StructureError
from .graphs import CrystalGraph

__all__ = ["MIN_INTERATOMIC_DISTANCE", "nearest_neighbor_edges", "structure_to_graph"]

#: Factor by which the search radius grows, for one structure, while any atom has no neighbour.
CUTOFF_GROWTH = 1.5

# Packing of the single int64 sort key: element (< 128), image components (|i| < 32).
_N_SITE_KEYS = 128
_IMAGE_OFFSET = 32
_IMAGE_WEIGHTS = np.array([64 * 64, 64, 1])
_IMAGE_CODES = 64**3
_MAX_SITES_SQUARED_TIMES_DISTANCES = 2**62 // (_N_SITE_KEYS * _IMAGE_CODES)

_SELF_DISTANCE = 1e-8  # Å
_RADIUS_MARGIN = 1e-3  # Å; neighbours this close to a trial radius may have twins just outside

# Distances are compared on this grid (Å) before ordering, so that float noise
# from a rotation or translation does not reorder neighbours at equal distance.
_DISTANCE_RESOLUTION = 1e-5

# find_points_in_spheres visits every site in every cell image of a box around
# the sites, then bins those images into a grid of cubes as wide as the radius;
# both counts explode for skewed lattices, far-flung coordinates or vast cells
# (a hang, or a request for tens of GB). Searches beyond these are refused.
_MAX_IMAGES = 2**20
_MAX_GRID_CUBES = 2**22
_IMAGES_PER_AXIS = _MAX_IMAGES ** (1 / 3) - 4
_CUBES_PER_AXIS = _MAX_GRID_CUBES ** (1 / 3) - 4
_SEARCH_MIN_RADIUS = 1.0  # find_points_in_spheres' min_r: smaller radii search this far
_PBC = np.ones(3, dtype=np.int64)


def _search_size(cell: PeriodicCell, radius: float) -> tuple[float, float]:
    """Upper bounds on the cell images and grid cubes of one search at ``radius``.

    Mirrors find_points_in_spheres: along lattice direction i it visits the
    images within ``(radius + 0.15) / height_i`` cells of the sites' span, and
    its grid spans the sites' box widened by ``radius`` on each side.
    """
    r = max(radius, _SEARCH_MIN_RADIUS)
    spans = (cell.coords.max(axis=0) - cell.coords.min(axis=0)).tolist()
    diagonal = math.sqrt(spans[0] ** 2 + spans[1] ** 2 + spans[2] ** 2)
    images = cubes = 1.0
    for span, inverse_height in zip(spans, cell.inverse_heights, strict=True):
        images *= (diagonal + 2 * (r + 0.15)) * inverse_height + 4
        cubes *= span / r + 4
    return images, cubes


def _safe_radii(cell: PeriodicCell) -> tuple[float, float]:
    """Radii between which :func:`_search_size` is surely within the limits.

    From the loose bound of ``2 * cell.extent`` on every span: one comparison
    a search on the hot path, the exact sizes only outside this range.
    """
    span = 2 * cell.extent
    highest = (_IMAGES_PER_AXIS / max(cell.inverse_heights) - math.sqrt(3) * span) / 2 - 0.15
    return span / _CUBES_PER_AXIS, highest


def _bounded(cell: PeriodicCell, radius: float, index: int) -> PeriodicCell:
    """``cell``, or the same crystal in its reduced cell, if a search at ``radius`` fits."""
    images, cubes = _search_size(cell, radius)
    # written so that NaN (from inf / inf) fails too
    if images <= _MAX_IMAGES and cubes <= _MAX_GRID_CUBES:
        return cell
    try:
        reduced = reduced_cell(cell)
    except (ArithmeticError, ValueError, np.linalg.LinAlgError):
        reduced = cell  # pymatgen's LLL overflows on lattice vectors of ~1e150 Å
    else:
        images, cubes = _search_size(reduced, radius)
        if images <= _MAX_IMAGES and cubes <= _MAX_GRID_CUBES:
            return reduced
    spans = reduced.coords.max(axis=0) - reduced.coords.min(axis=0)
    raise StructureError(
        f"X[{index}]: a periodic neighbour search within {radius:.3g} Å would visit "
        f"~{images:.2g} cell images and a grid of ~{cubes:.2g} cubes (limits {_MAX_IMAGES} "
        f"and {_MAX_GRID_CUBES}), even once the cell is LLL-reduced: its {len(cell.coords)} "
        f"site(s) spread over {spans.max():.3g} Å, its lattice planes lie "
        f"{1 / max(reduced.inverse_heights):.3g} Å apart. A cell that vast, or that thin, "
        "for its atoms is not a crystal to graph; check its lattice and coordinates."
    )


def _neighbor_list(cell: PeriodicCell, radius: float, index: int):
    # pymatgen's compiled search, called directly: Structure.get_neighbor_list
    # adds per-site Python work that costs as much as the search on small cells
    coords = cell.coords
    try:
        center, neighbor, image, distance = find_points_in_spheres(
            coords, coords, r=radius, pbc=_PBC, lattice=cell.matrix, tol=1e-8
        )
    except MemoryError as exc:
        raise StructureError(
            f"X[{index}]: listing the neighbours of its {len(coords)} sites within "
            f"{radius:.3g} Å ran out of memory ({exc}); are many sites on top of each other?"
        ) from exc
    # the search returns each site with itself at distance 0; any other pair that close is
    # an overlap, caught below, so one comparison tells self pairs apart
    is_pair = distance > _SELF_DISTANCE
    if len(distance) - np.count_nonzero(is_pair) > len(coords):
        overlapping = (distance <= _SELF_DISTANCE) & ((center != neighbor) | image.any(axis=1))
        is_pair |= overlapping
    center, neighbor, image, distance = (
        center[is_pair],
        neighbor[is_pair],
        image[is_pair],
        distance[is_pair],
    )
    if len(distance) and distance.min() < MIN_INTERATOMIC_DISTANCE:
        k = int(np.argmin(distance))
        raise overlap_error(index, int(center[k]), int(neighbor[k]), float(distance[k]))
    return center, neighbor, image, distance


def _widest(cell: PeriodicCell, cutoff: float) -> float:
    """A radius within which every site has a neighbour: its own image, if nothing nearer."""
    return max(cutoff, cell.shortest * (1 + 1e-9) + _RADIUS_MARGIN)


def _radius_for(max_neighbors: int, volume_per_atom: float) -> float:
    """A radius likely to hold ``max_neighbors`` neighbours of every atom.

    Searching the full cutoff finds ~150 neighbours an atom in a dense solid
    to keep 12; starting from the radius of a sphere holding
    ``max_neighbors + 1`` atoms at the cell's mean density (with a margin)
    makes the search and the sort several times cheaper.
    """
    return 1.3 * (3 * (max_neighbors + 1) * volume_per_atom / (4 * np.pi)) ** (1 / 3)


def _neighbor_order(center, neighbor, image, distance, site_key, radius: float) -> np.ndarray:
    """Sort pairs by centre, distance, ``site_key`` of the neighbour, its index, its image.

    ``site_key`` (the element) breaks distance ties before the site index
    does, so ties between different elements do not depend on site order.
    """
    n_sites = len(site_key)
    rounded = np.round(distance / _DISTANCE_RESOLUTION).astype(np.int64)
    n_distances = int(radius / _DISTANCE_RESOLUTION) + 2
    if (
        n_sites * n_sites * n_distances < _MAX_SITES_SQUARED_TIMES_DISTANCES
        and np.abs(image).max(initial=0) < _IMAGE_OFFSET
    ):
        # one int64 key sorts several times faster than a multi-key lexsort
        img = ((image + _IMAGE_OFFSET) * _IMAGE_WEIGHTS).sum(axis=1)
        key = (center * n_distances + rounded) * _N_SITE_KEYS + site_key[neighbor]
        return np.argsort((key * n_sites + neighbor) * _IMAGE_CODES + img, kind="stable")
    return np.lexsort(
        (image[:, 2], image[:, 1], image[:, 0], neighbor, site_key[neighbor], rounded, center)
    )


def nearest_neighbor_edges(
    structure: IStructure,
    cutoff: float,
    max_neighbors: int,
    index: int = 0,
    site_key: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Edges from each atom to its ``max_neighbors`` nearest neighbours within ``cutoff``.

    The structure is checked first (:func:`skgnn.crystal.periodic_cell`):
    finite, 3-D periodic, room for its sites. Neighbours are then listed by
    pymatgen's compiled ``find_points_in_spheres`` under periodic boundary
    conditions, first within the radius of a sphere holding about
    ``max_neighbors + 1`` atoms at the cell's mean density (times 1.3), widened
    by :data:`CUTOFF_GROWTH` up to ``cutoff`` for as long as some atom has
    fewer than ``max_neighbors`` neighbours strictly inside it; the result is
    the same as searching ``cutoff`` at once. Pairs are ordered by distance
    (on a 1e-5 Å grid, so float noise does not reorder equal distances), then
    ``site_key`` of the neighbour (its element), then its site index, then its
    image, so the result is deterministic; it can depend on the order of the
    sites only when two different sites of the same element tie at the
    truncation distance. If some atom has no neighbour within ``cutoff``, the
    radius of this structure grows by :data:`CUTOFF_GROWTH` until every atom
    has one (as ALIGNN does); every site has a periodic image of itself at the
    length of the shortest lattice vector, which bounds the growth.

    Parameters
    ----------
    structure : IStructure
        A pymatgen structure (``Structure``, ``IStructure`` or a subclass).
    cutoff : float
        Search radius in Å.
    max_neighbors : int
        Neighbours kept per atom, nearest first.
    index : int, default=0
        Position of the structure in ``X``, named in errors.
    site_key : ndarray of int or None, default=None
        Per site, a key in [0, 128) that breaks distance ties before the site
        index does; ``None`` breaks them by site index only.

    Returns
    -------
    edge_src, edge_dst : ndarray of int32
        Centre and neighbour site of each edge, sorted by centre, then distance.
    edge_length : ndarray of float32
        Edge lengths in Å.
    edge_vector : ndarray of float32, shape (n_edges, 3)
        Cartesian displacement from the centre to the neighbour's periodic
        image, Å: what bond angles are computed from.

    Raises
    ------
    skgnn.exceptions.StructureError
        For a structure that is not a finite 3-D periodic cell, overlapping
        sites, or a search too large to run (a vast or extremely thin cell).
    """
    cell = periodic_cell(structure, index)
    n_sites = len(cell.coords)
    radius = min(cutoff, _radius_for(max_neighbors, cell.volume / n_sites))
    lowest, highest = _safe_radii(cell)
    while True:
        if not lowest <= max(radius, _SEARCH_MIN_RADIUS) <= highest:
            cell = _bounded(cell, radius, index)
        center, neighbor, image, distance = _neighbor_list(cell, radius, index)
        if radius < cutoff:
            # every atom has its max_neighbors nearest strictly inside: same as searching cutoff
            inside = center[distance < radius - _RADIUS_MARGIN]
            if np.bincount(inside, minlength=n_sites).min() >= max_neighbors:
                break
            radius = min(cutoff, radius * CUTOFF_GROWTH)
        elif np.bincount(center, minlength=n_sites).min() > 0:
            break
        elif radius < (widest := _widest(cell, cutoff)):
            radius = min(widest, radius * CUTOFF_GROWTH)
        else:
            lonely = int(np.argmin(np.bincount(center, minlength=n_sites)))
            raise StructureError(
                f"X[{index}] site {lonely} has no neighbour within {radius:.6g} Å, though "
                f"its own periodic image lies {cell.shortest:.6g} Å away: the lattice and "
                "the coordinates do not describe a periodic crystal."
            )
    if site_key is None:
        site_key = np.zeros(n_sites, dtype=np.int64)
    order = _neighbor_order(center, neighbor, image, distance, site_key, radius)
    center = center[order]
    first_of_center = np.searchsorted(center, np.arange(n_sites))
    kept = np.arange(len(center)) - first_of_center[center] < max_neighbors
    keep = order[kept]
    src, dst = center[kept], neighbor[keep]
    # in the searched cell (maybe the reduced one): its images are of its lattice
    vector = cell.coords[dst] + image[keep] @ cell.matrix - cell.coords[src]
    return (
        src.astype(np.int32),
        dst.astype(np.int32),
        distance[keep].astype(np.float32),
        vector.astype(np.float32),
    )


def check_elements(graphs: list[CrystalGraph], atom_features: AtomFeatureTable, first: int) -> None:
    """Raise for the first graph with an element the table has no row for.

    Checked once per chunk of graphs, not per structure: it is on the hot path.
    """
    z = np.concatenate([g.atomic_numbers for g in graphs])
    if not len(atom_features.missing(z)):
        return
    for i, graph in enumerate(graphs):
        missing = atom_features.missing(graph.atomic_numbers)
        if len(missing):
            names = ", ".join(f"{Element.from_Z(int(m)).symbol} (Z={m})" for m in missing)
            raise StructureError(
                f"X[{first + i}] has {names}, which the atom feature table "
                f"{atom_features.name!r} has no row for; pass atom_features with rows for them."
            )


def structure_to_graph(
    structure: IStructure,
    *,
    cutoff: float,
    max_neighbors: int,
    index: int = 0,
) -> CrystalGraph:
    """Build the crystal graph of one structure; ``index`` names it in errors.

    Raises
    ------
    skgnn.exceptions.StructureError
        For anything that keeps ``structure`` from being a crystal graph (see
        :mod:`skgnn.crystal` and :func:`nearest_neighbor_edges`).
    """
    atomic_numbers, occupancy, species_atom = site_species(structure, index)
    if len(atomic_numbers) == len(structure):  # ordered: one element a site
        main_element = atomic_numbers.astype(np.int64)
    else:
        main_element = np.zeros(len(structure), dtype=np.int64)
        np.maximum.at(main_element, species_atom, atomic_numbers)
    edge_src, edge_dst, edge_length, edge_vector = nearest_neighbor_edges(
        structure, cutoff, max_neighbors, index, site_key=main_element
    )
    return CrystalGraph(
        atomic_numbers=atomic_numbers,
        occupancy=occupancy,
        species_atom=species_atom,
        edge_src=edge_src,
        edge_dst=edge_dst,
        edge_length=edge_length,
        n_atoms=len(structure),
        edge_vector=edge_vector,
    )
