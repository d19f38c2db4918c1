"""Processes for tests/test_distributed.py: each runs one rank of some fits and saves what it saw.

Each rank joins a gloo group, fits each net through :func:`skgnn.distributed.fit`
(which trains as that rank inside the group), and saves per fit: the
gradients of the first step, the per-epoch training loss, the weights, its
predictions and the pickled fitted estimator.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch
import torch.distributed as dist
from skorch.callbacks import Callback

from skgnn.distributed import fit


class FirstGradients(Callback):
    """Keeps the gradients of the first training step, named as in the bare module."""

    def on_train_begin(self, net, **kwargs) -> None:
        self.gradients_ = None

    def on_grad_computed(self, net, named_parameters, **kwargs) -> None:
        if self.gradients_ is None:
            self.gradients_ = {
                name.removeprefix("module."): parameter.grad.detach().clone()
                for name, parameter in named_parameters
            }


def observed(net, graphs) -> dict:
    """What a test compares between a fit on one process and one on several."""
    gradients = dict(net.callbacks_)["first_gradients"].gradients_
    return {
        "gradients": gradients,
        "train_loss": list(net.history[:, "train_loss"]),
        "state": {k: v.clone() for k, v in net.module_.state_dict().items()},
        "predictions": net.predict(graphs),
        "pickled": pickle.dumps(net),
    }


def run(rank: int, world_size: int, rendezvous: str, folder: str, jobs: list) -> None:
    """Fit each ``(net, graphs, y, sample_weight, synchronize_batch_norm)`` of ``jobs``."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world_size)
    try:
        results = []
        for net, graphs, y, sample_weight, synchronize in jobs:
            fit(net, graphs, y, sample_weight=sample_weight, synchronize_batch_norm=synchronize)
            results.append(observed(net, graphs))
        torch.save(results, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def run_ranks(jobs: list, folder: Path, world_size: int = 2) -> list[list[dict]]:
    """Run ``jobs`` on ``world_size`` spawned processes; ``[rank][job]`` results."""
    torch.multiprocessing.start_processes(
        run, args=(world_size, f"file://{folder / 'rendezvous'}", str(folder), jobs),
        nprocs=world_size, join=True, start_method="spawn",
    )  # fmt: skip
    return [torch.load(folder / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
