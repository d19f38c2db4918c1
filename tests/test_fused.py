"""The fused C++ kernels of the gated messages (skgnn.fused) against the torch form."""

import os
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from skgnn import CGConv, fused
from skgnn.module import CGCNN

from .test_module import random_graph


@pytest.fixture
def torch_form(monkeypatch):
    """Within the test, the convolutions take the torch form."""

    def use_torch_form():
        monkeypatch.setattr(fused, "usable", lambda table: False)

    return use_torch_form


@pytest.fixture
def kernels():
    """The compiled kernels; a test comparing them with the torch form needs them."""
    if fused.kernels() is None:
        pytest.skip("no fused kernels on this machine (test_the_kernels_compile_here says why)")
    return fused.kernels()


def test_the_kernels_compile_here():
    if fused.kernels() is None and not os.environ.get("CI"):
        pytest.skip("no C++ compiler for torch.utils.cpp_extension on this machine")
    assert fused.kernels() is not None  # in CI the fused path must be the one tested


def _step(forward, training: bool):
    """Output, gradients and buffers of one forward (and backward) from seeded weights."""
    torch.manual_seed(0)
    model, out = forward(training)
    if not training:
        return out.detach(), {}, {}
    out.pow(2).mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return out.detach(), grads, {name: b.clone() for name, b in model.named_buffers()}


def _assert_same(fast, reference, **tolerance) -> None:
    torch.testing.assert_close(fast[0], reference[0], **tolerance)
    for got, expected in zip(fast[1:], reference[1:], strict=True):
        assert got.keys() == expected.keys()
        for name in expected:
            torch.testing.assert_close(got[name], expected[name], **tolerance, msg=name)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_fused_cgcnn_equals_the_torch_form_on_real_crystals(
    kernels, jdft2d_graphs, torch_form, training
):
    graphs = jdft2d_graphs[0][:48]
    batch = graphs.batch(np.arange(len(graphs)))

    def forward(training):
        model = CGCNN(graphs.n_atom_features, graphs.n_edge_features, 16, 3, 16).train(training)
        return model, model(batch)

    fast = _step(forward, training)
    torch_form()
    _assert_same(fast, _step(forward, training), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_fused_convolution_equals_the_torch_form_in_float64(
    kernels, torch_form, monkeypatch, training
):
    atom_fea, edge_fea, edge_index = random_graph(n_atoms=9, n_edges=50)
    calls = []
    for name in ("gate_forward", "gate_backward"):
        kernel = getattr(fused, name)
        monkeypatch.setattr(fused, name, lambda *a, _k=kernel, _n=name, **kw: (
            calls.append(_n), _k(*a, **kw))[1])  # fmt: skip

    def forward(training):
        conv = CGConv(8, 5).double().train(training)
        return conv, conv(atom_fea, edge_fea, edge_index)

    fast = _step(forward, training)
    assert calls == (["gate_forward", "gate_backward"] if training else ["gate_forward"])
    torch_form()
    _assert_same(fast, _step(forward, training), rtol=1e-12, atol=1e-12)


def test_saturated_gates_and_cores_equal_the_torch_form(kernels, torch_form):
    """Pre-activations far past ±80: the softplus is s itself, the gate 0 or 1, no NaN."""
    from skgnn.edges import _gated_messages, _gated_messages_backward, edge_plan

    atom_fea, edge_fea, edge_index = random_graph(n_atoms=6, n_edges=40)
    plan = edge_plan(edge_fea, edge_index, 6)
    n_rows = 2 * 6 + len(plan.features.table)
    table = torch.linspace(-300, 300, n_rows * 8, dtype=torch.float64).view(n_rows, 8)
    table = table[torch.randperm(n_rows, generator=torch.Generator().manual_seed(0))]
    grad = torch.randn(6, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fast = _gated_messages(table, plan)
    fast_grad = _gated_messages_backward(grad, plan, *fast[1:])
    torch_form()
    reference = _gated_messages(table, plan)
    torch.testing.assert_close(fast, reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(
        fast_grad, _gated_messages_backward(grad, plan, *reference[1:]), rtol=1e-12, atol=1e-12
    )
    assert torch.isfinite(fast[0]).all()


@pytest.fixture
def fresh_kernels():
    """``fused.kernels`` recompiled (from torch's cache) before and after the test."""
    fused.kernels.cache_clear()
    yield
    fused.kernels.cache_clear()


def test_without_a_compiler_the_torch_form_is_used_with_a_warning(monkeypatch, fresh_kernels):
    import torch.utils.cpp_extension

    def no_compiler(*args, **kwargs):
        raise RuntimeError("no c++ here")

    monkeypatch.setattr(torch.utils.cpp_extension, "load_inline", no_compiler)
    monkeypatch.setenv("SKGNN_FUSED", "auto")
    with pytest.warns(RuntimeWarning, match=r"could not be compiled \(no c\+\+ here\)"):
        assert fused.kernels() is None
    fused.kernels.cache_clear()
    monkeypatch.setenv("SKGNN_FUSED", "1")
    with pytest.raises(RuntimeError, match="no c\\+\\+ here"):
        fused.kernels()
    fused.kernels.cache_clear()
    monkeypatch.setenv("SKGNN_FUSED", "0")
    assert fused.kernels() is None  # switched off: not even tried


def _build_locks(tmp_path, monkeypatch, name="skgnn_test_lock"):
    """torch's build lock and skgnn's lock for the kernel ``name``, under ``tmp_path``."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    from torch.utils.cpp_extension import _get_build_directory

    directory = _get_build_directory(name, verbose=False)
    return os.path.join(directory, "lock"), os.path.join(directory, "skgnn.lock")


def test_a_build_lock_left_by_a_killed_compile_is_removed_at_once(tmp_path, monkeypatch):
    """A compile killed midway leaves torch's lock behind, and torch would wait on it for ever.

    The compiling process here takes skgnn's lock, makes torch's, and is killed: the next
    process gets skgnn's lock at once (the system let go of it) and removes torch's, however
    fresh it is.
    """
    torch_lock, _ = _build_locks(tmp_path, monkeypatch)
    compiler = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time; from skgnn import fused\n"
            "with fused._sole_builder('skgnn_test_lock'):\n"
            "    open(sys.argv[1], 'w').close(); print('compiling', flush=True); time.sleep(60)",
            torch_lock,
        ],
        env={**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert compiler.stdout.readline() == "compiling\n"
    compiler.kill()
    compiler.wait()
    assert os.path.exists(torch_lock)
    with pytest.warns(RuntimeWarning, match="interrupted"):
        with fused._sole_builder("skgnn_test_lock"):
            assert not os.path.exists(torch_lock)


def test_a_process_waits_while_another_builds(tmp_path, monkeypatch):
    """While one process compiles (holds skgnn's lock), the next waits, then finds no torch lock."""
    import fcntl

    torch_lock, skgnn_lock = _build_locks(tmp_path, monkeypatch)
    entered = threading.Event()

    def load():
        with fused._sole_builder("skgnn_test_lock"):
            entered.set()

    with open(skgnn_lock, "a") as compiling:  # another open file: another holder, as a process
        fcntl.flock(compiling, fcntl.LOCK_EX)
        open(torch_lock, "w").close()
        waiter = threading.Thread(target=load)
        waiter.start()
        assert not entered.wait(0.5)  # waits on the compile, and leaves its lock alone
        assert os.path.exists(torch_lock)
        os.remove(torch_lock)  # the compile ends: torch removes its lock, then skgnn lets go
    waiter.join(10)
    assert entered.is_set()


def test_without_advisory_locks_only_an_old_build_lock_is_removed(tmp_path, monkeypatch):
    """Where fcntl is missing (Windows), a torch lock counts as left behind by its age."""
    torch_lock, _ = _build_locks(tmp_path, monkeypatch)
    monkeypatch.setitem(sys.modules, "fcntl", None)  # import fcntl raises ImportError
    open(torch_lock, "w").close()
    with fused._sole_builder("skgnn_test_lock"):  # just made: a compile may hold it
        assert os.path.exists(torch_lock)
    old = os.path.getmtime(torch_lock) - fused.STALE_LOCK_SECONDS - 60
    os.utime(torch_lock, (old, old))
    with pytest.warns(RuntimeWarning, match="16 minutes ago .* interrupted"):
        with fused._sole_builder("skgnn_test_lock"):
            assert not os.path.exists(torch_lock)
    with fused._sole_builder("skgnn_test_lock"):  # no lock: nothing to do
        pass
