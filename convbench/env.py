"""Every environment variable convbench sets or reads, in one place.

Importing this module applies SET_ON_IMPORT (each only where the user has not set it), and
`convbench/__init__.py` imports it before anything that loads NumPy, because the thread runtimes
read these variables once, when they start. READ lists the variables convbench only reads.
"""
from __future__ import annotations

import os

#: name -> (value, why). Set on `import convbench` unless already set: set one yourself to
#: override it.
SET_ON_IMPORT: dict[str, tuple[str, str]] = {
    "OMP_WAIT_POLICY": (
        "PASSIVE",
        "Numba's OpenMP workers and OpenBLAS's threads both spin after each parallel region; on a "
        "small machine they starve each other, and code that alternates BLAS calls and Numba "
        "kernels (an RNN step, a training step) slows down by an order of magnitude. Idle OpenMP "
        "threads sleep instead."),
    "OPENBLAS_THREAD_TIMEOUT": (
        "20",
        "OpenBLAS's threads spin for 2**28 cycles after each call before they sleep, so a Numba "
        "kernel that follows a GEMM shares the cores with them; 2**20 cycles still bridges "
        "back-to-back GEMMs. OpenBLAS reads it when it loads, so it counts only where convbench is "
        "imported before NumPy (the CLI is)."),
}

#: name -> what it does. Read by convbench, never set on import.
READ: dict[str, str] = {
    "CONVBENCH_CACHE_DIR": "where backend='auto' keeps autotune.json (default ~/.cache/convbench)",
    "CONVBENCH_IM2COL_MAX_BYTES": "the largest column buffer im2col accepts (default 4 GiB)",
    "NUMBA_ENABLE_CUDASIM": "1 runs the numba-cuda kernels on Numba's CPU simulator "
                            "(`convbench verify --cuda-sim` sets it for its own process)",
    "CONVBENCH_NO_ENTRY_POINTS": "1 ignores the backends installed packages declare in the "
                                 "entry-point group convbench.backends (backends.plugins)",
    "NPROC": "not read: set to convbench's thread count only while JAX's CPU backend starts, "
             "because XLA sizes its thread pool from it then (backends.jax_peer)",
}


def apply_defaults() -> None:
    """Set each SET_ON_IMPORT variable the user has not set."""
    for name, (value, _) in SET_ON_IMPORT.items():
        os.environ.setdefault(name, value)


apply_defaults()
