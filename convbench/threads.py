"""One thread count for every library that runs kernels: Numba, BLAS, scipy.fft and torch.

Setting it in one place keeps them from oversubscribing the cores when they share a process.
"""
from __future__ import annotations

import os
import sys

from threadpoolctl import threadpool_limits

_threads: int | None = None


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def get_threads() -> int:
    return _threads or cpu_count()


def set_threads(n: int | None) -> int:
    """Use n threads (None: all cores) in Numba, BLAS (threadpoolctl), scipy.fft and torch.
    Libraries imported later pick the count up through `sync` when a backend loads them."""
    global _threads
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"threads={n!r} must be a positive int")
    _threads = n
    return sync()


_synced_for: tuple = ()


def ensure_synced() -> None:
    """sync() once more whenever Numba or torch was imported since the last one (cheap check:
    backends call it each time they reach their kernels)."""
    loaded = ("numba" in sys.modules, "torch" in sys.modules)
    if loaded != _synced_for:
        sync()


def sync() -> int:
    """Apply the current thread count to every loaded library. Numba and torch are reached through
    sys.modules: a library nobody has imported needs no setting, and importing it here would cost
    a second."""
    global _synced_for
    _synced_for = ("numba" in sys.modules, "torch" in sys.modules)
    count = get_threads()
    threadpool_limits(limits=count)
    numba = sys.modules.get("numba")
    if numba is not None:
        numba.set_num_threads(min(count, numba.config.NUMBA_NUM_THREADS))
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(count)
    return count
