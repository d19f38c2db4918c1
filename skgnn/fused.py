r"""The convolution's gated messages in one pass over the edges, compiled on first use.

In :class:`~skgnn.edges.EdgeConvolution` each edge's pre-activation is the sum
of three table rows, and its message is :math:`\sigma(f) \odot g(s)` summed
per centre atom. Written with torch operators that is a dozen passes over
``(n_edges, n)`` tensors (gather, sigmoid, the softplus' exp and log, its
sigmoid, the product, the sums), each reading and writing memory; here one
C++ loop per centre atom reads the three rows, computes the message and adds
it up, and keeps what the backward needs. The backward's per-edge factors are
one more pass. Both give what the torch form gives to float rounding
(``tests/test_fused.py``).

The kernels are compiled with the C++ compiler that torch's
``cpp_extension`` finds (once per machine, cached by torch), and skgnn falls
back to the torch form where there is none: set ``SKGNN_FUSED=0`` to use the
torch form always, ``SKGNN_FUSED=1`` to fail loudly where compiling fails.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import torch
from torch import Tensor

SOURCE = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <cmath>

// One edge: its pre-activation is r0 + r1 + r2 (three table rows), the first n columns the
// filter f, the next n the core s; adds its message sigmoid(f) * softplus(s) to out and keeps
// sigmoid(f), softplus(s), sigmoid(s) where keep_f is given. __restrict lets the loop vectorise
// (exp and log through glibc's vector math).
template <typename T>
static inline void edge_message(const T* __restrict r0, const T* __restrict r1,
                                const T* __restrict r2, int64_t n, T* __restrict out,
                                T* __restrict keep_f, T* __restrict keep_p,
                                T* __restrict keep_s) {
  for (int64_t k = 0; k < n; ++k) {
    const T f = (r0[k] + r1[k]) + r2[k];
    const T s = (r0[n + k] + r1[n + k]) + r2[n + k];
    const T gate = T(1) / (T(1) + std::exp(std::min(-f, T(80))));
    const T exp_s = std::exp(std::min(s, T(80)));
    const T plus = s > T(80) ? s : std::log(T(1) + exp_s);
    out[k] += gate * plus;
    keep_f[k] = gate;
    keep_p[k] = plus;
    keep_s[k] = exp_s / (T(1) + exp_s);
  }
}

template <typename T>
static inline void edge_message(const T* __restrict r0, const T* __restrict r1,
                                const T* __restrict r2, int64_t n, T* __restrict out) {
  for (int64_t k = 0; k < n; ++k) {
    const T f = (r0[k] + r1[k]) + r2[k];
    const T s = (r0[n + k] + r1[n + k]) + r2[n + k];
    const T gate = T(1) / (T(1) + std::exp(std::min(-f, T(80))));
    const T plus = s > T(80) ? s : std::log(T(1) + std::exp(std::min(s, T(80))));
    out[k] += gate * plus;
  }
}

// The messages summed over the edges of each centre atom a, order[offsets[a] .. offsets[a + 1]).
template <typename T>
static void forward_kernel(const T* table, const int64_t* rows, const int64_t* order,
                           const int64_t* offsets, int64_t n_atoms, int64_t n_edges, int64_t n,
                           T* summed, T* filter, T* softplus, T* sigmoid) {
  at::parallel_for(0, n_atoms, 16, [&](int64_t begin, int64_t end) {
    for (int64_t a = begin; a < end; ++a) {
      T* out = summed + a * n;
      for (int64_t k = 0; k < n; ++k) out[k] = 0;
      const int64_t stop = a + 1 < n_atoms ? offsets[a + 1] : n_edges;
      for (int64_t i = offsets[a]; i < stop; ++i) {
        const int64_t e = order[i];
        const T* r0 = table + rows[3 * e] * 2 * n;
        const T* r1 = table + rows[3 * e + 1] * 2 * n;
        const T* r2 = table + rows[3 * e + 2] * 2 * n;
        if (filter) {
          edge_message(r0, r1, r2, n, out, filter + e * n, softplus + e * n, sigmoid + e * n);
        } else {
          edge_message(r0, r1, r2, n, out);
        }
      }
    }
  });
}

std::vector<at::Tensor> gate_forward(at::Tensor table, at::Tensor rows, at::Tensor order,
                                     at::Tensor offsets, int64_t n_atoms, bool keep) {
  const int64_t n = table.size(1) / 2, n_edges = rows.size(0);
  auto summed = at::empty({n_atoms, n}, table.options());
  at::Tensor filter, softplus, sigmoid;
  if (keep) {
    filter = at::empty({n_edges, n}, table.options());
    softplus = at::empty({n_edges, n}, table.options());
    sigmoid = at::empty({n_edges, n}, table.options());
  }
  AT_DISPATCH_FLOATING_TYPES(table.scalar_type(), "gate_forward", [&] {
    forward_kernel<scalar_t>(
        table.data_ptr<scalar_t>(), rows.data_ptr<int64_t>(), order.data_ptr<int64_t>(),
        offsets.data_ptr<int64_t>(), n_atoms, n_edges, n, summed.data_ptr<scalar_t>(),
        keep ? filter.data_ptr<scalar_t>() : nullptr,
        keep ? softplus.data_ptr<scalar_t>() : nullptr,
        keep ? sigmoid.data_ptr<scalar_t>() : nullptr);
  });
  if (keep) return {summed, filter, softplus, sigmoid};
  return {summed};
}

// d(message)/d(pre-activation), times the centre's incoming gradient g:
// [g * softplus * sigmoid(f) (1 - sigmoid(f)), g * sigmoid(f) * sigmoid(s)] per edge.
template <typename T>
static inline void edge_gradient(const T* __restrict g, const T* __restrict f,
                                 const T* __restrict p, const T* __restrict s, int64_t n,
                                 T* __restrict row) {
  for (int64_t k = 0; k < n; ++k) {
    const T core = g[k] * f[k];
    row[k] = core * p[k] * (T(1) - f[k]);
    row[n + k] = core * s[k];
  }
}

template <typename T>
static void backward_kernel(const T* grad, const int64_t* center, const T* filter,
                            const T* softplus, const T* sigmoid, int64_t n_edges, int64_t n,
                            T* out) {
  at::parallel_for(0, n_edges, 256, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) {
      edge_gradient(grad + center[e] * n, filter + e * n, softplus + e * n, sigmoid + e * n, n,
                    out + e * 2 * n);
    }
  });
}

at::Tensor gate_backward(at::Tensor grad, at::Tensor center, at::Tensor filter,
                         at::Tensor softplus, at::Tensor sigmoid) {
  const int64_t n_edges = filter.size(0), n = filter.size(1);
  auto out = at::empty({n_edges, 2 * n}, filter.options());
  AT_DISPATCH_FLOATING_TYPES(filter.scalar_type(), "gate_backward", [&] {
    backward_kernel<scalar_t>(grad.data_ptr<scalar_t>(), center.data_ptr<int64_t>(),
                              filter.data_ptr<scalar_t>(), softplus.data_ptr<scalar_t>(),
                              sigmoid.data_ptr<scalar_t>(), n_edges, n, out.data_ptr<scalar_t>());
  });
  return out;
}
"""


@cache
def kernels():
    """The compiled module, or ``None`` where it is switched off or cannot be compiled."""
    setting = os.environ.get("SKGNN_FUSED", "auto")
    if setting == "0":
        return None
    name = f"skgnn_fused_gate_{_processor_tag()}"
    try:
        from torch.utils.cpp_extension import load_inline

        with _sole_builder(name):
            return load_inline(
                name=name,
                cpp_sources=SOURCE,
                functions=["gate_forward", "gate_backward"],
                # vectorised exp and log (glibc's libmvec) need -ffast-math; the kernels clamp
                # before exp and meet no NaN or infinity of their own
                extra_cflags=["-O3", "-ffast-math", "-march=native"],
                verbose=False,
            )
    except Exception as error:  # no compiler, no ninja, no headers: the torch form does it
        if setting == "1":
            raise
        warnings.warn(
            f"skgnn's fused convolution kernel could not be compiled ({error}); using the "
            "torch form, which is slower. Set SKGNN_FUSED=0 to silence this.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None


@contextmanager
def _sole_builder(name: str) -> Iterator[None]:
    """Within the block, this process is the only skgnn process building or loading ``name``.

    torch marks a compile in progress with a lock file, and a compile killed midway leaves it
    behind: torch would wait on it for ever. skgnn's own lock is an advisory file lock, which
    the operating system lets go of when its holder dies, so the next process waits exactly as
    long as a compile runs; once it holds that lock, a torch lock still there was left by a
    compile that is gone, and is removed. Where there are no advisory locks (Windows), a torch
    lock counts as left behind once it is ``STALE_LOCK_SECONDS`` old.
    """
    from torch.utils.cpp_extension import _get_build_directory

    build_directory = _get_build_directory(name, verbose=False)
    torch_lock = os.path.join(build_directory, "lock")
    try:
        import fcntl
    except ImportError:
        _remove_left_lock(torch_lock, older_than=STALE_LOCK_SECONDS)
        yield
        return
    with open(os.path.join(build_directory, "skgnn.lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # let go of when the file closes or its holder dies
        _remove_left_lock(torch_lock)
        yield


#: Where there are no advisory locks, a torch build lock older than this (seconds) counts as
#: left by a compile that was killed. A compile takes about a minute alone, 7 minutes on
#: loaded cores.
STALE_LOCK_SECONDS = 900


def _remove_left_lock(lock: str, older_than: float = -math.inf) -> None:
    """Remove torch's build lock file ``lock``, saying so, if it is older than ``older_than`` s."""
    try:
        age = time.time() - os.path.getmtime(lock)
    except OSError:
        return
    if age > older_than:
        warnings.warn(
            f"Removing {lock}, left {age / 60:.0f} minutes ago by a compile of skgnn's fused "
            "kernel that was interrupted.",
            RuntimeWarning,
            stacklevel=2,
        )
        os.remove(lock)


def _processor_tag() -> str:
    """A short hash of this processor's model and flags: -march=native code is cached per CPU."""
    import hashlib
    import platform

    text = platform.processor() + platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            text += "".join(line for line in cpuinfo if line.startswith(("model name", "flags")))
    except OSError:
        pass
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def usable(table: Tensor) -> bool:
    """Whether the fused kernels are compiled and take this tensor (CPU, float32 or float64)."""
    return (
        table.device.type == "cpu"
        and table.dtype in (torch.float32, torch.float64)
        and kernels() is not None
    )


def gate_forward(
    table: Tensor, rows: Tensor, order: Tensor, offsets: Tensor, n_atoms: int, keep: bool
) -> list[Tensor]:
    """``[summed]``, or ``[summed, sigmoid(f), softplus(s), sigmoid(s)]`` with ``keep``."""
    return kernels().gate_forward(
        table.contiguous(),
        rows.contiguous(),
        order.contiguous(),
        offsets.contiguous(),
        n_atoms,
        keep,
    )


def gate_backward(
    grad: Tensor, center: Tensor, filter_: Tensor, softplus: Tensor, sigmoid: Tensor
) -> Tensor:
    """The pre-activations' gradient, ``(n_edges, 2 n)``: filter half, then core half."""
    return kernels().gate_backward(
        grad.contiguous(), center.contiguous(), filter_, softplus, sigmoid
    )
