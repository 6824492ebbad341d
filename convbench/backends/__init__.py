"""The backend registry: name -> module and class, imported only when first asked for.

Adding a backend: write `backends/<name>.py` with a `Backend` subclass and add one line here.
Importing this package imports no backend, so `convbench --help` compiles and loads nothing. The
registry names `auto` (convbench.autotune, a layer above: it dispatches over verified backends)
by module path only; it is imported when first asked for, like every other backend.
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass

from convbench.errors import UnknownNameError
from convbench.ops import OPS

# name -> (module, class). The order is the order of tables and reports.
REGISTRY: dict[str, tuple[str, str]] = {
    "naive": ("convbench.backends.naive", "NaiveBackend"),
    "numpy": ("convbench.backends.numpy_vec", "NumpyBackend"),
    "im2col": ("convbench.backends.im2col", "Im2colBackend"),
    "fft": ("convbench.backends.fft", "FFTBackend"),
    "winograd-f2": ("convbench.backends.winograd", "WinogradF2Backend"),
    "winograd-f4": ("convbench.backends.winograd", "WinogradF4Backend"),
    "winograd": ("convbench.backends.winograd", "WinogradBackend"),
    "numba-cpu": ("convbench.backends.numba_cpu", "NumbaCPUBackend"),
    "numba-cuda": ("convbench.backends.numba_cuda", "NumbaCUDABackend"),
    "torch": ("convbench.backends.torch_peer", "TorchBackend"),
    "auto": ("convbench.autotune", "AutoBackend"),
}

#: Backends that delegate to others; left out of the default lists (verification, runs).
META = ("auto",)

_instances: dict = {}
_lock = threading.Lock()


def get_backend(name: str):
    """The backend instance called `name` (created once)."""
    if isinstance(name, str) and name in _instances:
        return _instances[name]
    if name not in REGISTRY:
        raise UnknownNameError(f"unknown backend {name!r}; valid backends: {', '.join(REGISTRY)}")
    module, cls = REGISTRY[name]
    with _lock:
        if name not in _instances:
            _instances[name] = getattr(importlib.import_module(module), cls)()
    return _instances[name]


def free_workspace() -> int:
    """Release the scratch memory every backend created so far keeps between calls (see
    backends.scratch); returns the bytes released. The next call allocates afresh."""
    return sum(b.workspace.free() for b in list(_instances.values()))


def backend_names(include_meta: bool = False) -> list[str]:
    return [n for n in REGISTRY if include_meta or n not in META]


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    reason: str
    ops: tuple[str, ...]
    device: str
    description: str

    def __str__(self) -> str:
        state = "available" if self.available else f"unavailable: {self.reason}"
        return f"{self.name}: {state}"


def list_backends() -> list[BackendInfo]:
    """Every registered backend with its availability, the reason when unavailable, and its ops."""
    out = []
    for name in backend_names(include_meta=True):
        b = get_backend(name)
        reason = b.unavailable_reason()
        ops = tuple(op for op, spec in OPS.items() if b.implements(spec))
        out.append(BackendInfo(name, reason is None, reason or "", ops, b.device, b.description))
    return out
