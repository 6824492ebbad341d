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
}

#: Variables convbench neither sets nor reads but which change how fast the kernels run: the BLAS
#: core type and threads, the OpenMP runtimes' threads and waiting, Numba's target and threads.
#: They go into every run's machine record and into autotune's machine key (a changed
#: environment re-tunes).
TIMING: tuple[str, ...] = (
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OPENBLAS_THREAD_TIMEOUT",
    "MKL_NUM_THREADS", "MKL_ENABLE_INSTRUCTIONS", "MKL_DEBUG_CPU_TYPE",
    "BLIS_NUM_THREADS", "OMP_NUM_THREADS", "OMP_WAIT_POLICY", "OMP_PROC_BIND", "OMP_PLACES",
    "GOMP_SPINCOUNT", "KMP_BLOCKTIME", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES",
    "NUMBA_NUM_THREADS", "NUMBA_THREADING_LAYER", "NUMBA_OPT", "NUMBA_SLP_VECTORIZE",
    "NUMBA_LOOP_VECTORIZE",
)


def apply_defaults() -> None:
    """Set each SET_ON_IMPORT variable the user has not set."""
    for name, (value, _) in SET_ON_IMPORT.items():
        os.environ.setdefault(name, value)


apply_defaults()
