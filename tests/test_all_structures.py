import pytest

from benchmarks.common import DEFAULT_DATA_HOME
from benchmarks.featurize_all import transform_all


@pytest.mark.slow
def test_every_shared_structure_transforms():
    rows = transform_all(str(DEFAULT_DATA_HOME))
    counts = {row["set"]: row["structures"] for row in rows}
    assert counts == {
        "matbench_jdft2d": 636,
        "matbench_dielectric": 4764,
        "matbench_perovskites": 18928,
        "cgcnn-sample CIFs": 10,
    }
