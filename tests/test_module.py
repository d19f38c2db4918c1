import pytest
import torch
from torch import nn

from skgnn import CGCNN, CGConv
from skgnn.edges import EdgeConvolution, EdgeFeatures, edge_plan, softplus_and_sigmoid
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


def randomised(conv: CGConv, seed: int = 0) -> CGConv:
    """Random affine parameters and running statistics: a fresh BatchNorm would hide errors."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for bn in (conv.bn1, conv.bn2):
            n = bn.num_features
            bn.weight.copy_(torch.rand(n, generator=generator, dtype=torch.float64) + 0.5)
            bn.bias.copy_(torch.randn(n, generator=generator, dtype=torch.float64))
            bn.running_mean.copy_(torch.randn(n, generator=generator, dtype=torch.float64))
            bn.running_var.copy_(torch.rand(n, generator=generator, dtype=torch.float64) + 0.5)
    return conv


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_every_gradient_and_running_statistic_matches_the_concatenated_form(training):
    atom_fea, edge_fea, edge_index = random_graph()
    results = []
    for forward in (CGConv.forward, straightforward_cgconv):
        torch.manual_seed(1)
        conv = randomised(CGConv(8, 5).double().train(training))
        x = atom_fea.clone().requires_grad_()
        out = forward(conv, x, edge_fea, edge_index)
        (out * torch.linspace(-1, 2, out.numel(), dtype=out.dtype).view_as(out)).sum().backward()
        grads = [x.grad] + [p.grad for p in conv.parameters()]
        results.append([out, *grads, *conv.buffers()])
    for fast, reference in zip(*results, strict=True):
        torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("batch_statistics", [True, False], ids=["batch", "running"])
def test_edge_convolution_backward_passes_gradcheck(batch_statistics):
    conv = randomised(CGConv(4, 5).double().train(batch_statistics))
    conv.bn1.momentum = 0.0  # gradcheck calls forward many times: keep the statistics still
    atom_fea, edge_fea, edge_index = random_graph(atom_len=4)
    plan = edge_plan(edge_fea, edge_index, len(atom_fea))
    inputs = [atom_fea, conv.fc_full.weight, conv.fc_full.bias, conv.bn1.weight, conv.bn1.bias]

    def edge_half(*tensors):
        return EdgeConvolution.apply(*tensors, plan, conv.bn1, batch_statistics)

    assert torch.autograd.gradcheck(edge_half, [t.detach().requires_grad_() for t in inputs])


def test_edge_features_that_need_a_gradient_get_it_as_in_the_concatenated_form():
    conv = randomised(CGConv(8, 5).double())
    atom_fea, edge_fea, edge_index = random_graph()
    grads = []
    for forward in (CGConv.forward, straightforward_cgconv):
        u = edge_fea.clone().requires_grad_()
        forward(conv, atom_fea, u, edge_index).pow(2).sum().backward()
        grads.append(u.grad)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-10)


def test_features_stored_once_per_distinct_length_give_the_dense_result():
    conv = randomised(CGConv(8, 41).double())
    atom_fea, _, edge_index = random_graph(edge_len=41)
    batch = random_batch()
    expansion = batch.expansion.to(torch.float64)
    lengths = batch.edge_length.double()[torch.arange(30) % 7]  # 7 lengths, each recurring
    unique, index = torch.unique(lengths, return_inverse=True)
    shared = EdgeFeatures(expansion.dense(unique), index)
    assert len(shared.table) == 7
    dense = expansion.dense(lengths)
    results = []
    for edges in (shared, dense):
        torch.manual_seed(0)
        conv.zero_grad()
        out = conv(atom_fea, edge_plan(edges, edge_index, len(atom_fea)), edge_index)
        out.pow(2).sum().backward()
        results.append([out, *(p.grad for p in conv.parameters())])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_one_edge_is_normalised_with_the_running_statistics():
    conv = randomised(CGConv(4, 3).double()).train()
    atom_fea = torch.randn(2, 4, dtype=torch.float64)
    edge_fea = torch.rand(1, 3, dtype=torch.float64)
    edge_index = torch.tensor([[0], [1]])
    before = [b.clone() for b in conv.bn1.buffers()]
    fast = conv(atom_fea, edge_fea, edge_index)
    assert all(torch.equal(a, b) for a, b in zip(before, conv.bn1.buffers(), strict=True))
    conv.bn1.eval()  # the reference: bn1 with its running statistics, bn2 still in training
    reference = straightforward_cgconv(conv, atom_fea, edge_fea, edge_index)
    torch.testing.assert_close(fast, reference, rtol=1e-10, atol=1e-10)


def test_a_plan_without_statistics_is_refused_in_training():
    conv = CGConv(4, 3)
    atom_fea, edge_fea, edge_index = random_graph(atom_len=4, edge_len=3)
    plan = edge_plan(edge_fea.float(), edge_index, len(atom_fea), statistics=False)
    with pytest.raises(ValueError, match="statistics=True"):
        conv(atom_fea.float(), plan, edge_index)


def test_a_plan_without_gradients_cannot_be_differentiated():
    conv = CGConv(4, 3).eval()
    atom_fea, edge_fea, edge_index = random_graph(atom_len=4, edge_len=3)
    plan = edge_plan(edge_fea.float(), edge_index, len(atom_fea), gradients=False)
    out = conv(atom_fea.float().requires_grad_(), plan, edge_index)
    with pytest.raises(RuntimeError, match="gradients=False"):
        out.sum().backward()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
def test_softplus_and_sigmoid_equal_torchs(dtype):
    x = torch.cat([torch.linspace(-100, 100, 2001, dtype=dtype), torch.tensor([1e4], dtype=dtype)])
    softplus, sigmoid = softplus_and_sigmoid(x)
    # absolute: below float resolution next to 1; relative: past torch's threshold of 20
    single = dtype == torch.float32
    tolerance = {"rtol": 1e-6, "atol": 1e-7} if single else {"rtol": 1e-9, "atol": 1e-15}
    torch.testing.assert_close(softplus, nn.functional.softplus(x), **tolerance)
    torch.testing.assert_close(sigmoid, torch.sigmoid(x), **tolerance)
    assert softplus_and_sigmoid(x, sigmoid=False)[1] is None
