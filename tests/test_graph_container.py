"""CrystalGraphs and GraphBatch against hand-worked graphs: offsets, indexing, batches."""

import dataclasses

import numpy as np
import pytest
import torch

from skgnn.graphs import CrystalGraph, CrystalGraphs, GraphBatch, _offsets, _ragged_indices

# atomic number z has the features [z, 10 z, 100 z]; row 0 is unused
TABLE = np.array([[0, 0, 0], [1, 10, 100], [2, 20, 200], [3, 30, 300]], dtype=np.float32)
CENTERS = np.array([0.0, 1.0, 2.0], dtype=np.float32)


def graph(z, occupancy, species_atom, src, dst, length, n_atoms):
    return CrystalGraph(
        atomic_numbers=np.array(z, dtype=np.int16),
        occupancy=np.array(occupancy, dtype=np.float32),
        species_atom=np.array(species_atom, dtype=np.int32),
        edge_src=np.array(src, dtype=np.int32),
        edge_dst=np.array(dst, dtype=np.int32),
        edge_length=np.array(length, dtype=np.float32),
        n_atoms=n_atoms,
    )


# graph 0: atom 0 is H, atom 1 a 50/50 He/Li site; graph 1: one Li; graph 2: H, He, Li
G0 = graph([1, 2, 3], [1.0, 0.5, 0.5], [0, 1, 1], [0, 1, 0], [1, 0, 0], [1.0, 1.0, 2.0], 2)
G1 = graph([3], [1.0], [0], [0], [0], [1.5], 1)
G2 = graph([1, 2, 3], [1, 1, 1], [0, 1, 2], [0, 1, 2, 2], [1, 2, 0, 1], [1.1, 1.2, 1.3, 1.4], 3)
SETTINGS = dict(
    atom_feature_values=TABLE,
    gaussian_centers=CENTERS,
    gaussian_width=0.5,
    cutoff=3.0,
    max_neighbors=12,
)


@pytest.fixture
def graphs():
    return CrystalGraphs.from_graphs([G0, G1, G2], **SETTINGS)


def assert_same_graph(a: CrystalGraph, b: CrystalGraph):
    assert a.n_atoms == b.n_atoms
    for name in ("atomic_numbers", "occupancy", "species_atom", "edge_src", "edge_dst",
                 "edge_length"):  # fmt: skip
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_offsets_and_ragged_indices_by_hand():
    np.testing.assert_array_equal(_offsets(np.array([2, 0, 3])), [0, 2, 2, 5])
    offsets = np.array([0, 2, 2, 5])
    flat, counts = _ragged_indices(offsets, np.array([2, 0]))
    np.testing.assert_array_equal(flat, [2, 3, 4, 0, 1])
    np.testing.assert_array_equal(counts, [3, 2])
    flat, counts = _ragged_indices(offsets, np.array([], dtype=np.int64))
    assert flat.shape == (0,) and counts.shape == (0,)


def test_from_graphs_concatenates_with_offsets(graphs):
    np.testing.assert_array_equal(graphs.atom_offsets, [0, 2, 3, 6])
    np.testing.assert_array_equal(graphs.species_offsets, [0, 3, 4, 7])
    np.testing.assert_array_equal(graphs.edge_offsets, [0, 3, 4, 8])
    np.testing.assert_array_equal(graphs.atomic_numbers, [1, 2, 3, 3, 1, 2, 3])
    np.testing.assert_array_equal(graphs.occupancy, [1, 0.5, 0.5, 1, 1, 1, 1])
    np.testing.assert_array_equal(graphs.species_atom, [0, 1, 1, 0, 0, 1, 2])
    np.testing.assert_array_equal(graphs.edge_src, [0, 1, 0, 0, 0, 1, 2, 2])
    np.testing.assert_array_equal(graphs.edge_dst, [1, 0, 0, 0, 1, 2, 0, 1])
    np.testing.assert_allclose(graphs.edge_length, [1, 1, 2, 1.5, 1.1, 1.2, 1.3, 1.4])
    assert graphs.gaussian_width == 0.5 and graphs.cutoff == 3.0 and graphs.max_neighbors == 12


def test_sizes_and_counts(graphs):
    assert len(graphs) == 3
    assert graphs.shape == (3,)
    assert graphs.n_atom_features == 3
    assert graphs.n_edge_features == 3
    np.testing.assert_array_equal(graphs.n_atoms, [2, 1, 3])
    np.testing.assert_array_equal(graphs.n_edges, [3, 1, 4])


def test_nbytes_and_repr(graphs):
    # offsets 3 * 4 * 8; z 7 * 2; occupancy 7 * 4; species_atom 7 * 4; edges 8 * (4 + 4 + 4);
    # table 12 * 4; centres 3 * 4; width, cutoff (float64) and max_neighbors (int64) 8 each
    expected = 96 + 14 + 28 + 28 + 96 + 48 + 12 + 24
    assert graphs.nbytes == expected
    assert (
        repr(graphs) == f"CrystalGraphs(n_graphs=3, n_atoms=6, n_edges=8, {expected / 1e6:.1f} MB)"
    )


def test_integer_index_gives_the_single_graph(graphs):
    for i, expected in enumerate([G0, G1, G2]):
        assert_same_graph(graphs[i], expected)
        assert_same_graph(graphs[np.int64(i)], expected)
    assert_same_graph(graphs[-1], G2)
    assert_same_graph(graphs[-3], G0)


@pytest.mark.parametrize(
    "key, rows",
    [
        (slice(1, None), [1, 2]),
        (slice(None, None, -1), [2, 1, 0]),
        ([2, 0], [2, 0]),
        (np.array([-1, 1]), [2, 1]),
        (np.array([True, False, True]), [0, 2]),
        (([1, 2], slice(None)), [1, 2]),
        ([0, 0], [0, 0]),
    ],
    ids=["slice", "reversed", "list", "negative", "mask", "tuple", "repeated"],
)
def test_array_index_gives_the_chosen_graphs(graphs, key, rows):
    part = graphs[key]
    assert isinstance(part, CrystalGraphs)
    assert len(part) == len(rows)
    originals = [G0, G1, G2]
    for i, row in enumerate(rows):
        assert_same_graph(part[i], originals[row])
    assert part.same_settings(graphs)
    assert part.gaussian_width == 0.5 and part.cutoff == 3.0 and part.max_neighbors == 12
    assert part.atom_feature_values is TABLE and part.gaussian_centers is CENTERS


def test_empty_index_gives_no_graphs(graphs):
    for key in ([], np.array([], dtype=np.int64), slice(0, 0)):
        part = graphs[key]
        assert len(part) == 0
        assert part.atomic_numbers.shape == (0,) and part.edge_src.shape == (0,)
        np.testing.assert_array_equal(part.atom_offsets, [0])


@pytest.mark.parametrize(
    "key, message",
    [
        (3, "Graph index out of range for 3 graphs."),
        (-4, "Graph index out of range for 3 graphs."),
        ([0, 3], "Graph index out of range for 3 graphs."),
        ([-4], "Graph index out of range for 3 graphs."),
        (np.array([True, False]), "Boolean index of length 2 for 3 graphs."),
        (np.array([0.5]), "Cannot index CrystalGraphs with float64 values."),
    ],
)
def test_bad_index_is_refused(graphs, key, message):
    with pytest.raises(IndexError) as info:
        graphs[key]
    assert str(info.value) == message


def test_one_graph_container_takes_negative_indices():
    one = CrystalGraphs.from_graphs([G1], **SETTINGS)
    assert_same_graph(one[-1], G1)
    assert_same_graph(one[[-1, 0]][0], G1)
    assert_same_graph(one[[-1, 0]][1], G1)


def test_a_single_graph_is_immutable(graphs):
    with pytest.raises(dataclasses.FrozenInstanceError):
        graphs[0].n_atoms = 5


def test_repr_in_megabytes():
    big = CrystalGraphs.from_graphs(
        [G0], **{**SETTINGS, "atom_feature_values": np.zeros((100_000, 3), np.float32)}
    )
    assert repr(big) == "CrystalGraphs(n_graphs=1, n_atoms=2, n_edges=3, 1.2 MB)"


def test_index_edges_are_accepted(graphs):
    assert_same_graph(graphs[[2]][0], G2)
    assert_same_graph(graphs[[-3]][0], G0)


def test_concatenate_joins_in_order(graphs):
    joined = CrystalGraphs.concatenate([graphs[[2]], graphs[:2], graphs[[1]]])
    assert len(joined) == 4
    for i, expected in enumerate([G2, G0, G1, G1]):
        assert_same_graph(joined[i], expected)
    np.testing.assert_array_equal(joined.atom_offsets, [0, 3, 5, 6, 7])
    np.testing.assert_array_equal(joined.species_offsets, [0, 3, 6, 7, 8])
    np.testing.assert_array_equal(joined.edge_offsets, [0, 4, 7, 8, 9])
    assert joined.same_settings(graphs)


@pytest.mark.parametrize("position", [1, 2])
def test_concatenate_refuses_other_settings(graphs, position):
    other = CrystalGraphs.from_graphs([G1], **{**SETTINGS, "cutoff": 4.0})
    parts = [graphs, graphs, graphs]
    parts[position] = other
    with pytest.raises(ValueError) as info:
        CrystalGraphs.concatenate(parts)
    assert str(info.value) == (
        "Cannot join CrystalGraphs built with different settings (cutoff: 4, not 3); "
        "build them with the same CrystalGraphTransformer settings."
    )


def test_concatenate_names_every_difference(graphs):
    other = CrystalGraphs.from_graphs([G1], **{**SETTINGS, "cutoff": 4.0, "max_neighbors": 8})
    with pytest.raises(ValueError) as info:
        CrystalGraphs.concatenate([graphs, other])
    assert "(cutoff: 4, not 3; max_neighbors: 8, not 12)" in str(info.value)


def test_batch_by_hand(graphs):
    batch = graphs.batch(np.array([2, 0]))
    assert isinstance(batch, GraphBatch)
    assert len(batch) == 2 and batch.n_graphs == 2
    expected_atoms = [TABLE[1], TABLE[2], TABLE[3], TABLE[1], 0.5 * TABLE[2] + 0.5 * TABLE[3]]
    np.testing.assert_allclose(batch.atom_fea.numpy(), np.array(expected_atoms))
    assert batch.atom_fea.dtype == torch.float32
    np.testing.assert_array_equal(batch.graph_index.numpy(), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(
        batch.edge_index.numpy(), [[0, 1, 2, 2, 3, 4, 3], [1, 2, 0, 1, 4, 3, 3]]
    )
    assert batch.edge_index.dtype == torch.int64
    np.testing.assert_allclose(batch.edge_length.numpy(), [1.1, 1.2, 1.3, 1.4, 1, 1, 2])
    assert batch.sample_weight is None


def test_batch_of_the_middle_graph(graphs):
    batch = graphs.batch([1, 1])
    np.testing.assert_allclose(batch.atom_fea.numpy(), [TABLE[3], TABLE[3]])
    np.testing.assert_array_equal(batch.edge_index.numpy(), [[0, 1], [0, 1]])
    np.testing.assert_array_equal(batch.graph_index.numpy(), [0, 1])


def test_batch_edge_features_are_the_gaussians_of_the_lengths(graphs):
    batch = graphs.batch([1])
    # length 1.5, centres 0, 1, 2, width 0.5: exp(-9), exp(-1), exp(-1)
    expected = np.exp([[-9.0, -1.0, -1.0]])
    np.testing.assert_allclose(batch.edge_fea.numpy(), expected, rtol=1e-6)
    window = batch.edge_window
    dense = np.zeros((1, 3))
    dense[0, window.index.numpy()[0]] = window.value.numpy()[0]
    np.testing.assert_allclose(dense, expected, rtol=1e-6)
    assert batch.expansion is graphs.expansion
    np.testing.assert_array_equal(graphs.expansion.centers.numpy(), CENTERS)
    assert graphs.expansion.width == 0.5


def test_batch_to_a_device_keeps_every_field(graphs):
    batch = graphs.batch([0, 2])
    batch.sample_weight = torch.tensor([0.25, 4.0])
    moved = batch.to("cpu")
    for name in ("atom_fea", "edge_length", "edge_index", "graph_index", "sample_weight"):
        assert torch.equal(getattr(moved, name), getattr(batch, name)), name
    assert moved.n_graphs == 2
    assert torch.equal(moved.expansion.centers, batch.expansion.centers)
    assert moved.expansion.width == batch.expansion.width
    batch.sample_weight = None
    assert batch.to("cpu").sample_weight is None
