"""Shared fixtures: tiny crystals built in code, and the shared Matbench data."""

from pathlib import Path

import numpy as np
import pytest
import torch
from pymatgen.core import Lattice, Structure

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
MATBENCH = SHARED / "matbench"
CGCNN_SAMPLE = SHARED / "cgcnn-sample"


@pytest.fixture(autouse=True)
def _seed():
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def cscl() -> Structure:
    """Caesium chloride: 8 Cl at a√3/2 = 3.568 Å around Cs, then 6 Cs at a = 4.12 Å."""
    return Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


@pytest.fixture(scope="session")
def perovskite() -> Structure:
    return Structure(
        Lattice.cubic(3.9),
        ["Sr", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )


@pytest.fixture(scope="session")
def jdft2d():
    """The first 120 rows of matbench_jdft2d: (structures, exfoliation energies)."""
    from matminer.datasets import load_dataset

    df = load_dataset("matbench_jdft2d", data_home=str(MATBENCH))
    return df["structure"].iloc[:120].reset_index(drop=True), df["exfoliation_en"].to_numpy()[:120]


@pytest.fixture(scope="session")
def jdft2d_graphs(jdft2d):
    from skgnn import CrystalGraphTransformer

    structures, y = jdft2d
    return CrystalGraphTransformer().fit_transform(structures), y


def tiny_regressor(**params):
    """A CGCNNRegressor small and short enough for unit tests."""
    from skgnn import CGCNNRegressor

    defaults = dict(
        max_epochs=3,
        batch_size=32,
        module__atom_fea_len=16,
        module__h_fea_len=16,
        module__n_conv=2,
        random_state=0,
    )
    return CGCNNRegressor(**{**defaults, **params})
