"""The machine fingerprint recorded with every run, and its measured peaks (the roofline's roof).

The roof is the fp32 FMA peak measured by a Numba kernel (convbench.kernels.fma_peak): a BLAS's
SGEMM is a second, lower line, and not a ceiling (its core type may be capped below the CPU's
vectors, e.g. OpenBLAS forced to AVX2 kernels on an AVX-512 CPU; `blas_warning` says so)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
import time

import numpy as np
from threadpoolctl import threadpool_info

from convbench.backends import backend_names, get_backend
from convbench.backends.base import package_version
from convbench.env import TIMING
from convbench.kernels import blas_info, cpu_isa, fma_peak, isa, kernel_vector_bits
from convbench.threads import get_threads


def cpu_info() -> dict:
    """The CPU model and its vector instruction-set flags (Linux's /proc/cpuinfo)."""
    info = {"model": platform.processor() or platform.machine(), "flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name":
                    info["model"] = value.strip()
                elif key == "flags":
                    flags = value.split()
                    info["flags"] = sorted(f for f in flags
                                           if f.startswith(("avx", "fma", "sse4", "amx")))
                    break
    except OSError:
        pass
    return info


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def git_commit() -> str | None:
    """convbench's git commit, +dirty with uncommitted changes; None outside a checkout."""
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _blas() -> list[dict]:
    return [{k: v for k, v in i.items() if k in ("internal_api", "version", "num_threads",
                                                 "architecture", "threading_layer")}
            for i in threadpool_info()]


def timing_environment() -> dict:
    """The environment variables set here that change timings (env.TIMING), by name."""
    return {k: os.environ[k] for k in TIMING if k in os.environ}


def _blas_core() -> dict:
    """The core type NumPy's BLAS runs, whether the environment forces it, and whether its
    vectors are narrower than the CPU's (kernels.blas_info, without the file path)."""
    info = blas_info()
    return {k: info[k] for k in ("internal_api", "architecture", "coretype_var", "coretype_env",
                                 "forced", "blas_vector_bits", "cpu_vector_bits", "narrower")}


def blas_warning(machine: dict | None = None) -> str | None:
    """A one-line warning when the BLAS runs narrower vectors than the CPU has, from a
    fingerprint (default: this process's); None otherwise (or for a fingerprint recorded before
    this was kept)."""
    core = (machine.get("blas_core") if machine is not None else _blas_core()) or {}
    if not core.get("narrower"):
        return None
    why = (f"forced by {core['coretype_var']}={core['coretype_env']}" if core.get("forced")
           else "its own choice")
    return (f"the BLAS ({core.get('internal_api')}) runs {core.get('architecture')} kernels "
            f"with {core.get('blas_vector_bits')}-bit vectors on a CPU with "
            f"{core.get('cpu_vector_bits')}-bit vectors ({why}): its SGEMM is well below the "
            "machine's FMA peak, and BLAS-based backends are slowed down accordingly")


def _gpu() -> dict | None:
    try:
        return get_backend("numba-cuda").device_info()
    except Exception as e:  # a broken driver must not stop a CPU run
        return {"error": str(e)}


def peers() -> dict:
    """Each peer's record: its library versions and thread settings (Backend.record), read
    without importing the library; None for a peer whose package is not installed."""
    out = {}
    for name in backend_names():
        b = get_backend(name)
        if b.peer:
            record = b.record()
            out[name] = record if record and record.get("version") else None
    return out


def fingerprint() -> dict:
    """CPU, memory, OS, Python and library versions, BLAS and its threads, GPU, the peers'
    versions and threads, git commit."""
    torch_info = None
    if package_version("torch"):
        torch_info = {"version": package_version("torch")}
        if "torch" in sys.modules:
            t = sys.modules["torch"]
            torch_info["threads"] = t.get_num_threads()
            torch_info["cudnn"] = t.backends.cudnn.version() if t.cuda.is_available() else None
    return {
        "cpu": cpu_info(),
        "cores": os.cpu_count(),
        "threads": get_threads(),
        "memory_bytes": _memory_bytes(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": package_version("scipy"),
        "numba": package_version("numba"),
        "llvmlite": package_version("llvmlite"),
        "numba_cuda": package_version("numba-cuda"),
        "blas": _blas(),
        "blas_core": _blas_core(),
        "simd": {"isa": isa(), "cpu_isa": cpu_isa()},
        "env": timing_environment(),
        "torch": torch_info,
        "peers": peers(),
        "gpu": _gpu(),
        "convbench_commit": git_commit(),
    }


def measure_peaks(seconds: float = 1.0) -> dict:
    """This machine's fp32 peaks on the run's thread count: the FMA peak (fma_gflops, a Numba
    kernel of register-resident FMAs; also on one thread), with the ISA it was compiled for and
    the register width its FMAs really have (vector_bits, read from its assembly); SGEMM GFLOP/s
    (NumPy's BLAS, n=2048) and memory bandwidth GB/s (a copy of 256 MiB: bytes read plus
    written). Best of several runs each."""
    # many short timings: the best of them is the ceiling, and on a shared machine more of them
    # are more likely to catch a quiet moment
    peak = fma_peak(threads=get_threads(), seconds=min(0.02, seconds / 20), repeats=15)
    out = {"fma_gflops": peak.gflops, "fma_gflops_one_thread": peak.gflops_one_thread,
           "isa": peak.isa, "vector_bits": kernel_vector_bits()}
    n = 2048
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.copy()
    a @ b
    best = float("inf")
    end = time.perf_counter() + seconds / 2
    while time.perf_counter() < end or best == float("inf"):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    gflops = 2 * n ** 3 / best / 1e9
    src = np.ones(64 << 20, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    end = time.perf_counter() + seconds / 2
    while time.perf_counter() < end or best == float("inf"):
        t = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t)
    gbps = 2 * src.nbytes / best / 1e9
    return {**out, "sgemm_gflops": gflops, "memory_gbps": gbps}


def peak_gflops(peaks: dict | None) -> float | None:
    """The roof for "% of peak": the FMA peak, or for a run recorded before it was measured, the
    SGEMM figure; None without peaks."""
    if not peaks:
        return None
    return peaks.get("fma_gflops") or peaks.get("sgemm_gflops")


def same_machine(a: dict, b: dict) -> list[str]:
    """What differs between two fingerprints in ways that change timings."""
    diffs = []
    for key in ("cores", "threads", "numpy", "numba", "llvmlite", "python"):
        if a.get(key) != b.get(key):
            diffs.append(f"{key}: {a.get(key)} vs {b.get(key)}")
    if a.get("cpu", {}).get("model") != b.get("cpu", {}).get("model"):
        diffs.append(f"cpu: {a.get('cpu', {}).get('model')} vs {b.get('cpu', {}).get('model')}")
    ta, tb = (a.get("torch") or {}).get("version"), (b.get("torch") or {}).get("version")
    if ta != tb:
        diffs.append(f"torch: {ta} vs {tb}")
    pa, pb = a.get("peers") or {}, b.get("peers") or {}
    for name in dict.fromkeys([*pa, *pb]):
        if name == "torch" or name not in pa or name not in pb:   # torch above; older records
            continue
        va, vb = (pa[name] or {}).get("version"), (pb[name] or {}).get("version")
        if va != vb:
            diffs.append(f"{name}: {va} vs {vb}")
    return diffs
