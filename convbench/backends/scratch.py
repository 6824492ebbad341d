"""Scratch memory a backend owns: buffers reused across calls, bounded, freeable, thread-safe.

Fresh large arrays cost a page fault per page on first touch, which on small layers can take
longer than the convolution itself, so compiled backends keep their intermediates between calls.
Each backend holds one Workspace; a call borrows arrays from it for its duration:

    with self.workspace.lease() as ws:
        cols = ws.take((C * R * S, N * P * Q), x.dtype, zero=False)
        ...

An array a lease takes is that lease's alone until the lease ends (two calls, in two threads or
nested, never share one), then it goes back to the pool for the next call with the same shape and
dtype. The pool keeps at most `max_bytes`, dropping the least recently used arrays first; `free()`
empties it (`convbench.free_workspace()` frees every backend's), and clears the caches a backend
attached to it (`caches`: objects with `clear() -> bytes` and `nbytes`, e.g. weights kept in a
kernel's layout). Arrays handed to callers are never workspace arrays.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

#: Bytes a workspace keeps between calls, at most (an im2col column buffer of a large layer is
#: hundreds of megabytes; beyond this the buffer is allocated per call instead).
DEFAULT_MAX_BYTES = 1 << 30


class Workspace:
    """A pool of scratch arrays, keyed by shape and dtype; see the module docstring."""

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        if max_bytes < 0:
            raise ValueError(f"max_bytes={max_bytes} must be >= 0")
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._pool: OrderedDict[tuple, list[np.ndarray]] = OrderedDict()
        self._pooled = 0        # bytes kept for later calls
        self._lent = 0          # bytes out on leases now
        self.caches: list = []

    @property
    def nbytes(self) -> int:
        """Bytes this workspace holds: kept between calls plus lent to calls in progress, plus
        its caches'."""
        with self._lock:
            held = self._pooled + self._lent
        return held + sum(c.nbytes for c in self.caches)

    @contextmanager
    def lease(self):
        """Borrow arrays for the duration of a `with` block (see Lease.take)."""
        lease = Lease(self)
        try:
            yield lease
        finally:
            self._give_back(lease._arrays)
            lease._arrays = []

    def free(self) -> int:
        """Drop every array kept between calls and clear the caches; returns the bytes
        released."""
        with self._lock:
            freed = self._pooled
            self._pool.clear()
            self._pooled = 0
        return freed + sum(c.clear() for c in self.caches)

    def _take(self, shape: tuple, dtype) -> np.ndarray:
        key = (shape, np.dtype(dtype).str)
        with self._lock:
            free = self._pool.get(key)
            if free:
                a = free.pop()
                if not free:
                    del self._pool[key]
                self._pooled -= a.nbytes
                self._lent += a.nbytes
                return a
        a = np.empty(shape, dtype=dtype)      # allocated outside the lock
        with self._lock:
            self._lent += a.nbytes
        return a

    def _give_back(self, arrays: list[np.ndarray]) -> None:
        with self._lock:
            for a in arrays:
                self._lent -= a.nbytes
                if a.nbytes > self.max_bytes:
                    continue
                key = (a.shape, a.dtype.str)
                self._pool.setdefault(key, []).append(a)
                self._pool.move_to_end(key)
                self._pooled += a.nbytes
            while self._pooled > self.max_bytes and self._pool:
                key, free = next(iter(self._pool.items()))
                self._pooled -= free.pop(0).nbytes
                if not free:
                    del self._pool[key]


class Lease:
    """The arrays one call has borrowed from a Workspace."""

    def __init__(self, workspace: Workspace):
        self._workspace = workspace
        self._arrays: list[np.ndarray] = []

    def take(self, shape, dtype, zero: bool = True) -> np.ndarray:
        """An array of this shape and dtype, zeroed unless zero=False, this lease's alone."""
        a = self._workspace._take(tuple(int(d) for d in shape), dtype)
        self._arrays.append(a)
        if zero:
            a.fill(0)
        return a
