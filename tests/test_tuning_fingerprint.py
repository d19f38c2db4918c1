"""What a persistent study records: data fingerprints and estimator descriptions."""

import numpy as np
import pandas as pd
import pytest
from pymatgen.core import Structure
from sklearn.base import clone
from sklearn.pipeline import make_pipeline

from skgnn import CGCNNRegressor, CrystalGraphTransformer
from skgnn.tuning import cgcnn_space, data_fingerprint
from skgnn.tuning.fingerprint import describe_cv, describe_estimator


@pytest.fixture(scope="module")
def structures(cscl, perovskite):
    return [cscl, perovskite]


def test_structures_hash_alike_in_any_container(structures):
    y = [1.0, 2.0]
    as_list = data_fingerprint(structures, y)
    assert data_fingerprint(pd.Series(structures, index=[7, 3]), np.array(y)) == as_list
    assert data_fingerprint(np.array(structures, dtype=object), [1, 2]) == as_list
    assert data_fingerprint([s.copy() for s in structures], y) == as_list  # content, not identity
    assert as_list["n_samples"] == 2 and len(as_list["X"]) == len(as_list["y"]) == 64


def test_a_moved_atom_or_another_order_changes_the_fingerprint(structures):
    y = [1.0, 2.0]
    reference = data_fingerprint(structures, y)["X"]
    moved = structures[1].copy()
    moved.translate_sites([0], [0.001, 0, 0])
    assert data_fingerprint([structures[0], moved], y)["X"] != reference
    assert data_fingerprint(structures[::-1], y)["X"] != reference
    strained = Structure(structures[0].lattice.matrix * 1.001, structures[0].species,
                         structures[0].frac_coords)  # fmt: skip
    assert data_fingerprint([strained, structures[1]], y)["X"] != reference


def test_targets_hash_by_value(structures):
    base = data_fingerprint(structures, [1.0, 2.0])
    assert data_fingerprint(structures, [1.0, 2.5])["y"] != base["y"]
    assert data_fingerprint(structures, [1.0, 2.5])["X"] == base["X"]
    labels = data_fingerprint(structures, ["metal", "insulator"])["y"]
    assert (
        labels == data_fingerprint(structures, np.array(["metal", "insulator"], dtype=object))["y"]
    )
    assert labels != data_fingerprint(structures, ["insulator", "metal"])["y"]


def test_crystal_graphs_hash_their_arrays_and_settings(structures):
    graphs = CrystalGraphTransformer().fit_transform(structures)
    y = [1.0, 2.0]
    reference = data_fingerprint(graphs, y)["X"]
    assert (
        data_fingerprint(CrystalGraphTransformer().fit_transform(structures), y)["X"] == reference
    )
    assert reference != data_fingerprint(structures, y)["X"]
    assert data_fingerprint(CrystalGraphTransformer(max_neighbors=6).fit_transform(structures),
                            y)["X"] != reference  # fmt: skip
    graphs.edge_length = graphs.edge_length.copy()
    graphs.edge_length[0] += 1e-4
    assert data_fingerprint(graphs, y)["X"] != reference


def test_cif_text_numeric_arrays_and_tables_hash_by_content(cscl):
    cif = cscl.to(fmt="cif")
    assert data_fingerprint([cif], [0.0])["X"] == data_fingerprint(pd.Series([cif]), [0.0])["X"]
    assert data_fingerprint([cif], [0.0])["X"] != data_fingerprint([cif + " "], [0.0])["X"]
    table = np.arange(6.0).reshape(3, 2)
    assert data_fingerprint(table, [0, 1, 2])["X"] == data_fingerprint(table.copy(), [0, 1, 2])["X"]
    assert data_fingerprint(table, [0, 1, 2])["X"] != data_fingerprint(table.T.copy().T + 1,
                                                                       [0, 1, 2])["X"]  # fmt: skip
    frame = pd.DataFrame(table, columns=["a", "b"])
    assert data_fingerprint(frame, [0, 1, 2])["X"] != data_fingerprint(
        frame.rename(columns={"b": "c"}), [0, 1, 2])["X"]  # fmt: skip


def test_estimator_description_leaves_out_the_space_and_what_follows_from_it():
    def pipe(**params):
        return make_pipeline(CrystalGraphTransformer(), CGCNNRegressor(**params))

    space = cgcnn_space()
    described = describe_estimator(pipe(max_epochs=50), space)
    assert "0x" not in str(described)  # no memory addresses: the same in every process
    assert described == describe_estimator(clone(pipe(max_epochs=50)), space)
    # max_epochs lies in the space; the scheduler's T_max follows from it and must not count
    assert describe_estimator(pipe(max_epochs=120), space) == described
    assert "cgcnnregressor__max_epochs" not in described["params"]
    other = describe_estimator(pipe(max_epochs=50, patience=5), space)["params"]
    assert (described["params"]["cgcnnregressor__patience"], other["cgcnnregressor__patience"]) == (
        "20", "5")  # fmt: skip
    assert described["params"]["cgcnnregressor__iterator_train__collate_fn"] == (
        "skgnn.dataset.pass_batch_through"
    )
    # how to compute, not what: left out
    assert describe_estimator(pipe(max_epochs=50, device="cuda"), space) == described


def test_cv_description_names_the_splitter_or_hashes_explicit_folds():
    y = np.arange(6.0)
    assert describe_cv(3, y, CGCNNRegressor()) == (
        "KFold(n_splits=3, random_state=None, shuffle=False), 3 splits"
    )
    folds = [([0, 1, 2], [3, 4, 5]), ([3, 4, 5], [0, 1, 2])]
    explicit = describe_cv(folds, y, CGCNNRegressor())
    assert explicit.startswith("explicit folds, 2 splits, sha256 ")
    assert describe_cv(folds[::-1], y, CGCNNRegressor()) != explicit
