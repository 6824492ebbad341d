"""The BLAS's threads, scoped: `quiet_blas()` runs the BLAS on one thread for a block of code.

A multi-threaded BLAS call leaves its worker threads busy-waiting for a while (OpenBLAS: up to
2**OPENBLAS_THREAD_TIMEOUT cycles, read from the environment when it loads), and a Numba parallel
kernel that runs meanwhile shares the cores with them: each parallel region then waits for a
descheduled worker, and code that alternates the two (a step of a recurrent layer, of a training
loop) slows down by an order of magnitude. convbench's own kernels avoid it by running their
products on convbench's GEMM (same thread pool as the rest); `quiet_blas` is for BLAS calls that
remain inside such code: on one thread the BLAS wakes no worker. It changes the BLAS's thread
count for the block only (threadpoolctl), and restores it after.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController


@functools.cache
def _controller() -> ThreadpoolController:
    # finding the loaded libraries walks the process's shared objects: once is enough
    return ThreadpoolController()


@contextmanager
def quiet_blas():
    """Within the block, every loaded BLAS runs on one thread (calls from any Python thread)."""
    with _controller().limit(limits=1, user_api="blas"):
        yield
