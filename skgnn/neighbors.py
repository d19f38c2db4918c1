"""From one periodic structure to one crystal graph: sites, species and nearest neighbours."""

from __future__ import annotations

import numpy as np
from pymatgen.core import Element, Structure
from pymatgen.optimization.neighbors import find_points_in_spheres

from .atom_features import AtomFeatureTable
from .exceptions import StructureError
from .graphs import CrystalGraph
from .structures import cell_volume

#: Sites closer than this (Å) are taken for a duplicated or overlapping atom.
MIN_INTERATOMIC_DISTANCE = 0.5

#: Factor by which the cutoff grows, for one structure, while any atom has no neighbour.
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


def _species(structure: Structure) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Atomic numbers, occupancies and owning site of every species on every site."""
    try:
        z = np.array(structure.atomic_numbers, dtype=np.int16)
        return z, np.ones(len(z), dtype=np.float32), np.arange(len(z), dtype=np.int32)
    except AttributeError:  # a disordered site has no single element
        pass
    z, occupancy, owner = [], [], []
    for i, site in enumerate(structure):
        for species, amount in site.species.items():
            z.append(getattr(species, "Z", 0))
            occupancy.append(amount)
            owner.append(i)
    return (
        np.array(z, dtype=np.int16),
        np.array(occupancy, dtype=np.float32),
        np.array(owner, dtype=np.int32),
    )


def _neighbor_list(structure: Structure, cutoff: float, index: int):
    # pymatgen's compiled search, called directly: Structure.get_neighbor_list
    # adds per-site Python work that costs as much as the search on small cells
    coords = np.ascontiguousarray(structure.cart_coords, dtype=float)
    center, neighbor, image, distance = find_points_in_spheres(
        coords,
        coords,
        r=cutoff,
        pbc=np.ascontiguousarray(structure.pbc, dtype=np.int64),
        lattice=np.ascontiguousarray(structure.lattice.matrix, dtype=float),
        tol=1e-8,
    )
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
        raise StructureError(
            f"X[{index}] has sites {center[k]} and {neighbor[k]} only {distance[k]:.3f} Å apart "
            f"(less than {MIN_INTERATOMIC_DISTANCE} Å): overlapping atoms, usually a site "
            "listed twice. Remove the duplicate, e.g. with structure.merge_sites(mode='delete')."
        )
    return center, neighbor, image, distance


def _radius_for(max_neighbors: int, structure: Structure) -> float:
    """A radius likely to hold ``max_neighbors`` neighbours of every atom.

    Searching the full cutoff finds ~150 neighbours an atom in a dense solid
    to keep 12; starting from the radius of a sphere holding
    ``max_neighbors + 1`` atoms at the cell's mean density (with a margin)
    makes the search and the sort several times cheaper.
    """
    volume_per_atom = cell_volume(structure) / len(structure)
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
    structure: Structure,
    cutoff: float,
    max_neighbors: int,
    index: int = 0,
    site_key: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges from each atom to its ``max_neighbors`` nearest neighbours within ``cutoff``.

    Neighbours are the periodic images found by pymatgen's compiled
    ``get_neighbor_list``. Ties in distance are broken by ``site_key`` of the
    neighbour (its atomic number), then by site index and image, so the
    result is deterministic; it can depend on the order of the sites only
    when two different sites of the same element tie at the truncation
    distance. If some
    atom has no neighbour within ``cutoff``, the cutoff of this structure grows
    by :data:`CUTOFF_GROWTH` until every atom has one (as ALIGNN does).

    Returns
    -------
    edge_src, edge_dst : ndarray of int32
        Centre and neighbour site of each edge, sorted by centre, then distance.
    edge_length : ndarray of float32
        Edge lengths in Å.
    """
    n_sites = len(structure)
    radius = min(cutoff, _radius_for(max_neighbors, structure))
    while True:
        center, neighbor, image, distance = _neighbor_list(structure, radius, index)
        if radius < cutoff:
            # every atom has its max_neighbors nearest strictly inside: same as searching cutoff
            inside = center[distance < radius - _RADIUS_MARGIN]
            if np.bincount(inside, minlength=n_sites).min() >= max_neighbors:
                break
            radius = min(cutoff, radius * CUTOFF_GROWTH)
        elif np.bincount(center, minlength=n_sites).min() > 0:
            break
        else:
            radius *= CUTOFF_GROWTH
    if site_key is None:
        site_key = np.zeros(n_sites, dtype=np.int64)
    order = _neighbor_order(center, neighbor, image, distance, site_key, radius)
    center = center[order]
    first_of_center = np.searchsorted(center, np.arange(n_sites))
    kept = np.arange(len(center)) - first_of_center[center] < max_neighbors
    keep = order[kept]
    return (
        center[kept].astype(np.int32),
        neighbor[keep].astype(np.int32),
        distance[keep].astype(np.float32),
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
    structure: Structure,
    *,
    cutoff: float,
    max_neighbors: int,
    index: int = 0,
) -> CrystalGraph:
    """Build the crystal graph of one structure; ``index`` names it in errors."""
    atomic_numbers, occupancy, species_atom = _species(structure)
    if len(atomic_numbers) == len(structure):  # ordered: one element a site
        main_element = atomic_numbers.astype(np.int64)
    else:
        main_element = np.zeros(len(structure), dtype=np.int64)
        np.maximum.at(main_element, species_atom, atomic_numbers)
    edge_src, edge_dst, edge_length = nearest_neighbor_edges(
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
    )
