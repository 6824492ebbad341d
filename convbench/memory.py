"""Memory sizes: what the machine has available now, and sizes as people write them ("8G")."""
from __future__ import annotations

import os
import re

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
