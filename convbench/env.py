"""Every environment variable convbench reads, and those that change its timings, in one place.

convbench sets none: its speed does not depend on the import order or on variables that thread
runtimes read when they load. Kernels that alternate compiled (Numba) work and matrix products
run the products on convbench's own GEMM, in Numba's thread pool, instead of calling a BLAS whose
idle worker threads busy-wait and take the cores (see convbench.kernels.quiet_blas for BLAS calls
that remain in such code).
"""
from __future__ import annotations

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

