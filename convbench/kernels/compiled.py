"""The generated kernel module (`_gemm_kernels`, written by `_codegen`), imported on first use:
importing convbench.kernels imports no Numba and compiles nothing."""
from __future__ import annotations

from convbench.lazy import LazyModule

KERNELS = LazyModule("convbench.kernels._gemm_kernels")
