"""The machine's real fp32 FMA ceiling, the vector ISA in use, and what the BLAS runs.

`fma_peak` times a Numba kernel of independent accumulator vectors updated by FMAs, held in
registers with no memory traffic: the throughput every GEMM and convolution here is measured
against (a BLAS's SGEMM is not a ceiling: its core type may be capped, e.g. OpenBLAS forced to
Haswell's AVX2 kernels on an AVX-512 CPU). `blas_info` says which core type the BLAS runs, whether
the environment forces it, and whether it uses narrower vectors than the CPU has.

Importing this module compiles nothing and does not import Numba.
"""
from __future__ import annotations

import functools
import os
import time
from dataclasses import asdict, dataclass

import numpy as np
from threadpoolctl import threadpool_info

from convbench.kernels._tiles import PEAK
from convbench.kernels.asm import fresh_asm, hot_loop, loop_stats
from convbench.kernels.compiled import KERNELS

#: Vector register bits per ISA name.
_BITS = {"avx512": 512, "avx2": 256, "other": 128}

#: OpenBLAS core types (threadpoolctl's `architecture`, as OpenBLAS names them) and BLIS
#: configurations by the vector width of their float kernels; others count as 128-bit.
_BLAS_BITS = {
    "skylakex": 512, "cooperlake": 512, "sapphirerapids": 512, "skx": 512, "knl": 512,
    "zen4": 512, "zen5": 512,
    "haswell": 256, "zen": 256, "zen2": 256, "zen3": 256, "excavator": 256, "steamroller": 256,
    "piledriver": 256, "bulldozer": 256, "sandybridge": 256,
}


def _isa_of(features: str) -> str:
    feats = set(features.split(","))
    # LLVM's -evex512 (AVX10 on some cores) limits AVX-512 instructions to 256-bit registers
    if "+avx512f" in feats and "-evex512" not in feats:
        return "avx512"
    if "+avx2" in feats and "+fma" in feats:
        return "avx2"
    return "other"


@functools.cache
def isa() -> str:
    """'avx512', 'avx2' or 'other': the vector ISA Numba compiles for here (the host CPU's
    features, or NUMBA_CPU_FEATURES where set; Numba reads it once, at import)."""
    from numba.core import config  # heavy: importing convbench.kernels must not load Numba
    if config.CPU_FEATURES is not None:
        return _isa_of(config.CPU_FEATURES)
    return cpu_isa()


@functools.cache
def cpu_isa() -> str:
    """'avx512', 'avx2' or 'other': what the host CPU supports."""
    import llvmlite.binding as ll  # heavy, as Numba
    return _isa_of(ll.get_host_cpu_features().flatten())


def vector_bits(name: str | None = None) -> int:
    """Vector register width in bits of an ISA name (default: isa())."""
    return _BITS[name or isa()]


@dataclass(frozen=True)
class PeakResult:
    """fp32 FMA throughput in GFLOP/s (an FMA counts as 2 flops) on `threads` threads and on
    one, the ISA and vector width the kernel was compiled for, and the lanes per vector."""
    gflops: float
    gflops_one_thread: float
    threads: int
    isa: str
    vector_bits: int
    lanes: int

    def as_dict(self) -> dict:
        return asdict(self)


def _peak_kernels(lanes: int):
    k = KERNELS.load()
    return getattr(k, f"fma_chains_v{lanes}"), getattr(k, f"fma_chains_par_v{lanes}")


def _chains() -> dict:
    return dict(PEAK)


def fma_peak(threads: int | None = None, seconds: float = 0.05, repeats: int = 5,
             clock=time.perf_counter) -> PeakResult:
    """Best of `repeats` timings of about `seconds` each, on `threads` threads (default: Numba's
    thread count) and on one. The first call compiles (or loads from cache) the kernel. clock:
    what times a call; time.thread_time (the calling thread's CPU time, which other processes'
    load does not inflate) suits threads=1 only."""
    import numba  # heavy: importing convbench.kernels must not load it
    if seconds <= 0:
        raise ValueError(f"seconds={seconds!r} must be > 0")
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats={repeats!r} must be a positive int")
    nthreads = numba.get_num_threads() if threads is None else threads
    if not isinstance(nthreads, int) or nthreads < 1:
        raise ValueError(f"threads={threads!r} must be a positive int")
    name = isa()
    lanes = vector_bits(name) // 32
    chains = _chains()[lanes]
    one, par = _peak_kernels(lanes)
    # distinct starting values, so that LLVM cannot merge the chains
    io = np.tile(np.arange(1, chains * lanes + 1, dtype=np.float32), (nthreads, 1))
    # x = x * a + b with a just below 1 stays finite for any count
    a, b = np.float32(0.999), np.float32(0.001)
    flops_per_iter = 2 * lanes * chains

    def best(run, iters, count):
        times = []
        for _ in range(repeats):
            t0 = clock()
            run(iters)
            times.append(clock() - t0)
        return count * flops_per_iter * iters / min(times) / 1e9

    def run_one(iters):
        one(iters, a, b, io[0])

    def run_par(iters):
        par(nthreads, iters, a, b, io)

    run_one(1000)
    t0 = time.perf_counter()
    run_one(100_000)
    per_iter = max((time.perf_counter() - t0) / 100_000, 1e-10)
    iters = max(1000, int(seconds / per_iter))
    g1 = best(run_one, iters, 1)
    if nthreads == 1:
        gall = g1
    else:
        previous = numba.get_num_threads()
        numba.set_num_threads(min(nthreads, numba.config.NUMBA_NUM_THREADS))
        try:
            run_par(1000)
            gall = best(run_par, iters, nthreads)
        finally:
            numba.set_num_threads(previous)
    return PeakResult(gall, g1, nthreads, name, lanes * 32, lanes)


def kernel_loop_stats():
    """Instruction counts (asm.LoopStats) of the peak kernel's loop as compiled here, read from
    its assembly (a fresh compilation, about a second)."""
    lanes = vector_bits() // 32
    one, _ = _peak_kernels(lanes)
    io = np.ones(_chains()[lanes] * lanes, np.float32)
    return loop_stats(hot_loop(fresh_asm(one, 1, np.float32(1), np.float32(1), io)))


def kernel_vector_bits() -> int:
    """The register width (bits) of the packed FMAs in the peak kernel's loop: what the hardware
    really runs, which can be narrower than isa() says if the compiler's target is configured
    down."""
    return kernel_loop_stats().fma_bits


def blas_info() -> dict:
    """The BLAS NumPy uses, from threadpoolctl: internal_api ('openblas', 'mkl', 'blis'),
    version, architecture (the core type whose kernels it runs, where it says), num_threads;
    plus coretype_env (OPENBLAS_CORETYPE, or MKL_ENABLE_INSTRUCTIONS for MKL; None if unset),
    forced (whether that variable is set), blas_vector_bits (the core type's vector width, None
    if unknown), cpu_vector_bits (the CPU's) and narrower (True when the BLAS runs narrower
    vectors than the CPU has: its SGEMM then is not the machine's ceiling)."""
    infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    # NumPy's BLAS when several are loaded: the one its own wheel ships, else the first
    info = next((i for i in infos if "numpy" in i.get("filepath", "")), infos[0] if infos else {})
    api = info.get("internal_api")
    arch = info.get("architecture")
    var = "MKL_ENABLE_INSTRUCTIONS" if api == "mkl" else "OPENBLAS_CORETYPE"
    env = os.environ.get(var)
    blas_bits = _BLAS_BITS.get(str(arch).lower(), 128) if arch else None
    cpu_bits = _BITS[cpu_isa()]
    return {
        "internal_api": api,
        "version": info.get("version"),
        "architecture": arch,
        "num_threads": info.get("num_threads"),
        "filepath": info.get("filepath"),
        "coretype_env": env,
        "coretype_var": var,
        "forced": env is not None,
        "blas_vector_bits": blas_bits,
        "cpu_vector_bits": cpu_bits,
        "narrower": blas_bits is not None and blas_bits < cpu_bits,
    }
