"""Modules imported on first use: compiled kernels, torch and numba-cuda.

Importing a backend or `convbench.kernels` imports and compiles nothing; the first call does.
"""
from __future__ import annotations

import importlib
import threading
from contextlib import nullcontext

from convbench.threads import ensure_synced


class LazyModule:
    """A module imported on first use, after which the thread count is applied to whatever the
    import loaded (threads.ensure_synced). Backends reach their compiled kernels, torch and
    numba-cuda through one of these, so importing a backend imports and compiles nothing.

    prepare: a function returning a context manager the import runs inside (numba-cuda needs one).
    """

    def __init__(self, name: str, prepare=None):
        self.name = name
        self._prepare = prepare
        self._module = None
        self._lock = threading.Lock()

    def load(self):
        """The module (imported now if need be). ImportError if it cannot be imported."""
        if self._module is None:
            with self._lock:
                if self._module is None:
                    with self._prepare() if self._prepare is not None else nullcontext():
                        self._module = importlib.import_module(self.name)
        ensure_synced()
        return self._module

    def __getattr__(self, attr):
        if attr.startswith("__"):       # copy, pickle and introspection probe for these
            raise AttributeError(attr)
        return getattr(self.load(), attr)

    def __repr__(self) -> str:
        return f"<lazy module {self.name}>"
