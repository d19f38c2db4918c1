"""Evaluation folds the first BatchNorm into the gate layer: tested with random statistics.

Fresh BatchNorm statistics (mean 0, variance 1, weight 1, bias 0) make the
fold an identity up to ``eps``, so a sign or scale error in it would pass; here
every statistic and affine parameter is random.
"""

import pytest
import torch

from skgnn import CGCNN, CGConv
from skgnn.module import batch_norm, edge_rows

from .test_module import random_batch, random_graph, straightforward_cgconv


def _randomise_batchnorms(module: torch.nn.Module, seed: int = 0) -> None:
    generator = torch.Generator().manual_seed(seed)
    for bn in (m for m in module.modules() if isinstance(m, torch.nn.BatchNorm1d)):
        n = bn.num_features
        bn.running_mean.copy_(torch.randn(n, generator=generator) * 2)
        bn.running_var.copy_(torch.rand(n, generator=generator) * 3 + 0.1)
        with torch.no_grad():
            bn.weight.copy_(torch.randn(n, generator=generator))
            bn.bias.copy_(torch.randn(n, generator=generator))


def test_folded_gate_equals_batchnorm_with_running_statistics():
    conv = CGConv(8, 5).double().eval()
    _randomise_batchnorms(conv)
    atom_fea, edge_fea, edge_index = random_graph()
    reference = straightforward_cgconv(conv, atom_fea, edge_fea, edge_index)
    torch.testing.assert_close(
        conv(atom_fea, edge_fea, edge_index), reference, rtol=1e-10, atol=1e-10
    )


def test_window_path_with_running_statistics_equals_the_concatenated_form():
    conv = CGConv(8, 41).double().eval()
    _randomise_batchnorms(conv, seed=1)
    atom_fea, _, edge_index = random_graph(edge_len=41)
    batch = random_batch()
    window = batch.expansion.to(torch.float64).window(batch.edge_length.double())
    fast = conv(atom_fea, edge_rows(window, edge_index, len(atom_fea)), edge_index)
    reference = straightforward_cgconv(conv, atom_fea, batch.edge_fea.double(), edge_index)
    torch.testing.assert_close(fast, reference, rtol=1e-7, atol=1e-7)


def test_whole_model_prediction_with_running_statistics_matches_the_dense_path():
    torch.manual_seed(0)
    model = CGCNN(n_conv=3).eval()
    _randomise_batchnorms(model, seed=2)
    batch = random_batch(n_edges=200)
    with torch.no_grad():
        windowed = model(batch)
    torch.testing.assert_close(windowed, model(batch).detach(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_one_row_is_normalised_with_the_running_statistics(training):
    bn = torch.nn.BatchNorm1d(4).double().train(training)
    _randomise_batchnorms(bn, seed=3)
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    row = torch.randn(1, 4, dtype=torch.float64)
    expected = (row - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(batch_norm(bn, row), expected)
    assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
