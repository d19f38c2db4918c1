"""Train one CGCNN estimator on several processes (CPU cores or GPUs) with torch's DDP.

On one machine, :func:`fit` starts the processes itself and returns the
fitted estimator::

    from skgnn.distributed import fit
    fit(CGCNNRegressor(batch_size=128), graphs, y, n_processes=4)

On several GPUs or machines, start a script that calls ``fit(net, graphs, y)``
with torchrun; each process then trains as one rank of the job::

    torchrun --nproc_per_node 4 train.py
    torchrun --nnodes 2 --nproc_per_node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29500 train.py

What a fit on ``P`` processes computes is what one process computes:

- ``batch_size`` is the global batch: each process takes every ``P``-th graph
  of it (:mod:`skgnn.sharding`), in the order the first process draws, which
  is the order a single process draws from the same random state;
- each process's loss is weighted by its share of the batch's rows (or of
  its ``sample_weight``) before DDP averages the gradients, so the update is
  the gradient of the whole batch's loss, even when shards differ in size;
- BatchNorm normalises with the statistics of the whole batch
  (:mod:`skgnn.synced_batchnorm`); ``synchronize_batch_norm=False`` lets each
  process normalise with its own shard instead, as plain DDP would;
- the history records the whole batch's loss; a validation share, if any, is
  scored whole by every process.

So one step matches a single-process step to float rounding, and a whole fit
with the same ``random_state`` follows the single-process loss curve
(``benchmarks/results/distributed``). The fitted estimator is a plain
:class:`~skgnn.CGCNNRegressor` or :class:`~skgnn.CGCNNClassifier`, the same
on every process; it pickles and predicts in one process.

Why DDP rather than skorch's ``AccelerateMixin``: the mixin needs another
estimator class and keeps the module wrapped by ``accelerator.prepare`` for
the net's life, while the fit contract lives on the module; torch's
``SyncBatchNorm``, the BatchNorm it would synchronise with, runs on GPUs
only; and the fit path here only needs the module wrapped while it trains
(:class:`DistributedTraining`, a skorch callback).
"""

from __future__ import annotations

import inspect
import os
import pickle
import tempfile
from pathlib import Path

import torch
import torch.distributed as dist
from skorch.callbacks import Callback
from torch.nn.parallel import DistributedDataParallel

from .sharding import sharded_loader
from .synced_batchnorm import restore_batch_norms, synchronize_batch_norms

__all__ = ["DistributedTraining", "fit"]

_CALLBACK = "distributed_training"


class _DistributedModule(DistributedDataParallel):
    """DDP that answers for the wrapped module's attributes and scales its output's gradient.

    The gradient of the output is that of the loss, so scaling it scales this
    process's loss (by ``loss_scale``) without touching the criterion.
    """

    loss_scale = 1.0

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        scale = self.loss_scale
        if scale != 1.0 and isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(lambda grad: grad * scale)
        return out

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("module")
            if inner is None:
                raise
            return getattr(inner, name)


class DistributedTraining(Callback):
    """skorch callback: the module trains under DDP, one shard of each batch per process.

    :func:`fit` adds it, with ``iterator_train=sharded_loader``, for the
    fit's duration; use those two directly only inside a process group.

    Parameters
    ----------
    synchronize_batch_norm : bool, default=True
        Normalise with the statistics of the whole batch (``True``) or of
        each process's shard (``False``).
    """

    def __init__(self, synchronize_batch_norm: bool = True) -> None:
        self.synchronize_batch_norm = synchronize_batch_norm

    def on_train_begin(self, net, X=None, y=None, **kwargs) -> None:
        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError(
                "DistributedTraining needs a torch.distributed process group; "
                "use skgnn.distributed.fit, which starts one."
            )
        module = net.module_
        if self.synchronize_batch_norm:
            synchronize_batch_norms(module)
        device = torch.device(net.device)
        device_ids = None
        if device.type == "cuda":
            device_ids = [device.index if device.index is not None else torch.cuda.current_device()]
        net.module_ = _DistributedModule(
            module, device_ids=device_ids, **_buffer_sync(not self.synchronize_batch_norm)
        )
        self.world_size_ = dist.get_world_size()
        self.share_ = 1.0 / self.world_size_

    def on_batch_begin(self, net, batch=None, training=False, **kwargs) -> None:
        if not training:
            return
        graphs = batch[0]
        weight = getattr(graphs, "sample_weight", None)
        local = float(weight.sum()) if weight is not None else float(len(graphs))
        total = float(_summed(net, [local])[0])
        self.share_ = local / total
        net.module_.loss_scale = self.world_size_ * self.share_

    def on_batch_end(self, net, batch=None, training=False, loss=None, **kwargs) -> None:
        if not training:
            return
        # the whole batch's loss and size, as one process would have recorded them
        batch_loss, batch_size = _summed(net, [self.share_ * loss.detach().item(), len(batch[0])])
        net.history.record_batch("train_loss", float(batch_loss))
        net.history.record_batch("train_batch_size", int(round(float(batch_size))))

    def on_train_end(self, net, X=None, y=None, **kwargs) -> None:
        wrapped = net.module_
        if isinstance(wrapped, _DistributedModule):
            net.module_ = restore_batch_norms(wrapped.module)


def _buffer_sync(each_forward: bool) -> dict:
    """DDP's option to broadcast the first process's buffers before each forward pass.

    Needed when BatchNorm statistics are per shard (so that every process
    validates with the same running statistics); with synchronised
    statistics the running ones are equal everywhere already. torch 2.13
    renamed the option.
    """
    options = inspect.signature(DistributedDataParallel.__init__).parameters
    name = "forward_sync_buffers" if "forward_sync_buffers" in options else "broadcast_buffers"
    return {name: each_forward}


def _summed(net, values: list[float]) -> torch.Tensor:
    """``values`` summed over the processes (on the net's device: NCCL reduces there only)."""
    tensor = torch.tensor(values, dtype=torch.float64, device=net.device)
    dist.all_reduce(tensor)
    return tensor.cpu()


def fit(estimator, X, y, *, sample_weight=None, n_processes: int | None = None,
        backend: str | None = None, synchronize_batch_norm: bool = True, **fit_params):  # fmt: skip
    """Fit ``estimator`` on ``n_processes`` processes sharing each batch; return it fitted.

    Inside a process group (started by torchrun, or already initialised) this
    process trains as its rank and ``estimator`` is fitted in place, the same
    on every rank. Otherwise ``n_processes`` processes are started on this
    machine (each with ``torch.get_num_threads() // n_processes`` threads, or
    one GPU each), and ``estimator`` takes the fitted state of the first.

    Parameters
    ----------
    estimator : CGCNNRegressor or CGCNNClassifier
    X : CrystalGraphs
    y : array-like
    sample_weight : array-like or None, default=None
    n_processes : int or None, default=None
        Processes to start; ``None``: one per GPU with ``device="cuda"``, else 2.
        Inside a process group it must be ``None`` or the group's size.
    backend : str or None, default=None
        ``torch.distributed`` backend: ``"nccl"`` on GPUs, ``"gloo"`` otherwise.
    synchronize_batch_norm : bool, default=True
        See :class:`DistributedTraining`.
    **fit_params
        Passed to ``estimator.fit``.

    Returns
    -------
    estimator
    """
    if n_processes is not None and n_processes < 1:
        raise ValueError(f"n_processes must be a positive int; got {n_processes}.")
    # the estimator's own checks, before any process starts or anything changes
    graphs, y, sample_weight = estimator._check_fit_input(X, y, sample_weight)
    args = (estimator, graphs, y, sample_weight, synchronize_batch_norm, fit_params)
    if dist.is_available() and dist.is_initialized():
        if n_processes not in (None, dist.get_world_size()):
            raise ValueError(
                f"n_processes={n_processes} but this process group has "
                f"{dist.get_world_size()} processes; pass None inside a group."
            )
        return _fit_in_group(*args)
    backend = backend or ("nccl" if torch.device(estimator.device).type == "cuda" else "gloo")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group(backend)
        try:
            return _fit_in_group(*args)
        finally:
            dist.destroy_process_group()
    if n_processes is None:
        n_processes = torch.cuda.device_count() if backend == "nccl" else 2
    if len(graphs) < n_processes:
        raise ValueError(
            f"{len(graphs)} structures cannot be shared by {n_processes} processes; "
            "each needs at least one in every batch."
        )
    fitted = _spawn(args, n_processes, backend)
    estimator.__dict__.clear()
    estimator.__dict__.update(fitted.__dict__)
    return estimator


def _fit_in_group(estimator, graphs, y, sample_weight, synchronize_batch_norm, fit_params):
    """Fit with the sharded loader and the DDP callback, then take both off again."""
    callbacks = estimator.callbacks
    if callbacks == "disable":
        raise ValueError("Distributed training runs through callbacks; callbacks='disable' "
                         "turns them off.")  # fmt: skip
    training = DistributedTraining(synchronize_batch_norm)
    iterator_train = estimator.iterator_train
    estimator.iterator_train = sharded_loader
    estimator.callbacks = [*(callbacks or []), (_CALLBACK, training)]
    try:
        if estimator.initialized_:  # a warm start does not initialise the callbacks again
            estimator.initialize_callbacks()
        estimator.fit(graphs, y, sample_weight=sample_weight, **fit_params)
    finally:
        estimator.iterator_train = iterator_train
        estimator.callbacks = callbacks
        if hasattr(estimator, "callbacks_"):
            estimator.callbacks_ = [(n, cb) for n, cb in estimator.callbacks_ if cb is not training]
    return estimator


def _spawn(args: tuple, n_processes: int, backend: str):
    """Run :func:`_fit_in_group` on ``n_processes`` new processes; the first one's result."""
    threads = max(1, torch.get_num_threads() // n_processes)
    with tempfile.TemporaryDirectory(prefix="skgnn-ddp-") as folder:
        result = Path(folder) / "fitted.pkl"
        rendezvous = f"file://{Path(folder) / 'rendezvous'}"
        torch.multiprocessing.start_processes(
            _process, args=(n_processes, rendezvous, backend, threads, args, str(result)),
            nprocs=n_processes, join=True, start_method="spawn",
        )  # fmt: skip
        with open(result, "rb") as file:
            return pickle.load(file)


def _process(rank: int, world_size: int, rendezvous: str, backend: str, threads: int,
             args: tuple, result: str) -> None:  # fmt: skip
    """One spawned process: join the group, train, and (the first) save the fitted estimator."""
    torch.set_num_threads(threads)
    if backend == "nccl":
        torch.cuda.set_device(rank)
    dist.init_process_group(backend, init_method=rendezvous, rank=rank, world_size=world_size)
    try:
        estimator = _fit_in_group(*args)
        if rank == 0:
            with open(result, "wb") as file:
                pickle.dump(estimator, file)
    finally:
        dist.destroy_process_group()
