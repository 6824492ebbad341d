"""Memory: what the machine has available now, sizes as people write them ("8G"), the peak a
call allocates, and the workspace limit of backend="auto"."""
from __future__ import annotations

import os
import re
import threading
import tracemalloc
from contextlib import contextmanager

import numpy as np

#: The share of the available memory a run may plan to use per case when no --max-memory is
#: given: the rest is left to the reference's temporaries, the allocator and other programs.
DEFAULT_FRACTION = 0.8

_UNITS = {"": None, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def available_bytes() -> int | None:
    """Memory available to new allocations without swapping: MemAvailable of /proc/meminfo
    (Linux), else free physical pages; None when neither can be read."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def parse_bytes(text: str, name: str = "size") -> int:
    """'512M', '8G', '1.5GiB', '64k' -> bytes (binary units). A unit is required: a bare number
    is more often a mistaken unit than a count of bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kKmMgGtT]?)(?:i?[bB])?\s*", str(text))
    if not m or not m.group(2):
        raise ValueError(f"{name}={text!r} must be a size with a unit, such as 512M, 8G or 1.5T")
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value < 1:
        raise ValueError(f"{name}={text!r} must be at least one byte")
    return int(value)


def format_bytes(n: float) -> str:
    """1610612736 -> '1.5 GiB'."""
    for unit, size in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def traced_peak(fn) -> int:
    """The high-water mark of the bytes allocated through Python's allocators while fn() runs,
    above what was allocated when it started: NumPy's arrays, and Numba's NRT arrays (Numba
    makes NRT allocate through CPython's raw allocator, which tracemalloc also traces; NRT's own
    statistics count allocations, not bytes). What fn leaves allocated (its result) counts.
    Tracing slows allocation down: never around a timed call."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        fn()
        return max(0, tracemalloc.get_traced_memory()[1] - before)
    finally:
        if not tracing:
            tracemalloc.stop()


# --- the workspace limit of backend="auto" ---------------------------------------------------
_limit: list = [None]               # set_workspace_limit's, for every thread
_scoped = threading.local()         # workspace_limit(...)'s, for one thread


def check_limit(value, name: str = "workspace_limit") -> int | None:
    """value as a limit in bytes (None: no limit), or ValueError naming `name`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name}={value!r} must be a number of bytes >= 0, or None")
    return int(value)


def set_workspace_limit(limit: int | None) -> None:
    """The most scratch bytes (Backend.workspace_bytes) a backend that `auto` chooses may need
    per call; None: no limit. Under a limit `auto` picks the fastest verified candidate whose
    estimate fits (UnsupportedError when none fits). Named backends are not affected."""
    _limit[0] = check_limit(limit)


def get_workspace_limit() -> int | None:
    """The limit in force in this thread: workspace_limit(...)'s inside one, else
    set_workspace_limit's."""
    return getattr(_scoped, "limit", _limit[0])


@contextmanager
def workspace_limit(limit: int | None):
    """Use `limit` in this thread for the duration of a `with` block (None: no limit there)."""
    limit = check_limit(limit)
    missing = object()
    before = getattr(_scoped, "limit", missing)
    _scoped.limit = limit
    try:
        yield limit
    finally:
        if before is missing:
            del _scoped.limit
        else:
            _scoped.limit = before
