import pytest
import torch
from torch import nn

from skgnn import CGCNN, CGConv
from skgnn.gaussians import GaussianExpansion
from skgnn.graphs import GraphBatch
from skgnn.module import edge_rows, pool


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


def random_batch(n_edges=30, seed=0) -> GraphBatch:
    atom_fea, _, edge_index = random_graph(n_edges=n_edges, atom_len=92, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    return GraphBatch(
        atom_fea=atom_fea.float(),
        edge_length=1.0 + 6.0 * torch.rand(n_edges, generator=generator),
        edge_index=edge_index,
        graph_index=torch.tensor([0, 0, 0, 1, 1, 2, 2]),
        n_graphs=3,
        expansion=GaussianExpansion(torch.arange(41) * 0.2, 0.2),
    )


def test_cgcnn_outputs_one_row_per_graph():
    model = CGCNN(n_conv=2, n_h=2, n_out=4)
    assert model(random_batch()).shape == (3, 4)
    assert len(model.hidden) == 2 and len(model.convs) == 2


def test_window_convolution_equals_the_concatenated_form():
    conv = CGConv(8, 41).double().eval()
    atom_fea, _, edge_index = random_graph(edge_len=41)
    batch = random_batch()
    window = batch.expansion.to(torch.float64).window(batch.edge_length.double())
    fast = conv(atom_fea, edge_rows(window, edge_index, len(atom_fea)), edge_index)
    reference = straightforward_cgconv(conv, atom_fea, batch.edge_fea.double(), edge_index)
    torch.testing.assert_close(fast, reference, rtol=1e-7, atol=1e-7)


def test_prediction_without_gradients_matches_the_dense_path():
    torch.manual_seed(0)
    model = CGCNN(n_conv=3).eval()
    batch = random_batch(n_edges=200)
    with torch.no_grad():
        windowed = model(batch)
    dense = model(batch)
    assert dense.requires_grad and not windowed.requires_grad
    torch.testing.assert_close(windowed, dense.detach(), rtol=1e-5, atol=1e-6)


def test_unknown_pooling_is_refused():
    with pytest.raises(ValueError, match="The 'pooling' parameter of CGCNN must be"):
        CGCNN(pooling="median")
