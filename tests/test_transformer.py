import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Molecule, Structure
from sklearn.base import clone

from skgnn import CrystalGraphs, CrystalGraphTransformer
from skgnn.atom_features import cgcnn_atom_features
from skgnn.exceptions import StructureError

from .conftest import CGCNN_SAMPLE


def test_cscl_keeps_the_twelve_nearest_neighbours(cscl):
    graph = CrystalGraphTransformer(max_neighbors=12).fit_transform([cscl])[0]
    lengths = graph.edge_length[graph.edge_src == 0]
    assert len(lengths) == 12
    np.testing.assert_allclose(lengths[:8], 4.12 * np.sqrt(3) / 2, atol=1e-4)
    np.testing.assert_allclose(lengths[8:], 4.12, atol=1e-4)  # 4 of the 6 tied Cs images
    assert set(graph.edge_dst[graph.edge_src == 0][:8]) == {1}


def test_no_padding_when_few_neighbours_within_cutoff(cscl):
    graph = CrystalGraphTransformer(cutoff=3.7, max_neighbors=12).fit_transform([cscl])[0]
    assert np.bincount(graph.edge_src).tolist() == [8, 8]
    assert graph.edge_length.max() < 3.7


def test_isolated_atom_grows_the_cutoff_for_that_structure(cscl):
    graph = CrystalGraphTransformer(cutoff=1.0).fit_transform([cscl])[0]
    assert np.bincount(graph.edge_src, minlength=2).min() > 0
    np.testing.assert_allclose(graph.edge_length.min(), 4.12 * np.sqrt(3) / 2, atol=1e-4)


def test_one_atom_cell_links_to_its_own_images():
    cell = Structure(Lattice.cubic(3.0), ["Cu"], [[0, 0, 0]])
    graph = CrystalGraphTransformer().fit_transform([cell])[0]
    assert len(graph.edge_src) == 12
    assert set(graph.edge_dst) == {0}
    np.testing.assert_allclose(graph.edge_length[:6], 3.0, atol=1e-5)


def test_gaussian_settings_set_the_edge_features(cscl):
    graphs = CrystalGraphTransformer(cutoff=6.0, gaussian_step=0.5).fit_transform([cscl])
    assert graphs.n_edge_features == 13
    edge_fea = graphs.batch([0]).edge_fea
    assert edge_fea.shape == (graphs.n_edges[0], 13)
    assert float(edge_fea.max()) <= 1.0


def test_default_atom_features_are_92_one_hot_blocks():
    table = cgcnn_atom_features()
    assert table.n_features == 92
    assert table.covered[1:101].all() and not table.covered[0]
    # nine properties, one hot each
    np.testing.assert_array_equal(table.values[1:101].sum(axis=1), 9)


def test_container_is_compact_and_sliceable(jdft2d):
    structures, _ = jdft2d
    graphs = CrystalGraphTransformer().fit_transform(structures)
    assert len(graphs) == len(structures)
    per_edge = graphs.nbytes / graphs.edge_offsets[-1]
    # atoms, length and displacement vector (24 bytes), not 41 Gaussians (164 bytes) per edge
    assert per_edge < 36
    subset = graphs[np.array([5, 2, 7])]
    assert isinstance(subset, CrystalGraphs) and len(subset) == 3
    np.testing.assert_array_equal(subset[1].edge_length, graphs[2].edge_length)
    np.testing.assert_array_equal(graphs[10:13][0].atomic_numbers, graphs[10].atomic_numbers)
    mask = np.zeros(len(graphs), dtype=bool)
    mask[[3, 4]] = True
    np.testing.assert_array_equal(graphs[mask][1].edge_dst, graphs[4].edge_dst)
    joined = CrystalGraphs.concatenate([graphs[:4], graphs[4:]])
    np.testing.assert_array_equal(joined.edge_dst, graphs.edge_dst)


def test_batch_offsets_edges_and_assigns_atoms_to_graphs(cscl, perovskite):
    graphs = CrystalGraphTransformer().fit_transform([cscl, perovskite])
    batch = graphs.batch(np.array([1, 0]))
    assert len(batch) == 2
    assert batch.atom_fea.shape == (7, 92)
    assert batch.graph_index.tolist() == [0] * 5 + [1] * 2
    cscl_edges = batch.edge_index[:, graphs.n_edges[1] :]
    assert cscl_edges.min() == 5 and cscl_edges.max() == 6


def test_inputs_list_array_series_and_cif(cscl, tmp_path):
    import pandas as pd

    cif = cscl.to(fmt="cif")
    path = tmp_path / "cscl.cif"
    path.write_text(cif)
    transformer = CrystalGraphTransformer()
    expected = transformer.fit_transform([cscl])[0].edge_length
    array = np.empty(1, dtype=object)
    array[0] = cscl
    for X in ([cscl], array, pd.Series([cscl]), [cif], [str(path)], [path]):
        np.testing.assert_allclose(transformer.transform(X)[0].edge_length, expected, atol=1e-5)


def test_cgcnn_sample_cifs_load_from_paths_with_their_atom_init():
    paths = sorted(CGCNN_SAMPLE.glob("*.cif"))
    assert len(paths) == 10
    transformer = CrystalGraphTransformer(atom_features=CGCNN_SAMPLE / "atom_init.json")
    graphs = transformer.fit_transform([str(p) for p in paths])
    assert len(graphs) == 10 and graphs.n_atom_features == 92
    reference = json.loads((CGCNN_SAMPLE / "atom_init.json").read_text())
    first = graphs.batch([0]).atom_fea[0].numpy()
    np.testing.assert_allclose(first, reference[str(graphs[0].atomic_numbers[0])])


def test_atom_features_mapping_by_symbol(cscl):
    graphs = CrystalGraphTransformer(atom_features={"Cs": [1.0, 0.0], "Cl": [0.0, 2.0]})
    batch = graphs.fit_transform([cscl]).batch([0])
    assert batch.atom_fea.tolist() == [[1.0, 0.0], [0.0, 2.0]]


def test_disordered_site_gets_occupancy_weighted_features():
    alloy = Structure(Lattice.cubic(3.6), [{"Cu": 0.75, "Au": 0.25}], [[0, 0, 0]])
    graphs = CrystalGraphTransformer().fit_transform([alloy])
    table = cgcnn_atom_features().values
    np.testing.assert_allclose(
        graphs.batch([0]).atom_fea[0].numpy(), 0.75 * table[29] + 0.25 * table[79], atol=1e-6
    )


@pytest.mark.parametrize(
    "bad, match",
    [
        (42, r"X\[1\] is a int"),
        ("no/such/file.cif", r"X\[1\] = 'no/such/file.cif' is neither an existing file"),
        ("data_x\n_cell_length_a 3\nnonsense", r"X\[1\]: could not read CIF text"),
        (Molecule(["H", "H"], [[0, 0, 0], [0, 0, 0.74]]), r"X\[1\] is a pymatgen Molecule"),
        (
            Structure(Lattice.cubic(4), ["Na", "Na"], [[0, 0, 0], [0, 0, 0.01]]),
            r"X\[1\] has sites 0 and 1 only 0.040 Å apart",
        ),
        (
            Structure(Lattice.cubic(4), ["Na", "Cl", "Na"], [[0, 0, 0], [0.5] * 3, [0, 0, 0]]),
            r"X\[1\] has sites 0 and 2 only 0.000 Å apart",
        ),
        (
            Structure(Lattice.cubic(4), ["Og"], [[0, 0, 0]]),
            r"X\[1\] has Og \(Z=118\), which the atom",
        ),
    ],
    ids=[
        "not-a-structure",
        "missing-file",
        "bad-cif-text",
        "molecule",
        "overlap",
        "same-position",
        "unknown-element",
    ],
)
def test_bad_items_are_named_by_index(cscl, bad, match):
    with pytest.raises(StructureError, match=match):
        CrystalGraphTransformer().fit_transform([cscl, bad])


def test_empty_input_and_single_structure_are_refused(cscl):
    with pytest.raises(ValueError, match="X is empty"):
        CrystalGraphTransformer().fit_transform([])
    with pytest.raises(TypeError, match="Wrap one structure in a list"):
        CrystalGraphTransformer().fit_transform(cscl)


def test_invalid_parameter_is_named():
    with pytest.raises(ValueError, match="'cutoff' parameter of CrystalGraphTransformer"):
        CrystalGraphTransformer(cutoff=-1).fit()


def test_n_jobs_gives_the_same_graphs(jdft2d):
    structures, _ = jdft2d
    serial = CrystalGraphTransformer().fit_transform(structures[:40])
    parallel = CrystalGraphTransformer(n_jobs=2).fit_transform(structures[:40])
    np.testing.assert_array_equal(serial.edge_dst, parallel.edge_dst)
    np.testing.assert_array_equal(serial.edge_length, parallel.edge_length)


def test_verbose_shows_a_progress_bar(cscl, capsys):
    CrystalGraphTransformer(verbose=1).fit_transform([cscl])
    assert "crystal graphs" in capsys.readouterr().err


def test_clone_keeps_parameters():
    transformer = CrystalGraphTransformer(cutoff=5.0, max_neighbors=8)
    assert clone(transformer).get_params() == transformer.get_params()


def test_very_large_cell_gives_each_atom_the_unit_cell_neighbourhood(perovskite):
    big = perovskite * (4, 4, 4)  # 320 atoms
    small_graph, big_graph = CrystalGraphTransformer().fit_transform([perovskite, big])
    assert big_graph.n_atoms == 320
    assert np.bincount(big_graph.edge_src).tolist() == [12] * 320
    small = sorted(np.round(small_graph.edge_length, 4).tolist())
    assert sorted(np.round(big_graph.edge_length, 4).tolist()) == sorted(small * 64)
