"""Value tests for skgnn/edges.py against hand-worked cases or the plain form
(mutation testing, issue #11)."""

import torch
from torch import nn

from skgnn import CGConv
from skgnn.edges import Segments, edge_plan, segment_sum, update_running_statistics

from .test_module import random_graph, straightforward_cgconv


def test_segment_sum_by_hand_and_its_gradient_counts_each_use_once():
    rows = torch.tensor([[1.0, 2.0], [10.0, 20.0], [100.0, 200.0]], requires_grad=True)
    segments = Segments(torch.tensor([0, 0, 1, 2, 0]), torch.tensor([0, 2]))
    out = segment_sum(rows, segments)
    assert out.tolist() == [[2.0, 4.0], [111.0, 222.0]]
    out.sum().backward()
    assert rows.grad.tolist() == [[3.0, 3.0], [1.0, 1.0], [1.0, 1.0]]


def test_a_plan_without_gradients_has_no_backward_rows_nor_statistics():
    atom_fea, edge_fea, edge_index = random_graph(atom_len=4, edge_len=3)
    plan = edge_plan(edge_fea, edge_index, len(atom_fea), gradients=False)
    assert plan.by_row is None and plan.moments is None
    plan = edge_plan(edge_fea, edge_index, len(atom_fea), statistics=False)
    assert plan.by_row is not None and plan.moments is None
    plan = edge_plan(edge_fea, edge_index, len(atom_fea))
    assert plan.moments is not None and plan.n_edges == 30


def test_plan_rows_by_hand():
    edge_index = torch.tensor([[0, 1, 1], [1, 0, 2]])
    edges = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)
    plan = edge_plan(edges, edge_index, 3)
    # row 2a: atom a as centre, 2a + 1: as neighbour, 2 * 3 + r: feature row r
    assert plan.rows.tolist() == [[0, 3, 6], [2, 1, 7], [2, 5, 8]]
    assert plan.bag_offsets.tolist() == [0, 3, 6]
    assert plan.by_center.order.tolist() == [0, 1, 2] and plan.by_center.offsets.tolist() == [
        0,
        1,
        3,
    ]
    moments = plan.moments
    assert moments.counts.tolist() == [[1.0, 1.0], [2.0, 1.0], [0.0, 1.0]]
    torch.testing.assert_close(
        moments.feature_mean, torch.tensor([2 / 3, 2 / 3], dtype=torch.float64)
    )
    centred = edges - edges.mean(0)
    torch.testing.assert_close(moments.feature_covariance, centred.T @ centred)
    # atom 1 is the centre of edges 1 and 2, the neighbour of edge 0
    torch.testing.assert_close(moments.feature_by_atom[2], centred[1] + centred[2])
    torch.testing.assert_close(moments.feature_by_atom[3], centred[0])


def test_cumulative_running_statistics_as_batchnorm_momentum_none():
    atom_fea, edge_fea, edge_index = random_graph(atom_len=4, edge_len=3)
    convs = []
    for _ in range(2):
        torch.manual_seed(0)
        conv = CGConv(4, 3).double().train()
        conv.bn1.momentum = None
        conv.bn2.momentum = None
        convs.append(conv)
    for step in range(3):
        x = atom_fea * (step + 1)
        convs[0](x, edge_fea, edge_index)
        straightforward_cgconv(convs[1], x, edge_fea, edge_index)
    for a, b in zip(convs[0].buffers(), convs[1].buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert int(convs[0].bn1.num_batches_tracked) == 3


def test_update_running_statistics_by_hand():
    bn = nn.BatchNorm1d(2).double()
    update_running_statistics(
        bn,
        torch.tensor([1.0, 2.0], dtype=torch.float64),
        torch.tensor([3.0, 4.0], dtype=torch.float64),
        4,
    )
    # momentum 0.1, unbiased variance var * n / (n - 1)
    torch.testing.assert_close(bn.running_mean, torch.tensor([0.1, 0.2], dtype=torch.float64))
    torch.testing.assert_close(
        bn.running_var, torch.tensor([0.9 + 0.4, 0.9 + 0.1 * 16 / 3], dtype=torch.float64)
    )
    assert int(bn.num_batches_tracked) == 1
    untracked = nn.BatchNorm1d(2, track_running_stats=False)
    update_running_statistics(untracked, torch.zeros(2), torch.ones(2), 4)  # nothing to update
    assert untracked.running_mean is None


def test_the_convolution_raises_no_warning():
    import warnings

    atom_fea, edge_fea, edge_index = random_graph(atom_len=4, edge_len=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. an ``out=`` tensor of the wrong shape being resized
        for training in (True, False):
            conv = CGConv(4, 3).double().train(training)
            x = atom_fea.clone().requires_grad_()
            conv(x, edge_fea, edge_index).sum().backward()
        with torch.no_grad():
            conv(atom_fea, edge_fea, edge_index)  # eval


def test_a_plan_without_gradients_refuses_backward_with_the_exact_message():
    import pytest

    conv = CGConv(4, 3).double().eval()
    atom_fea, edge_fea, edge_index = random_graph(atom_len=4, edge_len=3)
    plan = edge_plan(edge_fea, edge_index, len(atom_fea), gradients=False)
    out = conv(atom_fea.clone().requires_grad_(), plan, edge_index)
    with pytest.raises(RuntimeError) as error:
        out.sum().backward()
    assert str(error.value) == "The EdgePlan was built with gradients=False."


def test_softplus_and_sigmoid_of_nothing():
    from skgnn.edges import softplus_and_sigmoid

    softplus, sigmoid = softplus_and_sigmoid(torch.empty(0))
    assert softplus.shape == (0,) and sigmoid.shape == (0,)
