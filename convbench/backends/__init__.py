"""The backend registry: name -> module and class, imported only when first asked for.

Adding a built-in backend: write `backends/<name>.py` with a `Backend` subclass and add one line
here. Importing this package imports no backend, so `convbench --help` compiles and loads
nothing. The registry names `auto` (convbench.autotune, a layer above: it dispatches over verified
backends) by module path only; it is imported when first asked for, like every other backend.

User backends join through `register_backend(cls)`: directly, from a file (`load_backend_file`,
the CLI's --backend-file) or from an installed package's entry point in the group
`convbench.backends` (read on the first look at the list of names). They come after the
built-ins in every list, and get what the built-ins get: verification before timing, reports,
compare, and `auto` candidacy when the class sets `auto_candidate = True`.
"""
from __future__ import annotations

import difflib
import importlib
import inspect
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from convbench.backends import plugins
from convbench.backends.base import Backend
from convbench.errors import BackendRegistrationError, UnknownNameError
from convbench.ops import OPS

# name -> (module, class). The order is the order of tables and reports.
REGISTRY: dict[str, tuple[str, str]] = {
    "naive": ("convbench.backends.naive", "NaiveBackend"),
    "numpy": ("convbench.backends.numpy_vec", "NumpyBackend"),
    "im2col": ("convbench.backends.im2col", "Im2colBackend"),
    "im2col-numba": ("convbench.backends.im2col_numba", "Im2colNumbaBackend"),
    "fft": ("convbench.backends.fft", "FFTBackend"),
    "winograd-f2": ("convbench.backends.winograd", "WinogradF2Backend"),
    "winograd-f4": ("convbench.backends.winograd", "WinogradF4Backend"),
    "winograd": ("convbench.backends.winograd", "WinogradBackend"),
    "numba-cpu": ("convbench.backends.numba_cpu", "NumbaCPUBackend"),
    "numba-cuda": ("convbench.backends.numba_cuda", "NumbaCUDABackend"),
    "torch": ("convbench.backends.torch_peer", "TorchBackend"),
    "onnxruntime": ("convbench.backends.onnxruntime_peer", "OnnxRuntimeBackend"),
    "openvino": ("convbench.backends.openvino_peer", "OpenVINOBackend"),
    "jax": ("convbench.backends.jax_peer", "JaxBackend"),
    "auto": ("convbench.autotune", "AutoBackend"),
}

#: Backends that delegate to others; left out of the default lists (verification, runs).
META = ("auto",)

_instances: dict = {}
_lock = threading.RLock()


@dataclass(frozen=True)
class _UserBackend:
    cls: type
    origin: str         # where it came from: a file, an entry point, a Python module


#: user backends by name, in registration order
_user: dict[str, _UserBackend] = {}
_entry_points_read = False
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def _what(cls, origin: str) -> str:
    return f"class {getattr(cls, '__qualname__', cls)!s} ({origin})"


def _check_user_class(cls, origin: str) -> str:
    """The class's backend name, or BackendRegistrationError saying what is wrong with it."""
    if not (inspect.isclass(cls) and issubclass(cls, Backend)) or cls is Backend:
        raise BackendRegistrationError(f"register_backend takes a subclass of convbench.Backend, "
                                       f"got {cls!r} ({origin})")
    what = _what(cls, origin)
    name = cls.name
    if not isinstance(name, str) or not name:
        raise BackendRegistrationError(f"{what} has no name: set the class attribute name = "
                                       "'...' (the name --backends and the reports use)")
    if not NAME_PATTERN.fullmatch(name):
        raise BackendRegistrationError(f"{what}: name={name!r} must be letters, digits and "
                                       "'-', '_', '.', '+', starting with a letter or digit")
    if name in REGISTRY:
        raise BackendRegistrationError(f"{what}: name={name!r} is the name of a built-in "
                                       "backend; choose another")
    if name in _user and _user[name].origin != origin:
        raise BackendRegistrationError(f"{what}: name={name!r} is already registered by "
                                       f"{_what(_user[name].cls, _user[name].origin)}")
    if cls.peer and cls.auto_candidate:
        raise BackendRegistrationError(f"{what}: a peer is what convbench is measured against, "
                                       "never an auto candidate: set peer or auto_candidate, "
                                       "not both")
    methods = {op.method for op in OPS.values()}
    if not any(callable(getattr(cls, m, None)) for m in methods):
        own = [m for m in vars(cls) if not m.startswith("_") and callable(vars(cls)[m])]
        near = sorted({c for m in own for c in difflib.get_close_matches(m, methods, 1, 0.75)})
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise BackendRegistrationError(f"{what} implements no op{hint}: define a method named "
                                       f"after one, e.g. conv2d_fwd(self, problem, x, w, b); "
                                       f"the ops: {', '.join(sorted(methods))}")
    return name


def register_backend(cls, *, origin: str | None = None):
    """Register a user backend class (a `convbench.Backend` subclass with a `name`, a
    `description` and a method per op it implements) under its `name`; returns the class, so it
    also works as a class decorator. Registering a class from the same origin again replaces
    it (reloading a file); any other clash, a class with no name, or one that implements no op
    is a BackendRegistrationError."""
    origin = origin or f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', cls)}"
    with _lock:
        name = _check_user_class(cls, origin)
        _user[name] = _UserBackend(cls, origin)
        _instances.pop(name, None)
    return cls


def unregister_backend(name: str) -> None:
    """Remove a user backend (built-ins stay)."""
    with _lock:
        if name not in _user:
            raise UnknownNameError(f"{name!r} is not a registered user backend; user backends: "
                                   f"{', '.join(_user) or 'none'}")
        del _user[name]
        _instances.pop(name, None)


def load_backend_file(path) -> list[str]:
    """Register every Backend subclass the Python file at `path` defines (classes whose names
    start with '_' excepted); returns their names. Errors: BackendRegistrationError."""
    _, classes = plugins.load_file(path)
    where = f"file {Path(path).expanduser().resolve()}"
    origins = {cls: f"{where}, class {cls.__qualname__}" for cls in classes}
    with _lock:
        seen = {}
        for cls in classes:     # check them all before registering any
            name = _check_user_class(cls, origins[cls])
            if name in seen:
                raise BackendRegistrationError(f"{_what(cls, where)}: name={name!r} is also the "
                                               f"name of class {seen[name].__qualname__}")
            seen[name] = cls
        return [register_backend(cls, origin=origins[cls]).name for cls in classes]


def load_entry_points() -> list[str]:
    """Register the backends installed packages declare in the entry-point group
    `convbench.backends` (once per process; see plugins.entry_points). Returns their names."""
    global _entry_points_read
    with _lock:
        if _entry_points_read:
            return []
        _entry_points_read = True
        names = []
        try:
            for ep in plugins.entry_points():
                for cls in plugins.load_entry_point(ep):
                    names.append(register_backend(cls, origin=plugins.describe(ep)).name)
        except BackendRegistrationError:
            _entry_points_read = False       # say it again next time rather than go quiet
            raise
        return names


def user_backends() -> dict[str, str]:
    """Registered user backends: name -> where each came from."""
    load_entry_points()
    return {name: u.origin for name, u in _user.items()}


def get_backend(name: str):
    """The backend instance called `name` (created once)."""
    if isinstance(name, str) and name in _instances:
        return _instances[name]
    if name not in REGISTRY and name not in _user:
        load_entry_points()
    if name not in REGISTRY and name not in _user:
        raise UnknownNameError(f"unknown backend {name!r}; valid backends: "
                               f"{', '.join(backend_names(include_meta=True))}")
    with _lock:
        if name not in _instances:
            if name in REGISTRY:
                module, cls = REGISTRY[name]
                _instances[name] = getattr(importlib.import_module(module), cls)()
            else:
                user = _user[name]
                try:
                    _instances[name] = user.cls()
                except Exception as e:  # the user's constructor: say whose and why
                    raise BackendRegistrationError(
                        f"creating backend {name!r} ({user.origin}) raised "
                        f"{type(e).__name__}: {e}") from e
    return _instances[name]


def free_workspace() -> int:
    """Release the scratch memory every backend created so far keeps between calls (see
    backends.scratch); returns the bytes released. The next call allocates afresh."""
    return sum(b.workspace.free() for b in list(_instances.values()))


def held_workspace_bytes() -> int:
    """Bytes the workspaces of every backend created so far hold (kept and lent)."""
    return sum(b.workspace.nbytes for b in list(_instances.values()))


def backend_names(include_meta: bool = False) -> list[str]:
    """Built-ins in registry order, then user backends in registration order (then `auto` with
    include_meta)."""
    load_entry_points()
    builtin = [n for n in REGISTRY if n not in META]
    return builtin + list(_user) + (list(META) if include_meta else [])


def peer_names(names=None) -> list[str]:
    """The peers among `names` (default: every backend): outside libraries convbench is measured
    against."""
    return [n for n in (names if names is not None else backend_names()) if get_backend(n).peer]


@dataclass(frozen=True)
class BackendInfo:
    name: str
    available: bool
    reason: str
    ops: tuple[str, ...]
    device: str
    description: str
    peer: bool = False
    auto_candidate: bool = False
    origin: str = "built-in"

    def __str__(self) -> str:
        state = "available" if self.available else f"unavailable: {self.reason}"
        return f"{self.name}: {state}"


def list_backends() -> list[BackendInfo]:
    """Every registered backend with its availability, the reason when unavailable, and its ops."""
    out = []
    for name in backend_names(include_meta=True):
        b = get_backend(name)
        try:
            reason = b.unavailable_reason()
        except Exception as e:  # a user backend's own check: report it, keep listing
            reason = f"unavailable_reason() raised {type(e).__name__}: {e}"
        ops = tuple(op for op, spec in OPS.items() if b.implements(spec))
        origin = _user[name].origin if name in _user else "built-in"
        out.append(BackendInfo(name, reason is None, reason or "", ops, b.device, b.description,
                               bool(b.peer), bool(b.auto_candidate), origin))
    return out
