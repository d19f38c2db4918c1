"""MessageNet's physical invariances: the hypothesis properties of test_invariance.py."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.pipeline import make_pipeline

from skgnn import CrystalGraphTransformer

from .conftest import tiny_regressor
from .test_invariance import (
    CASES,
    assert_same_prediction,
    crystals,
    permuted,
    real_structures,  # noqa: F401 (a fixture)
    rotated,
    translated,
)

# fewer cases than the CGCNN's 200, on one network, in the default run; -m slow runs 200 on three
FEW = settings(CASES, max_examples=25)


@pytest.fixture(scope="module")
def message_model(request, jdft2d):
    structures, y = jdft2d
    basis, aggregation, *rest = request.param.split("-")
    net = tiny_regressor(
        module="message", module__edge_width=16, module__edge_basis=basis,
        module__aggregation=aggregation, module__pool_layers=(rest or ["last"])[0],
        module__three_body="angles" in rest, max_epochs=5,
    )  # fmt: skip
    return make_pipeline(CrystalGraphTransformer(max_neighbors=24), net).fit(structures, y)


def _check_all(model, real_structures, cases):  # noqa: F811
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


@pytest.mark.parametrize("message_model", ["radial-sum-all"], indirect=True)
def test_permutation_rotation_translation_supercell(message_model, real_structures):  # noqa: F811
    _check_all(message_model, real_structures, FEW)


@pytest.mark.parametrize("message_model", ["radial-sum-all-angles"], indirect=True)
def test_three_body_permutation_rotation_translation_supercell(message_model, real_structures):  # noqa: F811
    _check_all(message_model, real_structures, FEW)


@pytest.mark.slow
@pytest.mark.parametrize(
    "message_model",
    ["gaussian-sum", "radial-mean-all", "radial-sum-all", "gaussian-sum-last-angles"],
    indirect=True,
)
def test_permutation_rotation_translation_supercell_200_cases(
    message_model,
    real_structures,  # noqa: F811
):
    _check_all(message_model, real_structures, CASES)
