"""Compute kernels below the backends: convbench's own GEMM and the machine's FMA ceiling.

This package sits under `convbench.backends` in the layering: it imports only NumPy, Numba,
llvmlite, threadpoolctl (for `blas_info`) and `convbench.threads`, never a backend or the
harness, so every backend (and the harness's machine record) can use it.

- `gemm`, `gemm_batched`: single- and batched-matrix products on packed panels and
  register-resident micro-kernels (`gemm.py`; the micro-kernels come from `_codegen.py`);
  `pack` packs an operand once for many products (weights over time steps or a batch).
- `fma_peak`, `isa`, `vector_bits`, `kernel_vector_bits`, `cpu_isa`, `blas_info`: the fp32 FMA
  peak measured by a Numba kernel, the vector ISA Numba compiles for (and the width its FMAs
  really have), the CPU's, and which core type the BLAS runs (`peak.py`).
- `quiet_blas`: the BLAS on one thread for a block of code that alternates BLAS calls and Numba
  kernels (`blas.py`).
- `asm`: reading a compiled kernel's hottest loop (packed FMAs, gathers, spills), for tests.

Nothing here compiles at import: kernels compile (or load from Numba's cache) on first use.
"""
from convbench.kernels.blas import quiet_blas
from convbench.kernels.gemm import (
                                    GemmParams,
                                    Packed,
                                    default_params,
                                    gemm,
                                    gemm_batched,
                                    micro_shapes,
                                    pack,
)
from convbench.kernels.peak import (
                                    PeakResult,
                                    blas_info,
                                    cpu_isa,
                                    fma_peak,
                                    isa,
                                    kernel_vector_bits,
                                    vector_bits,
)

__all__ = ["GemmParams", "Packed", "PeakResult", "blas_info", "cpu_isa", "default_params",
           "fma_peak", "gemm", "gemm_batched", "isa", "kernel_vector_bits", "micro_shapes", "pack",
           "quiet_blas", "vector_bits"]
