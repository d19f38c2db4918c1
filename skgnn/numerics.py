"""Subnormal floats flushed to zero, in every thread that torch computes with.

A float32 below 1.18e-38 is *subnormal*; Intel cores compute with those in
microcode, up to ~100 times slower per operation. Training produced them in
bulk when tiny Gaussian tails met small gradients (3.5x slower epochs on an
Intel Xeon); the tails are now exact zeros (:mod:`skgnn.gaussians`), and
:func:`flush_denormals` covers whatever else a long training can make (optimizer
moments decaying towards zero, saturated gates): with the processor's
flush-to-zero and denormals-are-zero modes set, such values become exact zeros.

``torch.set_flush_denormal`` sets those modes in the calling thread only,
while torch's matmuls and element-wise kernels run in its OpenMP threads; the
context manager sets them in each of those threads too, and restores every
thread's own setting on exit.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache

import torch

_SMALLEST_NORMAL = sys.float_info.min
_HALF = 0.5


def flushes_denormals() -> bool:
    """Whether the calling thread flushes subnormal results to zero."""
    # a subnormal float64 result: the same mode bits govern float32 and float64 arithmetic
    return _SMALLEST_NORMAL * _HALF == 0.0


@contextmanager
def flush_denormals(enabled: bool = True) -> Iterator[bool]:
    """Flush subnormal floats to zero (or not, ``enabled=False``) within the block.

    Applies to the calling thread and to the OpenMP threads torch runs its
    kernels in (``torch.get_num_threads()`` of them); on exit each thread gets
    back the setting it had. Results differ from the exact IEEE ones only
    where a value would have been below 1.18e-38 (float32) or 2.2e-308
    (float64).

    Parameters
    ----------
    enabled : bool, default=True
        Flush within the block; ``False`` makes sure subnormals are kept.

    Yields
    ------
    bool
        Whether the processor supports the mode (``torch.set_flush_denormal``).

    Examples
    --------
    >>> import torch
    >>> from skgnn.numerics import flush_denormals
    >>> tiny = torch.tensor([1e-30])
    >>> with flush_denormals():
    ...     flushed = tiny * 1e-10
    >>> float(flushed), float(tiny * 1e-10) > 0
    (0.0, True)
    """
    previous: dict[int, bool] = {}
    supported: list[bool] = []

    def set_mode() -> None:
        previous[threading.get_ident()] = flushes_denormals()
        supported.append(torch.set_flush_denormal(enabled))

    _in_every_thread(set_mode)
    caller = previous[threading.get_ident()]
    try:
        yield all(supported)
    finally:
        # threads that joined the pool within the block inherited its mode: they get the caller's
        _in_every_thread(
            lambda: torch.set_flush_denormal(previous.get(threading.get_ident(), caller))
        )


def _in_every_thread(function: Callable[[], object]) -> None:
    """Call ``function`` in this thread and in each of torch's OpenMP worker threads."""
    parallel = _openmp_parallel()
    if parallel is None or torch.get_num_threads() == 1:
        function()
        return
    errors: list[BaseException] = []

    def body(_: int | None) -> None:
        try:
            function()
        except BaseException as error:  # an exception must not unwind through C frames
            errors.append(error)

    # libgomp runs the body on the calling thread and the pool's workers, the same threads
    # (in the same order) that torch's and MKL's parallel regions from this thread use
    parallel(_BODY(body), None, torch.get_num_threads(), 0)
    if errors:
        raise errors[0]


_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


@cache
def _openmp_parallel() -> Callable | None:
    """``GOMP_parallel`` of the OpenMP runtime torch runs its threads with, or ``None``.

    GNU, LLVM and Intel OpenMP runtimes all export it; ctypes releases the GIL
    while it runs, so the worker threads can take it to run Python. Other
    packages may load runtimes of their own (scikit-learn's wheels do): torch's
    is the one whose thread count follows ``torch.set_num_threads``.
    """
    if "OpenMP" not in torch.__config__.parallel_info():
        return None
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        for path in _loaded_openmp_libraries():
            try:
                library = ctypes.CDLL(path)
                follows_torch = library.omp_get_max_threads() == threads + 1
                parallel = library.GOMP_parallel
            except (OSError, AttributeError):
                continue
            if follows_torch:
                parallel.argtypes = [_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
                parallel.restype = None
                return parallel
    finally:
        torch.set_num_threads(threads)
    return None


def _loaded_openmp_libraries() -> list[str]:
    """Paths of the OpenMP runtimes mapped into this process (Linux), else their usual names."""
    names = ("libgomp", "libiomp5", "libomp")
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "/" in line}
    except OSError:
        return ["libomp.dylib", "libiomp5.dylib"] if sys.platform == "darwin" else []
    return sorted(p for p in paths if p.rsplit("/", 1)[-1].startswith(names))
