"""Finding user backends: the Backend subclasses a Python file defines, and the classes installed
packages name in the entry-point group `convbench.backends`.

This module only finds classes; the registry (backends/__init__.py) checks and registers them.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
import traceback
from importlib import metadata
from pathlib import Path

from convbench.backends.base import Backend
from convbench.errors import BackendRegistrationError

#: The entry-point group installed packages register their backends in (pyproject.toml):
#:     [project.entry-points."convbench.backends"]
#:     mykernel = "mypackage.backend:MyKernelBackend"
ENTRY_POINT_GROUP = "convbench.backends"
#: Set to 1 to ignore every entry point (a broken installed plugin).
DISABLE_VARIABLE = "CONVBENCH_NO_ENTRY_POINTS"
#: The start of the module name load_file gives a file's module.
FILE_MODULE_PREFIX = "convbench_backend_file_"


def backend_classes(namespace: dict, module_name: str) -> list[type]:
    """The Backend subclasses defined in a module (not imported into it), in definition order,
    except those whose names start with an underscore (helper base classes)."""
    out = []
    for value in namespace.values():
        if (inspect.isclass(value) and issubclass(value, Backend) and value is not Backend
                and value.__module__ == module_name and not value.__name__.startswith("_")):
            out.append(value)
    return out


def _where_it_failed(path: Path, error: BaseException) -> str:
    """' (line N)' for the innermost traceback frame inside `path`, or ''."""
    line = getattr(error, "lineno", None) if isinstance(error, SyntaxError) else None
    for frame in traceback.extract_tb(error.__traceback__):
        if os.path.abspath(frame.filename) == str(path):
            line = frame.lineno
    return f" (line {line})" if line else ""


def load_file(path) -> tuple[str, list[type]]:
    """Import the Python file at `path` as a module of its own and return (module name, the
    Backend subclasses it defines). BackendRegistrationError if the file is missing, fails to
    import, or defines no Backend subclass."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise BackendRegistrationError(f"backend file {str(path)!r} does not exist")
    if path.suffix != ".py":
        raise BackendRegistrationError(f"backend file {str(path)!r} must be a Python file (.py)")
    # One module name per file: loading the same file again replaces its module
    digest = hashlib.sha1(str(path).encode()).hexdigest()[:10]
    name = f"{FILE_MODULE_PREFIX}{path.stem.replace('-', '_')}_{digest}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module          # dataclasses and pickling look classes up here
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # the user's code: any error is a failed import, reported as such
        del sys.modules[name]
        raise BackendRegistrationError(
            f"backend file {str(path)!r} failed to import{_where_it_failed(path, e)}: "
            f"{type(e).__name__}: {e}") from e
    classes = backend_classes(vars(module), name)
    if not classes:
        raise BackendRegistrationError(
            f"backend file {str(path)!r} defines no convbench.Backend subclass (classes whose "
            "names start with '_' are skipped)")
    return name, classes


def file_of(cls) -> str | None:
    """The file load_file loaded `cls` from; None for a class of an importable module (another
    process finds such a class by its module's name, a file's class only by loading the file)."""
    if not cls.__module__.startswith(FILE_MODULE_PREFIX):
        return None
    return getattr(sys.modules.get(cls.__module__), "__file__", None)


def entry_points() -> list:
    """The installed entry points of the group (none when CONVBENCH_NO_ENTRY_POINTS=1)."""
    if os.environ.get(DISABLE_VARIABLE, "0") not in ("", "0"):
        return []
    return list(metadata.entry_points(group=ENTRY_POINT_GROUP))


def describe(ep) -> str:
    dist = getattr(ep, "dist", None)
    owner = f" of {dist.name} {dist.version}" if dist is not None else ""
    return f"entry point {ep.name} = {ep.value!r}{owner}"


def load_entry_point(ep) -> list[type]:
    """The Backend subclasses an entry point names: a class, or a module (every Backend subclass
    it defines). BackendRegistrationError if it fails to load or names something else."""
    hint = (f"fix or uninstall the package, or set {DISABLE_VARIABLE}=1 to ignore entry points")
    try:
        obj = ep.load()
    except Exception as e:  # the plugin's code: any error is a failed import, reported as such
        raise BackendRegistrationError(f"{describe(ep)} (group {ENTRY_POINT_GROUP}) failed to "
                                       f"load: {type(e).__name__}: {e}; {hint}") from e
    if inspect.ismodule(obj):
        classes = backend_classes(vars(obj), obj.__name__)
    elif inspect.isclass(obj) and issubclass(obj, Backend):
        classes = [obj]
    else:
        classes = []
    if not classes:
        raise BackendRegistrationError(f"{describe(ep)} names {obj!r}, which is neither a "
                                       f"convbench.Backend subclass nor a module defining one; "
                                       f"{hint}")
    return classes
