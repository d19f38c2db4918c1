"""Determinism, persistence and resuming: what a long benchmark relies on."""

import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from sklearn.pipeline import make_pipeline
from skorch.callbacks import Callback, Checkpoint, LoadInitState

from skgnn import CrystalGraphTransformer

from .conftest import tiny_regressor


def test_reload_in_a_fresh_process_predicts_identically(jdft2d, tmp_path):
    structures, y = jdft2d
    pipe = make_pipeline(CrystalGraphTransformer(), tiny_regressor()).fit(structures, y)
    (tmp_path / "pipe.pkl").write_bytes(pickle.dumps(pipe))
    (tmp_path / "X.pkl").write_bytes(pickle.dumps(list(structures)))
    script = textwrap.dedent(
        f"""
        import pickle, numpy as np
        pipe = pickle.load(open({str(tmp_path / "pipe.pkl")!r}, "rb"))
        X = pickle.load(open({str(tmp_path / "X.pkl")!r}, "rb"))
        np.save({str(tmp_path / "pred.npy")!r}, pipe.predict(X))
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "pred.npy"), pipe.predict(structures))


def test_same_seed_is_bit_identical_through_the_pipeline(jdft2d):
    structures, y = jdft2d
    runs = [
        make_pipeline(CrystalGraphTransformer(), tiny_regressor(random_state=11))
        .fit(structures, y)
        .predict(structures)
        for _ in range(2)
    ]
    assert runs[0].tobytes() == runs[1].tobytes()


def test_seeded_fit_leaves_the_global_torch_rng_alone(jdft2d_graphs):
    graphs, y = jdft2d_graphs
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    tiny_regressor(max_epochs=1, random_state=5).fit(graphs, y)
    assert torch.equal(torch.rand(3), expected)


class _Malicious:
    def __reduce__(self):
        return (print, ("arbitrary code ran",))


def test_loading_weights_refuses_pickled_code(jdft2d_graphs, tmp_path):
    graphs, y = jdft2d_graphs
    model = tiny_regressor(max_epochs=1).fit(graphs, y)
    torch.save({"payload": _Malicious()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        model.load_params(f_params=tmp_path / "evil.pt")


class _InterruptAfter(Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_epoch_end(self, net, **kwargs):
        if len(net.history) >= self.epochs:
            raise KeyboardInterrupt  # what Ctrl-C does mid-run; skorch stops cleanly


def test_interrupted_training_continues_from_its_checkpoint(jdft2d_graphs, tmp_path):
    graphs, y = jdft2d_graphs
    checkpoint = Checkpoint(dirname=str(tmp_path), monitor=None)
    first = tiny_regressor(max_epochs=10, callbacks=[checkpoint, _InterruptAfter(2)])
    first.fit(graphs, y)
    assert len(first.history) == 2  # stopped early, checkpoint written

    resumed = tiny_regressor(max_epochs=3, callbacks=[checkpoint, LoadInitState(checkpoint)])
    resumed.fit(graphs, y)
    assert len(resumed.history) == 2 + 3
    assert resumed.history[:2, "train_loss"] == first.history[:, "train_loss"]
