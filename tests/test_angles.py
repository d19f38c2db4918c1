"""Edge vectors in the graphs, bond angles per batch, and MessageNet's three-body term."""

import math
import pickle

import numpy as np
import pytest
import torch
from numpy.polynomial import legendre as np_legendre
from pymatgen.core import Lattice, Structure

from skgnn import CrystalGraphs, CrystalGraphTransformer, MessageNet
from skgnn.angles import ENVELOPE_EXPONENT, ThreeBody, edge_pairs, legendre, triplets
from skgnn.edges import EdgeFeatures
from skgnn.message import MessageLayer, edge_rows

from .conftest import tiny_regressor

BOX = Lattice.cubic(20.0)  # a molecule in a box: no periodic image within any cutoff used here


def molecule(species: list[str], coords: list[list[float]]) -> Structure:
    centre = np.array([10.0, 10.0, 10.0])
    return Structure(BOX, species, np.asarray(coords) + centre, coords_are_cartesian=True)


def water(angle_degrees: float = 104.5, bond: float = 0.9572) -> Structure:
    half = math.radians(angle_degrees) / 2
    return molecule(
        ["O", "H", "H"],
        [[0, 0, 0], [bond * math.sin(half), bond * math.cos(half), 0],
         [-bond * math.sin(half), bond * math.cos(half), 0]],
    )  # fmt: skip


def triatomic(angle_degrees: float, bond: float = 1.5) -> Structure:
    """A-B-A with both bonds ``bond`` Å long, at ``angle_degrees`` at B."""
    half = math.radians(angle_degrees) / 2
    return molecule(
        ["Se", "Mo", "Se"],
        [[bond * math.sin(half), bond * math.cos(half), 0], [0, 0, 0],
         [-bond * math.sin(half), bond * math.cos(half), 0]],
    )  # fmt: skip


# ---- edge vectors in the container ------------------------------------------------------


def test_edge_vectors_are_the_displacements_of_the_edges(jdft2d_graphs):
    graphs, _ = jdft2d_graphs
    assert graphs.edge_vector.shape == (graphs.edge_offsets[-1], 3)
    assert graphs.edge_vector.dtype == np.float32
    np.testing.assert_allclose(
        np.linalg.norm(graphs.edge_vector, axis=1), graphs.edge_length, rtol=1e-5
    )


def test_edge_vectors_follow_indexing_joining_batching_and_pickling(jdft2d_graphs):
    graphs, _ = jdft2d_graphs
    rows = [7, 0, 3]
    edges = np.concatenate([np.arange(graphs.edge_offsets[r], graphs.edge_offsets[r + 1])
                            for r in rows])  # fmt: skip
    np.testing.assert_array_equal(graphs[rows].edge_vector, graphs.edge_vector[edges])
    np.testing.assert_array_equal(
        graphs[7].edge_vector, graphs.edge_vector[edges][: graphs.n_edges[7]]
    )
    joined = CrystalGraphs.concatenate([graphs[[7]], graphs[[0, 3]]])
    np.testing.assert_array_equal(joined.edge_vector, graphs.edge_vector[edges])
    np.testing.assert_array_equal(graphs.batch(np.array(rows)).edge_vector.numpy(),
                                  graphs.edge_vector[edges])  # fmt: skip
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(graphs)).edge_vector,
                                  graphs.edge_vector)  # fmt: skip
    assert graphs.nbytes == graphs[np.arange(len(graphs))].nbytes


def test_graphs_pickled_before_edge_vectors_load_and_three_body_refuses_them(jdft2d_graphs):
    graphs = jdft2d_graphs[0][[0, 1]]
    del graphs.__dict__["edge_vector"]  # what an older skgnn pickled
    old = pickle.loads(pickle.dumps(graphs))
    assert old.edge_vector is None and old.array_names == CrystalGraphs._ARRAYS
    batch = old.batch(np.array([0, 1]))
    assert batch.edge_vector is None
    net = MessageNet(nbr_fea_len=old.n_edge_features, atom_fea_len=8, edge_width=8)
    assert net(batch).shape == (2, 1)  # without the term they serve as before
    with pytest.raises(ValueError, match=r"three_body=True\) needs the edges' displacement"):
        MessageNet(nbr_fea_len=old.n_edge_features, three_body=True)(batch)
    # a join with graphs that have no vectors has none, rather than vectors for some edges
    assert CrystalGraphs.concatenate([old, jdft2d_graphs[0][[2]]]).edge_vector is None


# ---- angles ---------------------------------------------------------------------------


def test_the_angle_of_water_is_104_5_degrees():
    graphs = CrystalGraphTransformer().fit_transform([water()])
    batch = graphs.batch(np.array([0]))
    found = triplets(batch.edge_vector.double(), batch.edge_index, 1.2, 1)
    # O-H bonds (0.9572 Å) pair up at the oxygen; H-H (1.51 Å) is beyond 1.2 Å
    assert batch.edge_index[0][found.edge].tolist() == [0, 0]
    assert sorted(batch.edge_index[1][found.edge].tolist()) == [1, 2]
    cosine = found.basis[:, 1] / found.basis[:, 0]  # P_1 / P_0
    np.testing.assert_allclose(np.degrees(np.arccos(cosine.numpy())), 104.5, atol=1e-4)


def test_a_right_angle_triplet_basis_by_hand():
    """Edges of 1 and 2 Å at 90° with a 4 Å cutoff: P_l(0) times the two envelopes, p = 5."""
    vectors = torch.tensor([[1.0, 0, 0], [0, 2.0, 0]], dtype=torch.float64)
    found = triplets(vectors, torch.tensor([[0, 0], [1, 2]]), cutoff=4.0, l_max=2)
    assert found.edge.tolist() == [0, 1] and found.neighbor.tolist() == [2, 1]
    u = [1 - 21 * x**5 + 35 * x**6 - 15 * x**7 for x in (0.25, 0.5)]
    expected = torch.tensor([1.0, 0.0, -0.5], dtype=torch.float64) * u[0] * u[1]
    torch.testing.assert_close(found.basis, expected.expand(2, 3), rtol=1e-12, atol=1e-12)


def test_legendre_matches_numpy():
    x = torch.linspace(-1, 1, 11, dtype=torch.float64)
    for l_max in range(5):
        expected = np.stack([np_legendre.legval(x.numpy(), np.eye(l_max + 1)[n])
                             for n in range(l_max + 1)], axis=1)  # fmt: skip
        np.testing.assert_allclose(legendre(x, l_max).numpy(), expected, atol=1e-12)


def test_edge_pairs_are_all_ordered_pairs_of_distinct_edges_per_centre():
    center = torch.tensor([2, 0, 2, 1, 0, 2, 2])
    first, second = edge_pairs(center, torch.tensor([0, 1, 2, 3, 4, 5]))  # edge 6 not chosen
    expected = {(a, b) for a in range(6) for b in range(6) if a != b and center[a] == center[b]}
    assert set(zip(first.tolist(), second.tolist(), strict=True)) == expected
    assert len(first) == len(expected)


@pytest.fixture(scope="module")
def small_crystal() -> Structure:
    """A rocksalt cell with one atom displaced: angles other than 90° and 180°."""
    structure = Structure(Lattice.cubic(4.2), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    structure = structure * (2, 1, 1)
    structure.translate_sites([0], [0.03, 0.05, -0.02])
    return structure


def test_angles_equal_a_plain_loop_over_the_structure(small_crystal):
    cutoff = 4.0
    graphs = CrystalGraphTransformer(cutoff=6.0, max_neighbors=200).fit_transform([small_crystal])
    batch = graphs.batch(np.array([0]))
    found = triplets(batch.edge_vector.double(), batch.edge_index, cutoff, 1)
    center = batch.edge_index[0][found.edge].numpy()
    cosine = (found.basis[:, 1] / found.basis[:, 0]).numpy()
    for i, site in enumerate(small_crystal):
        neighbours = small_crystal.get_neighbors(site, cutoff)
        reference = []
        for a, j in enumerate(neighbours):
            for b, k in enumerate(neighbours):
                if a != b:
                    u, v = j.coords - site.coords, k.coords - site.coords
                    reference.append(u @ v / np.linalg.norm(u) / np.linalg.norm(v))
        assert len(reference) > 0
        np.testing.assert_allclose(np.sort(cosine[center == i]), np.sort(reference), atol=1e-6)


def plain_three_body(module: ThreeBody, atom_fea, edge_vector, edge_index, cutoff, l_max):
    """The term as written, one edge and one partner at a time."""
    n_edges = len(edge_vector)
    out = torch.zeros(n_edges, module.out.out_features, dtype=torch.float64)
    for e in range(n_edges):
        r_ij = edge_vector[e].norm()
        for f in range(n_edges):
            r_ik = edge_vector[f].norm()
            if f == e or edge_index[0, f] != edge_index[0, e] or r_ij >= cutoff or r_ik >= cutoff:
                continue
            cos = float(edge_vector[e] @ edge_vector[f] / (r_ij * r_ik))
            basis = torch.tensor([np_legendre.legval(cos, np.eye(l_max + 1)[n])
                                  for n in range(l_max + 1)], dtype=torch.float64)  # fmt: skip
            envelope = 1.0
            for x in (r_ij / cutoff, r_ik / cutoff):
                p = ENVELOPE_EXPONENT
                envelope *= (1 - (p + 1) * (p + 2) / 2 * x**p + p * (p + 2) * x ** (p + 1)
                             - p * (p + 1) / 2 * x ** (p + 2))  # fmt: skip
            gate = torch.sigmoid(module.gate(atom_fea[edge_index[1, f]]))
            out[e] += module.out(basis * envelope * gate)
    return out


def test_the_three_body_term_equals_a_plain_loop_over_triplets(small_crystal):
    torch.manual_seed(0)
    graphs = CrystalGraphTransformer(max_neighbors=16).fit_transform([small_crystal])
    batch = graphs.batch(np.array([0]))
    vectors = batch.edge_vector.double()
    atom_fea = torch.randn(batch.atom_fea.shape[0], 6, dtype=torch.float64)
    module = ThreeBody(6, 4, 5).double()
    fast = module(atom_fea, triplets(vectors, batch.edge_index, 4.0, 3))
    reference = plain_three_body(module, atom_fea, vectors, batch.edge_index, 4.0, 3)
    assert reference.abs().sum() > 0 and (reference.abs().sum(dim=1) == 0).any()
    torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-12)


def test_the_three_body_term_goes_smoothly_to_zero_at_its_cutoff():
    """An edge i→k stretched to the cutoff: its triplet's share fades like (c - r)³, then is 0."""
    torch.manual_seed(0)
    module = ThreeBody(3, 4, 5).double()
    atom_fea = torch.randn(3, 3, dtype=torch.float64)
    edge_index = torch.tensor([[0, 0], [1, 2]])
    cutoff = 4.0

    def term(r_ik: float) -> torch.Tensor:
        vectors = torch.tensor([[1.0, 0, 0], [r_ik * 0.6, r_ik * 0.8, 0]], dtype=torch.float64)
        return module(atom_fea, triplets(vectors, edge_index, cutoff, 3))[0]  # edge i→j

    sizes = [term(cutoff - gap).abs().max().item() for gap in (1e-1, 1e-2, 1e-3)]
    assert sizes[0] > 0
    assert sizes[1] < sizes[0] * 2e-3 and sizes[2] < sizes[1] * 2e-3  # third order
    assert term(cutoff).abs().max().item() == 0
    assert term(cutoff + 0.5).abs().max().item() == 0


# ---- the term in MessageNet -----------------------------------------------------------


def test_a_layer_with_three_body_equals_its_plain_form_with_gradients(small_crystal):
    graphs = CrystalGraphTransformer(max_neighbors=16).fit_transform([small_crystal])
    batch = graphs.batch(np.array([0]))
    found = triplets(batch.edge_vector.double(), batch.edge_index, 4.0, 3)
    edge_fea = batch.edge_fea.double()
    results = []
    for fast in (True, False):
        torch.manual_seed(1)
        layer = MessageLayer(8, edge_fea.shape[1], 2, 6, n_angle_basis=4).double()
        x = torch.randn(len(batch.atom_fea), 8, dtype=torch.float64, generator=None)
        x = x.requires_grad_()
        features = EdgeFeatures(edge_fea, torch.arange(len(edge_fea)))
        out = (
            layer(x, features, edge_rows(features, batch.edge_index, len(x)), found)
            if fast
            else layer.plain_forward(x, edge_fea, batch.edge_index, found)
        )
        out.pow(2).sum().backward()
        results.append([out, x.grad] + [p.grad for p in layer.parameters()])
    for fast, plain in zip(*results, strict=True):
        torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-12)


def test_three_body_tells_apart_what_distances_alone_cannot():
    """Linear and bent A-B-A with the A-A distance beyond the graph's cutoff: the same
    neighbour distances at every atom, told apart only by the angle at B."""
    linear, bent = triatomic(180.0), triatomic(100.0)
    graphs = CrystalGraphTransformer(cutoff=2.0).fit_transform([linear, bent])
    for i in range(2):  # only the two A-B bonds, each way, at 1.5 Å
        np.testing.assert_allclose(graphs[i].edge_length, 1.5, atol=1e-5)
        assert len(graphs[i].edge_src) == 4
    batch = graphs.batch(np.array([0, 1]))
    for three_body in (False, True):
        torch.manual_seed(0)
        net = MessageNet(nbr_fea_len=graphs.n_edge_features, atom_fea_len=16, edge_width=16,
                         three_body=three_body, three_body_cutoff=2.0).eval()  # fmt: skip
        with torch.no_grad():
            a, b = net(batch).view(-1).tolist()
        if three_body:
            assert abs(a - b) > 1e-4 * max(1, abs(a))
        else:
            assert a == pytest.approx(b, abs=1e-6)


def test_the_estimator_fits_predicts_and_pickles_with_three_body(jdft2d_graphs):
    graphs, y = jdft2d_graphs
    net = tiny_regressor(module="message", module__edge_width=16, module__three_body=True,
                         max_epochs=2).fit(graphs[:60], y[:60])  # fmt: skip
    assert all(conv.three_body is not None for conv in net.module_.convs)
    predictions = net.predict(graphs[60:])
    assert np.isfinite(predictions).all() and predictions.std() > 0
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(net)).predict(graphs[60:]), predictions)
    plain = tiny_regressor(module="message", module__edge_width=16, max_epochs=2)
    assert not np.allclose(plain.fit(graphs[:60], y[:60]).predict(graphs[60:]), predictions)
