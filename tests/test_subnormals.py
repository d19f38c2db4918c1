"""No subnormal floats in training, and flush_denormals() reaching torch's worker threads.

A float32 below 1.18e-38 is subnormal; Intel cores compute with those in
microcode (training was 3.5x slower on an Intel Xeon when the Gaussian tails
produced them in bulk). The training step below runs on real crystals with
flush-to-zero off, so any subnormal the computation makes stays visible.
"""

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from skgnn.module import CGCNN
from skgnn.numerics import flush_denormals, flushes_denormals

TINY = torch.finfo(torch.float32).tiny


def n_subnormal(tensor: torch.Tensor) -> int:
    return int(((tensor != 0) & (tensor.abs() < TINY)).sum())


class SubnormalOutputs(TorchDispatchMode):
    """Counts, per operator, the subnormal values written by every op run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, int] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        # views compute nothing (and may see memory allocated but not yet written)
        if not func.is_view and "empty" not in func.__name__:
            for tensor in tree_flatten(out)[0]:
                if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                    if count := n_subnormal(tensor):
                        self.found[str(func)] = self.found.get(str(func), 0) + count
        return out


@pytest.fixture
def no_flushing():
    torch.set_flush_denormal(False)
    assert not flushes_denormals()


def test_training_steps_on_real_crystals_make_no_subnormal_value(jdft2d_graphs, no_flushing):
    graphs, y = jdft2d_graphs
    targets = torch.tensor((y - y.mean()) / y.std(), dtype=torch.float32)[:, None]
    torch.manual_seed(0)
    model = CGCNN(graphs.n_atom_features, graphs.n_edge_features, n_conv=4, h_fea_len=32)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    activations: dict[str, int] = {}

    def record(module, inputs, output, name=""):
        activations[name] = activations.get(name, 0) + n_subnormal(output)

    for name, module in model.named_modules():
        module.register_forward_hook(lambda m, i, o, name=name: record(m, i, o, name))
    operations = SubnormalOutputs()
    edge_features = gradients = 0
    with operations:
        for rows in np.array_split(np.random.default_rng(0).permutation(len(graphs)), 4):
            batch = graphs.batch(rows)
            edge_features += n_subnormal(batch.edge_fea) + n_subnormal(batch.edge_features.table)
            optimizer.zero_grad()
            loss = torch.nn.functional.smooth_l1_loss(model(batch), targets[rows])
            loss.backward()
            gradients += sum(n_subnormal(p.grad) for p in model.parameters())
            optimizer.step()
    state = sum(n_subnormal(t) for s in optimizer.state.values() for t in s.values())
    assert edge_features == 0
    assert sum(activations.values()) == 0, activations
    assert gradients == 0
    assert state == 0
    assert operations.found == {}  # every op of forward, backward and the optimizer step


def test_flush_denormals_reaches_the_worker_threads_and_restores_them(no_flushing):
    if not torch.set_flush_denormal(False):
        pytest.skip("this processor has no flush-to-zero mode")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        # one element per thread's share at least: torch splits this multiply between threads
        tiny = torch.full((1 << 20,), 1e-20)
        assert n_subnormal(tiny * tiny) == 1 << 20
        with flush_denormals() as supported:
            assert supported and flushes_denormals()
            assert n_subnormal(tiny * tiny) == 0
            assert float((tiny * tiny).abs().max()) == 0.0
            with flush_denormals(False):
                assert n_subnormal(tiny * tiny) == 1 << 20
            assert n_subnormal(tiny * tiny) == 0
        assert not flushes_denormals()
        assert n_subnormal(tiny * tiny) == 1 << 20
    finally:
        torch.set_num_threads(threads)


def test_flush_denormals_restores_a_thread_that_was_flushing(no_flushing):
    if not torch.set_flush_denormal(True):
        pytest.skip("this processor has no flush-to-zero mode")
    try:
        with flush_denormals(False):
            assert not flushes_denormals()
        assert flushes_denormals()
    finally:
        torch.set_flush_denormal(False)


def test_training_flushes_subnormals_in_its_loop_and_restores_the_mode(jdft2d_graphs, no_flushing):
    from skorch.callbacks import Callback

    from skgnn import CGCNNRegressor

    class FlushingSeen(Callback):
        def initialize(self):
            self.seen = []
            return self

        def on_batch_end(self, net, **kwargs):
            self.seen.append(flushes_denormals())

    graphs, y = jdft2d_graphs
    seen = FlushingSeen()
    CGCNNRegressor(max_epochs=1, batch_size=32, callbacks=[seen], random_state=0).fit(
        graphs[:64], y[:64]
    )
    if torch.set_flush_denormal(False):  # the processor has the mode
        assert seen.seen == [True, True]
    assert not flushes_denormals()
