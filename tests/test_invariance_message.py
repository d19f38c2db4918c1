"""MessageNet's physical invariances: the hypothesis properties of test_invariance.py."""

import pytest
from hypothesis import settings
from sklearn.pipeline import make_pipeline

from skgnn import CrystalGraphTransformer

from .conftest import tiny_regressor
from .test_invariance import (
    CASES,
    check_invariances,
    real_structures,  # noqa: F401 (a fixture)
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


@pytest.mark.parametrize("message_model", ["radial-sum-all"], indirect=True)
def test_permutation_rotation_translation_supercell(message_model, real_structures):  # noqa: F811
    check_invariances(message_model, real_structures, FEW)


@pytest.mark.parametrize("message_model", ["radial-sum-all-angles"], indirect=True)
def test_three_body_permutation_rotation_translation_supercell(message_model, real_structures):  # noqa: F811
    check_invariances(message_model, real_structures, FEW)


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
    check_invariances(message_model, real_structures, CASES)
