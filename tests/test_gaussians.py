import math

import pytest
import torch

from skgnn.gaussians import TAIL_WIDTHS, GaussianExpansion
from skgnn.graphs import GraphBatch


@pytest.mark.parametrize("width", [0.1, 0.2, 0.5], ids=["narrow", "cgcnn", "wide"])
def test_window_times_weights_equals_the_dense_product(width):
    expansion = GaussianExpansion(torch.arange(41, dtype=torch.float64) * 0.2, width)
    # lengths below the first centre and past the last one (a grown cutoff) included
    length = torch.cat([torch.linspace(0.0, 12.0, 997, dtype=torch.float64), torch.tensor([8.1])])
    weight = torch.randn(41, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    window = expansion.window(length)
    windowed = torch.nn.functional.embedding_bag(
        window.index, weight, per_sample_weights=window.value, mode="sum"
    )
    torch.testing.assert_close(windowed, expansion.dense(length) @ weight, rtol=0, atol=1e-8)


def test_window_size_follows_the_width():
    centers = torch.arange(41) * 0.2
    assert GaussianExpansion(centers, 0.2).window_size == 11
    assert GaussianExpansion(centers, 0.1).window_size == 7
    assert GaussianExpansion(centers, 2.0).window_size == 41


def test_uneven_centres_keep_every_gaussian():
    centers = torch.tensor([0.0, 0.5, 0.7, 2.0, 4.0])
    expansion = GaussianExpansion(centers, 0.2)
    assert expansion.window_size == 5
    window = expansion.window(torch.tensor([0.6, 3.0]))
    torch.testing.assert_close(window.value, expansion.dense(torch.tensor([0.6, 3.0])))


def test_tails_beyond_the_window_are_exact_zeros():
    expansion = GaussianExpansion(torch.arange(41) * 0.2, 0.2)
    length = torch.linspace(0.0, 12.0, 4001)
    dense = expansion.dense(length)
    offset = (length[:, None] - expansion.centers).abs()
    tail = offset > TAIL_WIDTHS * 0.2 * (1 + 1e-6)
    assert torch.all(dense[tail] == 0)
    assert torch.all(dense[offset < TAIL_WIDTHS * 0.2 * (1 - 1e-6)] > 0)
    # nothing between zero and the smallest kept value, e^-20.25 = 1.6e-9: no subnormals
    assert dense[dense > 0].min() >= math.exp(-(TAIL_WIDTHS**2)) * (1 - 1e-5)


def test_training_and_prediction_see_the_same_edge_features():
    expansion = GaussianExpansion(torch.arange(41) * 0.2, 0.2)
    length = torch.cat([torch.linspace(0.5, 9.0, 999), torch.tensor([8.1, 3.0, 3.1])])
    window = expansion.window(length)
    from_window = torch.zeros(len(length), 41).scatter_(1, window.index, window.value)
    assert torch.equal(from_window, expansion.dense(length))


def test_a_batch_expands_each_distinct_length_once():
    lengths = torch.tensor([2.5, 3.1, 2.5, 4.0, 3.1, 2.5])
    batch = GraphBatch(
        atom_fea=torch.zeros(2, 3),
        edge_length=lengths,
        edge_index=torch.zeros(2, 6, dtype=torch.int64),
        graph_index=torch.zeros(2, dtype=torch.int64),
        n_graphs=1,
        expansion=GaussianExpansion(torch.arange(41) * 0.2, 0.2),
    )
    features = batch.edge_features
    assert features.table.shape == (3, 41)
    assert torch.equal(features.table[features.index], batch.edge_fea)
