"""Files that are whole or absent: written to a temporary file beside the target, flushed to disk,
then renamed over it. A kill or a full disk in the middle leaves the previous version (or none),
never a truncated one; the temporary file is removed when the write fails.
"""
from __future__ import annotations

import os
import secrets
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path):
    """A temporary path in path's folder to write to; renamed to `path` when the block ends
    without an exception, removed otherwise. Yields the temporary path (its suffix is path's, so
    writers that add a suffix unless present, such as numpy.savez, keep the name)."""
    path = Path(path)
    # created like any new file (the umask decides its mode; mkstemp's would be 0600)
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{path.suffix or '.tmp'}"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, OSError) and not e.filename:    # a write says not which file
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def write_text(path, text: str) -> Path:
    """Write `text` to `path` atomically (see the module docstring)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes(path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)
