"""Value tests for skgnn/module.py against hand-worked cases or the plain form
(mutation testing, issue #11)."""

import pytest
import torch
from torch import nn

from skgnn import CGCNN, CGConv
from skgnn.module import batch_norm, pool

from .test_module import random_batch, random_graph, randomised, straightforward_cgconv

BOUNDS = {  # parameter: (smallest accepted, largest refused below it)
    "orig_atom_fea_len": (1, 0),
    "nbr_fea_len": (1, 0),
    "atom_fea_len": (1, 0),
    "n_conv": (0, -1),
    "h_fea_len": (1, 0),
    "n_h": (1, 0),
    "n_out": (1, 0),
}


@pytest.mark.parametrize("name", list(BOUNDS))
def test_every_integer_bound_accepts_its_edge_and_refuses_below(name):
    accepted, refused = BOUNDS[name]
    CGCNN(**{name: accepted})
    with pytest.raises(ValueError, match=f"The '{name}' parameter of CGCNN must be"):
        CGCNN(**{name: refused})


def test_the_smallest_network_is_built_and_predicts():
    model = CGCNN(orig_atom_fea_len=1, nbr_fea_len=1, atom_fea_len=1, n_conv=1, h_fea_len=1)
    assert model.embedding.in_features == 1 and model.embedding.out_features == 1
    assert model.convs[0].fc_full.in_features == 3 and model.fc_out.in_features == 1


def test_dropout_is_in_zero_to_one_left_closed():
    assert CGCNN(dropout=0.0).dropout.p == 0.0
    assert CGCNN(dropout=0.999).dropout.p == 0.999
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match="The 'dropout' parameter of CGCNN must be"):
            CGCNN(dropout=bad)


def test_readout_options():
    assert CGCNN(readout="atom").readout == "atom"
    with pytest.raises(ValueError, match="The 'readout' parameter of CGCNN must be"):
        CGCNN(readout="site")
    for how in ("mean", "sum", "max"):
        assert CGCNN(pooling=how).pooling == how


def test_defaults():
    model = CGCNN()
    assert model.embedding.in_features == 92 and model.embedding.out_features == 64
    assert len(model.convs) == 3 and model.convs[0].nbr_fea_len == 41
    assert model.convs[0].atom_fea_len == 64
    assert len(model.hidden) == 1 and model.hidden[0].out_features == 128
    assert model.fc_out.out_features == 1 and model.dropout.p == 0.0
    assert model.pooling == "mean" and model.readout == "crystal"


def test_layer_shapes():
    model = CGCNN(
        orig_atom_fea_len=5, nbr_fea_len=4, atom_fea_len=3, n_conv=2, h_fea_len=6, n_h=3, n_out=2
    )
    conv = model.convs[1]
    assert (conv.fc_full.in_features, conv.fc_full.out_features) == (2 * 3 + 4, 6)
    assert conv.bn1.num_features == 6 and conv.bn2.num_features == 3
    assert [(h.in_features, h.out_features) for h in model.hidden] == [(3, 6), (6, 6), (6, 6)]
    assert (model.fc_out.in_features, model.fc_out.out_features) == (6, 2)


def test_reprs_exactly():
    assert repr(CGCNN(n_conv=2, n_h=2, pooling="sum", readout="atom", n_out=3)) == (
        "CGCNN(n_conv=2, conv=CGConv(64, nbr_fea_len=41), n_h=2, pooling='sum', "
        "readout='atom', n_out=3)"
    )
    assert repr(CGCNN(n_conv=0)) == (
        "CGCNN(n_conv=0, conv=None, n_h=1, pooling='mean', readout='crystal', n_out=1)"
    )
    assert repr(CGConv(3, 2)) == "CGConv(3, nbr_fea_len=2)"
    assert repr(CGCNN(nbr_fea_len=3, atom_fea_len=5, n_conv=1)).startswith(
        "CGCNN(n_conv=1, conv=CGConv(5, nbr_fea_len=3), n_h=1"
    )


def test_two_rows_in_training_use_the_batch_statistics():
    bn = nn.BatchNorm1d(3).double().train()
    reference = nn.BatchNorm1d(3).double().train()
    x = torch.tensor([[1.0, 2.0, -1.0], [3.0, -2.0, 0.5]], dtype=torch.float64)
    out = batch_norm(bn, x)
    # two rows: each column normalises to -1, +1 (up to eps)
    torch.testing.assert_close(out, reference(x))
    assert float(out[0, 0]) == pytest.approx(-1.0, abs=1e-5)
    assert float(out[1, 0]) == pytest.approx(1.0, abs=1e-5)
    torch.testing.assert_close(bn.running_mean, reference.running_mean)
    assert float(bn.running_mean[0]) == pytest.approx(0.2)  # 0.9 * 0 + 0.1 * 2


@pytest.mark.parametrize(
    "how, expected",
    [("mean", [[-2.0, 1.0], [-10.0, 0.0]]), ("sum", [[-6.0, 3.0], [-10.0, 0.0]]),
     ("max", [[-1.0, 2.0], [-10.0, 0.0]])],
    ids=["mean", "sum", "max"],
)  # fmt: skip
def test_pooling_negative_values(how, expected):
    atom_fea = torch.tensor([[-1.0, 0.0], [-2.0, 1.0], [-3.0, 2.0], [-10.0, 0.0]])
    assert pool(atom_fea, torch.tensor([0, 0, 0, 1]), 2, how).tolist() == expected


def test_pooling_leaves_an_empty_graph_at_zero():
    atom_fea = torch.tensor([[-1.0], [-3.0]])
    assert pool(atom_fea, torch.tensor([0, 2]), 3, "max").tolist() == [[-1.0], [0.0], [-3.0]]


def plain_head(model: CGCNN, vectors):
    vectors = nn.functional.softplus(vectors)
    for hidden in model.hidden:
        vectors = nn.functional.softplus(hidden(vectors))
    return vectors


@pytest.mark.parametrize("pooling", ["mean", "sum", "max"])
def test_crystal_readout_by_hand(pooling):
    torch.manual_seed(0)
    model = CGCNN(atom_fea_len=6, n_conv=2, h_fea_len=5, n_h=2, pooling=pooling, n_out=2).eval()
    batch = random_batch()
    atoms = model.atom_vectors(batch)
    pooled = pool(atoms, batch.graph_index, 3, pooling)
    torch.testing.assert_close(model.embed(batch, "pooled"), nn.functional.softplus(pooled))
    torch.testing.assert_close(model.embed(batch), plain_head(model, pooled))
    torch.testing.assert_close(model.embed(batch, "hidden"), plain_head(model, pooled))
    torch.testing.assert_close(model(batch), model.fc_out(plain_head(model, pooled)))
    with pytest.raises(
        ValueError, match=r"atom_outputs needs readout='atom'; this network pools first\."
    ):
        model.atom_outputs(batch)


@pytest.mark.parametrize("pooling", ["mean", "sum"])
def test_atom_readout_by_hand(pooling):
    torch.manual_seed(0)
    model = CGCNN(
        atom_fea_len=6, n_conv=2, h_fea_len=5, n_h=2, pooling=pooling, n_out=2, readout="atom"
    )
    model.eval()
    batch = random_batch()
    atoms = model.atom_vectors(batch)
    per_atom = model.fc_out(plain_head(model, atoms))
    torch.testing.assert_close(model.atom_outputs(batch), per_atom)
    torch.testing.assert_close(model(batch), pool(per_atom, batch.graph_index, 3, pooling))
    if pooling == "sum":
        torch.testing.assert_close(model(batch)[0], per_atom[:3].sum(0))
    hidden = pool(plain_head(model, atoms), batch.graph_index, 3, pooling)
    torch.testing.assert_close(model.embed(batch, "hidden"), hidden)
    pooled = pool(nn.functional.softplus(atoms), batch.graph_index, 3, pooling)
    torch.testing.assert_close(model.embed(batch, "pooled"), pooled)


def test_atom_outputs_refusal_is_exact():
    with pytest.raises(ValueError) as error:
        CGCNN(n_conv=0).atom_outputs(random_batch())
    assert str(error.value) == "atom_outputs needs readout='atom'; this network pools first."


def test_atom_vectors_are_the_convolutions_applied_in_turn():
    torch.manual_seed(0)
    model = CGCNN(atom_fea_len=6, n_conv=2, h_fea_len=5).double().eval()
    batch = random_batch()
    x = model.embedding(batch.atom_fea.double())
    edge_fea = batch.edge_fea.double()
    for conv in model.convs:
        x = straightforward_cgconv(conv, x, edge_fea, batch.edge_index)
    batch.atom_fea = batch.atom_fea.double()
    batch.expansion = batch.expansion.to(torch.float64)
    torch.testing.assert_close(model.atom_vectors(batch), x, rtol=1e-5, atol=1e-6)


def test_dropout_acts_in_training_only():
    torch.manual_seed(0)
    model = CGCNN(atom_fea_len=6, n_conv=1, h_fea_len=16, dropout=0.5).train()
    batch = random_batch()
    hidden = model.embed(batch).detach()
    torch.manual_seed(1)
    out = model(batch)
    torch.manual_seed(1)
    mask = torch.nn.functional.dropout(torch.ones_like(hidden), 0.5, training=True)
    # the dropped coordinates of the head's last hidden layer do not reach the output
    torch.testing.assert_close(out, model.fc_out(hidden * mask), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n_edges", [2, 3])
def test_two_and_three_edges_in_training_use_the_batch_statistics(n_edges):
    conv = randomised(CGConv(4, 3).double()).train()
    atom_fea, edge_fea, edge_index = random_graph(
        n_atoms=3, n_edges=n_edges, atom_len=4, edge_len=3, seed=2
    )
    reference = randomised(CGConv(4, 3).double()).train()
    reference.load_state_dict(conv.state_dict())
    fast = conv(atom_fea, edge_fea, edge_index)
    expected = straightforward_cgconv(reference, atom_fea, edge_fea, edge_index)
    torch.testing.assert_close(fast, expected, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(conv.bn1.running_var, reference.bn1.running_var)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_edge_features_needing_gradients_take_the_plain_form_in_both_modes(training):
    results = []
    atom_fea, edge_fea, edge_index = random_graph()
    for forward in (CGConv.forward, straightforward_cgconv):
        torch.manual_seed(3)
        conv = randomised(CGConv(8, 5).double()).train(training)
        u = edge_fea.clone().requires_grad_()
        out = forward(conv, atom_fea, u, edge_index)
        out.pow(2).sum().backward()
        results.append([out, u.grad, *(p.grad for p in conv.parameters()), *conv.buffers()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_without_running_statistics_the_batch_statistics_are_used_in_evaluation():
    conv = CGConv(4, 3).double()
    conv.bn1 = nn.BatchNorm1d(8, track_running_stats=False).double()
    conv.bn2 = nn.BatchNorm1d(4, track_running_stats=False).double()
    conv.eval()
    atom_fea, edge_fea, edge_index = random_graph(atom_len=4, edge_len=3)
    u = edge_fea.clone().requires_grad_()
    expected = straightforward_cgconv(conv, atom_fea, edge_fea, edge_index)
    torch.testing.assert_close(conv(atom_fea, u, edge_index), expected, rtol=1e-10, atol=1e-10)


def test_a_plan_without_statistics_is_refused_in_training_with_the_exact_message():
    from skgnn.edges import edge_plan

    conv = CGConv(4, 3).double().train()
    atom_fea, edge_fea, edge_index = random_graph(atom_len=4, edge_len=3)
    for plan in (
        edge_plan(edge_fea, edge_index, len(atom_fea), statistics=False),
        edge_plan(edge_fea, edge_index, len(atom_fea), gradients=False),
    ):
        with pytest.raises(ValueError) as error:
            conv(atom_fea, plan, edge_index)
        assert str(error.value) == "Batch statistics need an EdgePlan built with statistics=True."
