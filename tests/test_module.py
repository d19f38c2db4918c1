import pytest
import torch
from torch import nn

from skgnn import CGCNN, CGConv
from skgnn.graphs import GraphBatch
from skgnn.module import pool


def straightforward_cgconv(conv: CGConv, atom_fea, edge_fea, edge_index):
    """The convolution as written in the paper: concatenate z per edge, then one matmul."""
    center, neighbor = edge_index
    z = torch.cat([atom_fea[center], atom_fea[neighbor], edge_fea], dim=1)
    nbr_filter, nbr_core = conv.bn1(conv.fc_full(z)).chunk(2, dim=1)
    message = torch.sigmoid(nbr_filter) * nn.functional.softplus(nbr_core)
    summed = torch.zeros_like(atom_fea).index_add_(0, center, message)
    return nn.functional.softplus(atom_fea + conv.bn2(summed))


def random_graph(n_atoms=7, n_edges=30, atom_len=8, edge_len=5, seed=0):
    generator = torch.Generator().manual_seed(seed)
    atom_fea = torch.randn(n_atoms, atom_len, generator=generator, dtype=torch.float64)
    edge_fea = torch.rand(n_edges, edge_len, generator=generator, dtype=torch.float64)
    edge_index = torch.randint(0, n_atoms, (2, n_edges), generator=generator)
    return atom_fea, edge_fea, edge_index


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_split_matmul_equals_the_concatenated_form(training):
    conv = CGConv(8, 5).double().train(training)
    atom_fea, edge_fea, edge_index = random_graph()
    fast = conv(atom_fea, edge_fea, edge_index)
    reference = straightforward_cgconv(conv, atom_fea, edge_fea, edge_index)
    torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-10)


def test_gradients_match_the_concatenated_form():
    atom_fea, edge_fea, edge_index = random_graph()
    grads = []
    for forward in (CGConv.forward, straightforward_cgconv):
        torch.manual_seed(1)
        conv = CGConv(8, 5).double()
        forward(conv, atom_fea, edge_fea, edge_index).pow(2).sum().backward()
        grads.append(conv.fc_full.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_reset_parameters_restores_batchnorm_and_redraws_weights():
    conv = CGConv(4, 3)
    before = conv.fc_full.weight.clone()
    conv.bn1.running_mean.fill_(3.0)
    conv.reset_parameters()
    assert torch.all(conv.bn1.running_mean == 0)
    assert not torch.equal(before, conv.fc_full.weight)


def test_reprs_are_one_line():
    assert repr(CGConv(64, 41)) == "CGConv(64, nbr_fea_len=41)"
    text = repr(CGCNN(n_conv=4))
    assert "\n" not in text and "n_conv=4" in text


@pytest.mark.parametrize(
    "how, expected",
    [("mean", [[2.0], [10.0]]), ("sum", [[6.0], [10.0]]), ("max", [[3.0], [10.0]])],
    ids=["mean", "sum", "max"],
)
def test_pooling(how, expected):
    atom_fea = torch.tensor([[1.0], [2.0], [3.0], [10.0]])
    graph_index = torch.tensor([0, 0, 0, 1])
    assert pool(atom_fea, graph_index, 2, how).tolist() == expected


def test_cgcnn_outputs_one_row_per_graph():
    atom_fea, edge_fea, edge_index = random_graph(atom_len=92, edge_len=41)
    batch = GraphBatch(
        atom_fea.float(), edge_fea.float(), edge_index, torch.tensor([0, 0, 0, 1, 1, 2, 2]), 3
    )
    model = CGCNN(n_conv=2, n_h=2, n_out=4)
    assert model(batch).shape == (3, 4)
    assert len(model.hidden) == 2 and len(model.convs) == 2


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling must be"):
        CGCNN(pooling="median")
