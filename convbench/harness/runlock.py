"""The owner of a run folder: a lock file, DIR/.lock, naming the process and host that hold it.

A run takes the lock before it touches the folder and releases it when it ends. The lock is an
advisory file lock (flock) on that file, which the operating system drops when the process dies,
so a run that was killed leaves no lock that blocks the next one; the file's contents (process id,
host, start time) only name the holder in the error a second run gets. A lock file left by a
process that is gone from this host is taken over with a warning; one from another host, whose
process cannot be checked from here, is an error that says how to remove it.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import time
from pathlib import Path

from convbench.errors import ConvbenchError

LOCK_NAME = ".lock"


class RunLockedError(ConvbenchError):
    """The run folder is held by another run (the message names it)."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:       # exists, owned by someone else
        return True
    return True


def _holder(text: str) -> dict:
    try:
        data = json.loads(text)
        return data if isinstance(data, dict) else {}
    except ValueError:
        return {}


def _describe(h: dict) -> str:
    since = f", since {h['started']}" if h.get("started") else ""
    return f"process {h.get('pid', '?')} on host {h.get('host', '?')}{since}"


class RunLock:
    """DIR/.lock held by this process; `release()` (or leaving a `with` block) gives it up."""

    def __init__(self, run_dir, warn=None):
        self.dir = Path(run_dir)
        self.path = self.dir / LOCK_NAME
        self.warn = warn or (lambda message: None)
        self._fd: int | None = None
        self.dir.mkdir(parents=True, exist_ok=True)
        self._acquire()

    def _acquire(self) -> None:
        host, pid = socket.gethostname(), os.getpid()
        for _ in range(5):          # another run may remove the file between open and lock
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                flocked = True
            except OSError as e:
                if e.errno in (errno.EAGAIN, errno.EACCES):
                    holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
                    os.close(fd)
                    raise RunLockedError(
                        f"{self.dir} is in use by another run ({_describe(holder)}): wait for "
                        f"it to finish, or choose another --out") from None
                flocked = False     # a file system without flock: the process id decides
            try:
                same_file = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same_file = False
            if not same_file:
                os.close(fd)
                continue
            prev = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            if prev and (prev.get("pid"), prev.get("host")) != (pid, host):
                try:
                    self._judge(prev, host, flocked)
                except RunLockedError:
                    os.close(fd)
                    raise
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": pid, "host": host,
                                      "started": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
            self._fd = fd
            return
        raise RunLockedError(f"{self.dir}: could not take {self.path} (it keeps being replaced)")

    def _judge(self, prev: dict, host: str, flocked: bool) -> None:
        """A lock file another process wrote, whose lock is free (or cannot be told): take it
        over with a warning when its process is gone from this host, else refuse."""
        if prev.get("host") != host:
            raise RunLockedError(
                f"{self.dir} is locked by {_describe(prev)}, which cannot be checked from here: "
                f"if that run has ended, delete {self.path}")
        other = prev.get("pid")
        if not flocked and isinstance(other, int) and _alive(other):
            raise RunLockedError(f"{self.dir} is in use by another run ({_describe(prev)})")
        # with the lock free, a live process of that id is not running here (an id reused)
        self.warn(f"taking over the stale lock of {_describe(prev)}: that run is gone")

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                os.unlink(self.path)
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
