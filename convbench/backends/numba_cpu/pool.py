"""numba-cpu pooling: the compiled kernels of _numba_pool_kernels, serial on small problems."""
from __future__ import annotations

import numpy as np

from convbench.lazy import LazyModule
from convbench.ops.pool import avg_divisors

KERNELS = LazyModule("convbench.backends._numba_pool_kernels")

#: Below this many window visits a pooling kernel runs on the calling thread alone: waking the
#: thread pool costs more than such a problem takes.
SERIAL_POOL_WORK = 1 << 21


def _geometry(p):
    # the kernels need where windows start (the padding before); the padding after only sets
    # the output size and the average's divisors, both computed here
    return (*p.kernel, *p.stride, *p.pad_begin)


def _call(name, p, *args):
    if p.N * p.C * p.P * p.Q * p.window < SERIAL_POOL_WORK:
        getattr(KERNELS, name + "_planes")(0, p.N * p.C, *args)
    else:
        getattr(KERNELS, name)(*args)


def max_forward(p, x):
    y = np.empty(p.y_shape, dtype=x.dtype)
    _call("max_fwd", p, x, y, *_geometry(p), *p.dilation, x.dtype.type(-np.inf))
    return y


def max_backward(p, dy, x):
    dx = np.zeros(p.x_shape, dtype=dy.dtype)
    _call("max_bwd", p, dy, x, dx, *_geometry(p), *p.dilation)
    return dx


def avg_forward(p, x):
    y = np.empty(p.y_shape, dtype=x.dtype)
    _call("avg_fwd", p, x, y, avg_divisors(p).astype(x.dtype), *_geometry(p))
    return y


def avg_backward(p, dy, x):
    dx = np.zeros(p.x_shape, dtype=dy.dtype)
    _call("avg_bwd", p, dy, dx, avg_divisors(p).astype(dy.dtype), *_geometry(p))
    return dx
