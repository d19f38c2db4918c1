"""Physical invariances of the fitted model and of the graphs (hypothesis, >= 200 cases each)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymatgen.core import Lattice, Structure
from pymatgen.core.operations import SymmOp
from sklearn.pipeline import make_pipeline

from skgnn import CrystalGraphTransformer

from .conftest import tiny_regressor

CASES = settings(
    max_examples=200,
    deadline=None,
    derandomize=True,  # the same 200 cases on every run and machine
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
ELEMENTS = ["Li", "O", "Si", "Ti", "Fe", "Ba", "Se", "Cl"]
RELATIVE_TOLERANCE = 1e-5


@st.composite
def random_crystals(draw) -> Structure:
    lengths = draw(st.lists(st.floats(3.0, 7.0), min_size=3, max_size=3))
    angles = draw(st.lists(st.floats(75.0, 105.0), min_size=3, max_size=3))
    n_sites = draw(st.integers(1, 5))
    species = draw(st.lists(st.sampled_from(ELEMENTS), min_size=n_sites, max_size=n_sites))
    coords = draw(
        st.lists(
            st.lists(st.floats(0.0, 0.999), min_size=3, max_size=3),
            min_size=n_sites,
            max_size=n_sites,
        )
    )
    structure = Structure(Lattice.from_parameters(*lengths, *angles), species, coords)
    distances = structure.distance_matrix[np.triu_indices(n_sites, 1)]
    if len(distances) and distances.min() < 1.0:  # overlapping atoms are refused, not graphed
        structure = Structure(structure.lattice, species[:1], coords[:1])
    return structure


@pytest.fixture(scope="module")
def model(jdft2d):
    structures, y = jdft2d
    return make_pipeline(CrystalGraphTransformer(), tiny_regressor(max_epochs=5)).fit(structures, y)


@pytest.fixture(scope="module")
def real_structures(jdft2d):
    structures, _ = jdft2d
    return [s for s in structures if len(s) <= 12][:40]


def crystals(real_structures):
    return st.one_of(random_crystals(), st.sampled_from(real_structures))


def assert_same_prediction(model, structure, transformed):
    before, after = model.predict([structure, transformed])
    assert abs(after - before) <= RELATIVE_TOLERANCE * max(1.0, abs(before)), (before, after)


def permuted(structure: Structure, seed: int) -> Structure:
    order = np.random.default_rng(seed).permutation(len(structure))
    return Structure.from_sites([structure[i] for i in order])


def rotated(structure: Structure, angle: float, axis) -> Structure:
    rotation = SymmOp.from_axis_angle_and_translation(axis, angle)
    matrix = rotation.rotation_matrix @ structure.lattice.matrix.T
    return Structure(Lattice(matrix.T), structure.species_and_occu, structure.frac_coords)


def translated(structure: Structure, shift) -> Structure:
    moved = structure.copy()
    moved.translate_sites(range(len(moved)), shift, frac_coords=True, to_unit_cell=True)
    return moved


def check_invariances(model, real_structures, cases) -> None:
    """The same prediction after a site permutation, a rotation, a translation, a supercell."""

    @cases
    @given(crystals(real_structures), st.integers(0, 10_000))
    def check_permutation(structure, seed):
        assert_same_prediction(model, structure, permuted(structure, seed))

    @cases
    @given(
        crystals(real_structures),
        st.floats(0, 360),
        st.sampled_from([(0, 0, 1), (1, 1, 0), (1, 2, 3)]),
    )
    def check_rotation(structure, angle, axis):
        assert_same_prediction(model, structure, rotated(structure, angle, axis))

    @cases
    @given(crystals(real_structures), st.lists(st.floats(-1, 1), min_size=3, max_size=3))
    def check_translation(structure, shift):
        assert_same_prediction(model, structure, translated(structure, shift))

    @cases
    @given(crystals(real_structures), st.sampled_from([(2, 1, 1), (1, 2, 1), (1, 1, 2)]))
    def check_supercell(structure, scaling):
        assert_same_prediction(model, structure, structure * scaling)

    for check in (check_permutation, check_rotation, check_translation, check_supercell):
        check()


def test_permutation_rotation_translation_supercell(model, real_structures):
    check_invariances(model, real_structures, CASES)


def neighbour_signature(structure: Structure, atom: int, graph) -> list:
    """What atom ``atom`` sees: sorted (distance, neighbour element) pairs."""
    mask = graph.edge_src == atom
    z = np.array(structure.atomic_numbers)[graph.edge_dst[mask]]
    return sorted(zip(np.round(graph.edge_length[mask], 4).tolist(), z.tolist(), strict=True))


def test_permuted_structure_gives_the_same_graph_up_to_relabelling(real_structures):
    transformer = CrystalGraphTransformer()

    @CASES
    @given(crystals(real_structures), st.integers(0, 10_000))
    def check(structure, seed):
        order = np.random.default_rng(seed).permutation(len(structure))
        shuffled = Structure.from_sites([structure[i] for i in order])
        original, relabelled = transformer.transform([structure, shuffled])
        for new_index, old_index in enumerate(order):
            assert neighbour_signature(shuffled, new_index, relabelled) == neighbour_signature(
                structure, old_index, original
            )

    check()
