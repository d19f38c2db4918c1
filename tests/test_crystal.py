"""Structures that cannot be crystals are refused fast, by index and by what is wrong.

Each case runs in a forked child with a deadline (tests/bounded.py): NaN or
infinite lattices and coordinates used to hang the neighbour search forever.
"""

import numpy as np
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st
from pymatgen.core import Composition, DummySpecies, Lattice, Species, Structure

from skgnn import CrystalGraphTransformer
from skgnn.crystal import MIN_VOLUME_PER_SITE, check_crystal, periodic_cell
from skgnn.exceptions import StructureError

from .bounded import assert_refused, transform_bounded

CUBIC = Lattice.cubic(4.0)


def _lattice(rows, pbc=(True, True, True)):
    return Lattice(np.array(rows, dtype=float), pbc=pbc)


def _nacl(lattice=CUBIC, coords=((0, 0, 0), (0.5, 0.5, 0.5)), **kwargs):
    return Structure(lattice, ["Na", "Cl"], [list(c) for c in coords], **kwargs)


def _with_species(composition):
    """A one-site structure whose site holds ``composition``, as pymatgen would refuse to build."""
    structure = Structure(CUBIC, ["Na"], [[0, 0, 0]])
    structure[0]._species = composition  # the setter checks; users can still get here
    return structure


NAN, INF = float("nan"), float("inf")

REFUSED = {
    "nan-lattice": (
        _nacl(_lattice([[NAN, 0, 0], [0, 4, 0], [0, 0, 4]])),
        r"X\[1\] has a lattice with entries that are NaN or infinite",
    ),
    "inf-lattice": (
        _nacl(_lattice([[4, 0, 0], [0, INF, 0], [0, 0, 4]])),
        r"X\[1\] has a lattice with entries that are NaN or infinite",
    ),
    "overflowing-lattice": (
        _nacl(Lattice.cubic(1e120)),
        r"X\[1\] has a lattice with entries so large that its volume overflows",
    ),
    "nan-fractional-coordinate": (
        _nacl(coords=((0, 0, 0), (NAN, 0.5, 0.5))),
        r"X\[1\] has 1 site\(s\) with coordinates that are NaN or infinite, the first site 1",
    ),
    "inf-fractional-coordinate": (
        _nacl(coords=((0, 0, 0), (0.5, INF, 0.5))),
        r"X\[1\] has 1 site\(s\) with coordinates that are NaN or infinite",
    ),
    "nan-cartesian-coordinate": (
        _nacl(coords=((0, 0, 0), (2, 2, NAN)), coords_are_cartesian=True),
        r"X\[1\] has 1 site\(s\) with coordinates that are NaN or infinite",
    ),
    "zero-volume-lattice": (
        _nacl(_lattice([[4, 0, 0], [0, 4, 0], [4, 4, 0]])),
        r"X\[1\] packs 2 site\(s\) into a cell of 0 Å³",
    ),
    "flat-lattice": (  # volume > 0 but planes 1e-4 Å apart: used to hang
        _nacl(_lattice([[4, 0, 0], [0, 4, 0], [4, 4, 1e-4]])),
        r"X\[1\] packs 2 site\(s\) into a cell of 0.0016 Å³",
    ),
    "slab-pbc": (
        _nacl(Lattice(CUBIC.matrix, pbc=(True, True, False))),
        r"X\[1\] is periodic only along a and b .*need periodicity in all three directions",
    ),
    "dummy-species": (
        Structure(CUBIC, [DummySpecies("X", 0)], [[0, 0, 0]]),
        r"X\[1\] site 0 holds X0\+ \(DummySpecies\), which is not a chemical element",
    ),
    "dummy-species-by-symbol": (
        Structure(CUBIC, ["Na", "Xa"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        r"X\[1\] site 1 holds Xa0\+ \(DummySpecies\)",
    ),
    "dummy-species-in-disorder": (
        Structure(CUBIC, [{"Na": 0.5, DummySpecies("X", 0): 0.5}], [[0, 0, 0]]),
        r"X\[1\] site 0 holds X0\+ \(DummySpecies\)",
    ),
    "zero-occupancy": (
        Structure(CUBIC, ["Na", {"Cl": 0.0}], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        r"X\[1\] site 1 holds no species",
    ),
    "nan-occupancy": (
        Structure(CUBIC, [{"Na": NAN}], [[0, 0, 0]]),
        r"X\[1\] site 0 holds no species",
    ),
    "negative-occupancy": (
        _with_species(Composition({"Na": -1.0}, allow_negative=True)),
        r"X\[1\] site 0 has occupancy -1.0 of Na; occupancies must be numbers in \(0, 1\]",
    ),
    "occupancies-above-one": (
        _with_species(Composition({"Na": 0.7, "K": 0.6})),
        r"X\[1\] site 0 has occupancies summing to 1.3 > 1",
    ),
    "empty": (Structure(CUBIC, [], []), r"X\[1\] is a structure with no sites"),
    "needle-lattice": (  # sites 1e149 Å apart along c; pymatgen's LLL reduction overflows
        _nacl(_lattice([[4, 0, 0], [0, 4, 0], [0, 0, 1e150]]), coords=((0, 0, 0.1), (0, 0, 0.2))),
        r"X\[1\]: a periodic neighbour search within 8 Å would visit",
    ),
    "vast-sparse-cell": (  # 0.87 µm between the atoms; asked for 53 GB before
        _nacl(Lattice.cubic(1e4)),
        r"X\[1\]: a periodic neighbour search within 8 Å would visit .* cubes",
    ),
}


@pytest.mark.parametrize("bad, match", REFUSED.values(), ids=REFUSED.keys())
def test_structure_that_is_no_crystal_is_refused_by_index(cscl, bad, match):
    assert_refused([cscl, bad], match)


# refused by the search's size limits, not by check_crystal
NOT_CRYSTALS = {k: v for k, v in REFUSED.items() if k not in ("vast-sparse-cell", "needle-lattice")}


@pytest.mark.parametrize("bad, match", NOT_CRYSTALS.values(), ids=NOT_CRYSTALS.keys())
def test_tabular_line_refuses_the_same_structures(bad, match):
    from skgnn.structures import to_structures

    with pytest.raises(StructureError, match=match.replace(r"X\[1\]", r"X\[0\]")):
        to_structures([bad])


def test_refusal_happens_before_any_neighbour_search(monkeypatch, cscl):
    def search(*args, **kwargs):
        raise AssertionError("searched a structure that should have been refused")

    monkeypatch.setattr("skgnn.neighbors.find_points_in_spheres", search)
    for name in ("nan-lattice", "nan-fractional-coordinate", "flat-lattice", "slab-pbc"):
        with pytest.raises(StructureError):
            CrystalGraphTransformer().fit_transform([REFUSED[name][0]])


def _same_graphs(a, b):
    (src_a, dst_a, len_a), (src_b, dst_b, len_b) = a, b
    np.testing.assert_array_equal(src_a, src_b)
    np.testing.assert_array_equal(dst_a, dst_b)
    np.testing.assert_allclose(len_a, len_b, atol=1e-4)


def test_extremely_skewed_basis_gives_the_graph_of_its_reduced_cell(cscl):
    # the same lattice as cscl's, c replaced by c + 1e8 a: the search used to visit ~1e9 images
    a, _, c = cscl.lattice.matrix
    skewed = Structure(
        Lattice([a, cscl.lattice.matrix[1], c + 1e8 * a]),
        cscl.species,
        cscl.cart_coords,
        coords_are_cartesian=True,
    )
    kind, graphs = transform_bounded([cscl, skewed])
    assert kind == "ok", graphs
    _same_graphs(*graphs)


def test_coordinates_many_cells_away_give_the_graph_of_the_wrapped_cell(cscl):
    far = Structure(cscl.lattice, cscl.species, [[0, 0, 0], [0.5 + 1e9, 0.5, 0.5 - 1e6]])
    kind, graphs = transform_bounded([cscl, far])
    assert kind == "ok", graphs
    _same_graphs(*graphs)


def test_left_handed_basis_gives_the_same_graph(cscl):
    mirrored = Structure(
        Lattice(cscl.lattice.matrix * [[-1], [1], [1]]), cscl.species, [[0, 0, 0], [0.5] * 3]
    )
    graphs = CrystalGraphTransformer().fit_transform([cscl, mirrored])
    np.testing.assert_array_equal(graphs[0].edge_dst, graphs[1].edge_dst)
    np.testing.assert_allclose(graphs[0].edge_length, graphs[1].edge_length, atol=1e-5)


def test_ionic_species_count_as_their_element(cscl):
    ions = Structure(cscl.lattice, [Species("Cs", 1), Species("Cl", -1)], cscl.frac_coords)
    graphs = CrystalGraphTransformer().fit_transform([cscl, ions])
    np.testing.assert_array_equal(graphs[1].atomic_numbers, [55, 17])
    np.testing.assert_array_equal(graphs[0].edge_dst, graphs[1].edge_dst)


def test_growth_of_the_radius_stops_at_the_shortest_lattice_vector():
    # one atom in a 1 µm cell: its only neighbours are its own images, 1e4 Å away
    lone = Structure(Lattice.cubic(1e4), ["Na"], [[0, 0, 0]])
    kind, graphs = transform_bounded([lone])
    assert kind == "ok", graphs
    (src, dst, length) = graphs[0]
    assert len(src) == 6 and set(dst) == {0}
    np.testing.assert_allclose(length, 1e4, rtol=1e-6)


def test_cell_just_roomy_enough_is_accepted():
    # fcc at the closest spacing the overlap check allows: exactly the volume bound
    d = 0.5 * (1 + 1e-9)
    fcc = Structure(
        Lattice.cubic(d * np.sqrt(2)),
        ["Cu"] * 4,
        [[0, 0, 0], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    cell = periodic_cell(fcc, 0)
    assert cell.volume / 4 == pytest.approx(MIN_VOLUME_PER_SITE, rel=1e-8)
    check_crystal(fcc, 0)


def test_pile_of_coincident_sites_is_refused_before_listing_all_pairs():
    # 3,000 sites on one point: the search listed 9 million pairs (1.3 GB, 5 s) to say so
    pile = Structure(Lattice.cubic(100.0), ["Na"] * 3000, np.full((3000, 3), 0.5))
    assert_refused([pile], r"X\[0\] has sites 0 and 1 only 0.000 Å apart")


def test_large_structure_without_overlaps_passes_the_pile_check(perovskite):
    big = perovskite * (4, 4, 4)  # 320 sites, above the size at which piles are looked for
    check_crystal(big, 0)


WILD = st.one_of(
    st.sampled_from([0.0, -0.0, 1e-300, 1e-8, 0.3, -4.0, 1e4, 1e8, 1e150, 1e300, NAN, INF, -INF]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SPECIES = st.sampled_from(
    ["Na", "Cl", "O", "Fe", "Xa", Species("Fe", 2), {"Na": 0.5}, {"Na": 0.5, "K": 0.5}, {"Na": 0.0}]
)


@st.composite
def wild_structures(draw):
    """Mostly sane small cells with one or two numbers, a species or the periodicity gone wrong."""
    matrix = np.diag([draw(st.floats(2.5, 8.0)) for _ in range(3)])
    n_sites = draw(st.integers(1, 5))
    coords = np.array([[draw(st.floats(0, 1)) for _ in range(3)] for _ in range(n_sites)])
    for _ in range(draw(st.integers(0, 2))):
        if draw(st.booleans()):
            matrix[draw(st.integers(0, 2)), draw(st.integers(0, 2))] = draw(WILD)
        else:
            coords[draw(st.integers(0, n_sites - 1)), draw(st.integers(0, 2))] = draw(WILD)
    species = [draw(SPECIES) for _ in range(n_sites)]
    pbc = draw(st.sampled_from([(True, True, True)] * 3 + [(True, True, False)]))
    try:
        return Structure(Lattice(matrix, pbc=pbc), species, coords)
    except Exception:  # pymatgen refused to build it: nothing for us to check
        reject()


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(wild_structures())
def test_any_structure_gives_a_graph_or_a_structure_error_in_bounded_time(structure):
    kind, result = transform_bounded([structure])
    assert kind in ("ok", "StructureError"), (kind, result)
    if kind == "ok":
        ((src, dst, length),) = result
        assert np.bincount(src, minlength=len(structure)).min() > 0
        assert np.isfinite(length).all() and length.min() >= 0.5
