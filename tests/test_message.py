"""MessageNet and the radial basis against their plain forms and hand-worked values."""

import math

import pytest
import torch
from torch import nn

from skgnn import CGCNN, MessageNet
from skgnn.edges import EdgeFeatures
from skgnn.message import MessageLayer, edge_rows
from skgnn.radial import RadialBasis, envelope
from skgnn.readout import pool

from .test_module import random_batch, random_graph


def double_batch(**kwargs):
    batch = random_batch(**kwargs)
    batch.atom_fea = batch.atom_fea.double()
    batch.edge_length = batch.edge_length.double()
    batch.expansion = batch.expansion.to(torch.float64)
    return batch


def as_features(edge_fea: torch.Tensor) -> EdgeFeatures:
    return EdgeFeatures(edge_fea, torch.arange(len(edge_fea)))


# ---- one layer: the split matmul against the concatenated form ----------------------------


@pytest.mark.parametrize("aggregation", ["sum", "mean"])
@pytest.mark.parametrize("edge_layers", [1, 3])
def test_split_matmul_equals_the_concatenated_form(aggregation, edge_layers):
    torch.manual_seed(0)
    layer = MessageLayer(8, 5, edge_layers, 6, aggregation).double()
    atom_fea, edge_fea, edge_index = random_graph()
    # edge features stored once per distinct value, as a batch holds them
    table, index = edge_fea[:11], torch.arange(30) % 11
    fast = layer(atom_fea, EdgeFeatures(table, index), edge_rows(EdgeFeatures(table, index),
                                                                edge_index, 7))  # fmt: skip
    reference = layer.plain_forward(atom_fea, table[index], edge_index)
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-12)


def test_gradients_match_the_concatenated_form():
    atom_fea, edge_fea, edge_index = random_graph()
    grads = []
    for fast in (True, False):
        torch.manual_seed(1)
        layer = MessageLayer(8, 5, 2, 6).double()
        x = atom_fea.clone().requires_grad_()
        features = as_features(edge_fea)
        out = (
            layer(x, features, edge_rows(features, edge_index, 7))
            if fast
            else layer.plain_forward(x, edge_fea, edge_index)
        )
        out.pow(2).sum().backward()
        grads.append([x.grad] + [p.grad for p in layer.parameters()])
    for fast, plain in zip(*grads, strict=True):
        torch.testing.assert_close(fast, plain, rtol=1e-12, atol=1e-12)


def test_mean_is_the_sum_over_the_degree():
    """On a graph where every atom centres 3 edges, the mean is the sum with W_v / 3."""
    torch.manual_seed(0)
    atom_fea = torch.randn(4, 6, dtype=torch.float64)
    center = torch.arange(4).repeat_interleave(3)
    edge_index = torch.stack([center, (center + torch.tensor([1, 2, 3] * 4)) % 4])
    edge_fea = torch.rand(12, 5, dtype=torch.float64)
    mean = MessageLayer(6, 5, 2, 7, aggregation="mean").double()
    summed = MessageLayer(6, 5, 2, 7, aggregation="sum").double()
    summed.load_state_dict(mean.state_dict())
    with torch.no_grad():
        summed.update.weight /= 3
    features = as_features(edge_fea)
    rows = edge_rows(features, edge_index, 4)
    torch.testing.assert_close(mean(atom_fea, features, rows), summed(atom_fea, features, rows))
    assert rows.degree.tolist() == [3, 3, 3, 3]


def test_mean_of_one_edge_is_its_message_and_no_edge_keeps_the_vector_plus_the_update_bias():
    """Atom 0 centres one edge (its mean is that message, not a share of it), atom 1 none."""
    layer = MessageLayer(3, 2, 1, 4, aggregation="mean").double()
    atom_fea = torch.randn(2, 3, dtype=torch.float64)
    edge_index = torch.tensor([[0], [1]])
    edge_fea = torch.rand(1, 2, dtype=torch.float64)
    features = as_features(edge_fea)
    out = layer(atom_fea, features, edge_rows(features, edge_index, 2))
    message = nn.functional.silu(layer.first(torch.cat([atom_fea[0], atom_fea[1], edge_fea[0]])))
    expected = torch.stack([
        atom_fea[0] + nn.functional.silu(layer.update(message)),
        atom_fea[1] + nn.functional.silu(layer.update.bias),
    ])  # fmt: skip
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(layer.plain_forward(atom_fea, edge_fea, edge_index), expected)


# ---- the network ---------------------------------------------------------------------------


@pytest.mark.parametrize("edge_basis", ["gaussian", "radial"])
@pytest.mark.parametrize("pool_layers", ["last", "all"])
def test_network_is_its_plain_layers_in_turn(edge_basis, pool_layers):
    torch.manual_seed(0)
    model = MessageNet(atom_fea_len=6, n_conv=3, edge_layers=2, edge_width=7, h_fea_len=5,
                       edge_basis=edge_basis, n_radial=9, cutoff=6.0,
                       pool_layers=pool_layers).double()  # fmt: skip
    batch = double_batch()
    edge_fea = batch.edge_fea if edge_basis == "gaussian" else model.radial(batch.edge_length)
    layers = [model.embedding(batch.atom_fea)]
    for conv in model.convs:
        layers.append(conv.plain_forward(layers[-1], edge_fea, batch.edge_index))
    atoms = layers[-1] if pool_layers == "last" else sum(layers) / len(layers)
    torch.testing.assert_close(model.atom_vectors(batch), atoms, rtol=1e-12, atol=1e-12)
    crystal = nn.functional.silu(pool(atoms, batch.graph_index, 3, "mean"))
    expected = model.fc_out(nn.functional.silu(model.hidden[0](crystal)))
    torch.testing.assert_close(model(batch), expected, rtol=1e-12, atol=1e-12)


def test_radial_features_are_computed_once_per_distinct_length():
    model = MessageNet(edge_basis="radial", n_radial=8, cutoff=7.0)
    batch = random_batch(n_edges=40)
    batch.edge_length = batch.edge_length[torch.arange(40) % 13]  # 13 distinct lengths
    features = model.edge_features(batch)
    assert features.table.shape == (13, 8)
    torch.testing.assert_close(features.table[features.index], model.radial(batch.edge_length))


def test_gaussian_features_come_from_the_graphs():
    model = MessageNet(nbr_fea_len=41)
    batch = random_batch()
    features = model.edge_features(batch)
    torch.testing.assert_close(features.table[features.index], batch.edge_fea)


def test_atom_readout_sums_to_the_prediction():
    torch.manual_seed(0)
    model = MessageNet(atom_fea_len=6, n_conv=2, edge_width=5, pooling="sum", readout="atom")
    batch = random_batch()
    per_atom = model.atom_outputs(batch)
    torch.testing.assert_close(model(batch)[0], per_atom[:3].sum(0))


def test_cgcnn_pools_all_layers_as_their_mean():
    torch.manual_seed(0)
    model = CGCNN(atom_fea_len=6, n_conv=3, h_fea_len=5, pool_layers="all").eval()
    batch = random_batch()
    layers = model.layer_vectors(batch)
    assert len(layers) == 4
    torch.testing.assert_close(model.atom_vectors(batch), torch.stack(layers).mean(0))
    model.pool_layers = "last"
    torch.testing.assert_close(model.atom_vectors(batch), layers[-1])
    assert "pool_layers='all'" in repr(CGCNN(pool_layers="all"))


def test_the_smallest_valid_settings_are_accepted():
    """Each constraint's bound is where the doc says: one layer, one basis function, l = 0."""
    model = MessageNet(
        atom_fea_len=4, n_conv=1, edge_layers=1, edge_width=1, aggregation="mean",
        edge_basis="radial", n_radial=1, cutoff=0.5, h_fea_len=3,
        three_body=True, three_body_cutoff=0.5, three_body_lmax=0,
    )  # fmt: skip
    layer = (
        "MessageLayer(4, edge_fea_len=1, edge_layers=1, edge_width=1, aggregation='mean', "
        "n_angle_basis=1)"
    )
    assert repr(model.convs[0]) == layer and f"n_conv=1, conv={layer}" in repr(model)
    for name, value in [("edge_width", 0), ("n_radial", 0), ("cutoff", 0.0),
                        ("three_body_cutoff", 0.0), ("three_body_lmax", -1)]:  # fmt: skip
        with pytest.raises(ValueError, match=f"The '{name}' parameter of MessageNet must be"):
            MessageNet(**{name: value})


def test_the_network_repr_names_its_settings():
    model = MessageNet(atom_fea_len=4, n_conv=2, edge_layers=3, edge_width=5, h_fea_len=3,
                       three_body=True, pool_layers="all", n_out=2)  # fmt: skip
    assert repr(model) == (
        "MessageNet(n_conv=2, conv=MessageLayer(4, edge_fea_len=41, edge_layers=3, "
        "edge_width=5, aggregation='sum', n_angle_basis=4), edge_basis='gaussian', "
        "three_body_cutoff=4.0, n_h=1, pooling='mean', pool_layers='all', readout='crystal', "
        "n_out=2)"
    )


def test_parameters_are_validated_in_sklearns_words():
    with pytest.raises(ValueError, match="The 'aggregation' parameter of MessageNet must be"):
        MessageNet(aggregation="max")
    with pytest.raises(ValueError, match="The 'edge_layers' parameter of MessageNet must be"):
        MessageNet(edge_layers=0)
    with pytest.raises(ValueError, match="The 'pool_layers' parameter of CGCNN must be"):
        CGCNN(pool_layers="first")


def test_reprs_are_one_line_and_reset_redraws():
    assert repr(MessageLayer(4, 3, 2, 5)) == (
        "MessageLayer(4, edge_fea_len=3, edge_layers=2, edge_width=5, aggregation='sum')"
    )
    assert repr(RadialBasis(6.0, 8)) == "RadialBasis(cutoff=6, n_basis=8, exponent=5)"
    text = repr(MessageNet(n_conv=2, edge_basis="radial"))
    assert "\n" not in text and "n_conv=2" in text and "edge_basis='radial'" in text
    layer = MessageLayer(4, 3)
    before = layer.first.weight.clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.first.weight)


# ---- the radial basis ----------------------------------------------------------------------


def test_radial_basis_by_hand():
    basis = RadialBasis(cutoff=5.0, n_basis=3, exponent=5).double()
    d = torch.tensor([1.0, 2.5, 4.0], dtype=torch.float64)
    x = d / 5.0
    u = 1 - 21 * x**5 + 35 * x**6 - 15 * x**7  # p = 5: (p+1)(p+2)/2, p(p+2), p(p+1)/2
    expected = torch.stack(
        [math.sqrt(2 / 5.0) * torch.sin(n * math.pi * x) / d * u for n in (1, 2, 3)], dim=1
    )
    torch.testing.assert_close(basis(d), expected, rtol=1e-12, atol=1e-12)
    assert envelope(torch.tensor([0.0]), 5).item() == 1.0


def test_radial_basis_goes_smoothly_to_zero_at_the_cutoff():
    basis = RadialBasis(cutoff=6.0, n_basis=16).double()
    d = torch.tensor([6.0 - 1e-3, 6.0, 6.5, 9.0], dtype=torch.float64, requires_grad=True)
    values = basis(d)
    (slope,) = torch.autograd.grad(values.sum(), d, create_graph=True)
    (curvature,) = torch.autograd.grad(slope.sum(), d)
    assert values[1:].abs().max().item() == 0.0 and slope[1:].abs().max().item() == 0.0
    # just inside: value ~ h^4 and slope ~ h^3 (sin and envelope each vanish there)
    assert values[0].abs().max().item() < 1e-9 and slope[0].abs().max().item() < 1e-6
    assert curvature.abs().max().item() < 1e-3
    # away from the cutoff it is not zero
    assert basis(torch.tensor([3.0], dtype=torch.float64)).abs().max().item() > 0.1


@pytest.mark.parametrize("exponent", [3, 5, 7])
def test_envelope_value_slope_and_curvature_vanish_at_one(exponent):
    x = torch.tensor([1.0 - 1e-9], dtype=torch.float64, requires_grad=True)
    u = envelope(x, exponent)
    (slope,) = torch.autograd.grad(u.sum(), x, create_graph=True)
    (curvature,) = torch.autograd.grad(slope.sum(), x)
    assert abs(u.item()) < 1e-12 and abs(slope.item()) < 1e-6 and abs(curvature.item()) < 1e-3
    mid = envelope(torch.tensor([0.5], dtype=torch.float64), exponent).item()
    assert 0 < mid < 1


def test_prediction_without_gradients_equals_the_training_path():
    torch.manual_seed(0)
    model = MessageNet(atom_fea_len=6, n_conv=2, edge_width=7).double().eval()
    batch = double_batch(n_edges=60)
    with torch.no_grad():
        rows = edge_rows(model.edge_features(batch), batch.edge_index, 7)
        predicted = model(batch)
    assert rows.by_row is None  # no grouping for a backward that will not come
    torch.testing.assert_close(predicted, model(batch).detach(), rtol=1e-12, atol=1e-12)
    layer, features = model.convs[0], model.edge_features(batch)
    x = model.embedding(batch.atom_fea).detach().requires_grad_()
    with pytest.raises(RuntimeError, match="made without gradients enabled"):
        layer(x, features, rows).sum().backward()
