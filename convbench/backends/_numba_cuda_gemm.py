"""A register-blocked, double-buffered GEMM for numba-cuda, and small helpers (fill, column sums).

Loaded on first use (numba_cuda.KERNELS). `cuda` stays a module global in every
kernel module: the CUDA simulator swaps module globals for its fake `cuda`, not closure variables.

Kernels are built by factories keyed by their tile shape and dtype (closure constants size the
shared and local arrays, so every loop over a tile dimension has a constant trip count and is
unrolled, keeping the accumulators in registers). All arithmetic stays in the data's dtype:
literals are written ft(0), never 0.0.

The main loop holds one K-tile in registers while the block computes on the previous one in shared
memory (two shared buffers, one barrier per tile):

    registers <- global tile 0
    for each tile t:   shared[t % 2] <- registers;  barrier
                       registers <- global tile t+1   (in flight during the arithmetic)
                       accumulators += shared[t % 2] products
"""
import numpy as np
from numba import config, cuda

from convbench.backends._numba_cuda_sim import serialise_shared_allocations
from convbench.backends._numba_cuda_tiles import Tiles

#: Shared-memory rows are padded by this many words, so that loaders writing down a column of a
#: tile land in different banks.
PAD = 4

_kernels: dict = {}

if config.ENABLE_CUDASIM:
    # every kernel module imports this one: their shared tiles need the simulator fixed first
    serialise_shared_allocations()


def float_type(dtype):
    return np.float32 if np.dtype(dtype) == np.float32 else np.float64


def _tile_constants(t: Tiles):
    sm, sn = t.BM // t.TM, t.BN // t.TN
    nt = sm * sn
    return sm, sn, nt, -(-t.BM * t.BK // nt), -(-t.BK * t.BN // nt)


def gemm(t: Tiles, dtype, a_kfast: bool, b_nfast: bool):
    """C (M, Nc) = A (M, K) @ B (K, Nc) (+ bias over columns), on flat arrays with leading
    dimensions: A[m, k] = a[m*lda + k] if a_kfast else a[k*lda + m]; B[k, n] = b[k*ldb + n] if
    b_nfast else b[n*ldb + k]; C[m, n] = c[m*ldc + n]. Grid (ceil(M/BM), ceil(Nc/BN)),
    block t.threads."""
    key = ("gemm", t, np.dtype(dtype).str, a_kfast, b_nfast)
    if key in _kernels:
        return _kernels[key]
    BM, BN, BK, TM, TN = t.BM, t.BN, t.BK, t.TM, t.TN
    SM, SN, NT, AL, BL = _tile_constants(t)
    ft = float_type(dtype)
    AK, BNF = bool(a_kfast), bool(b_nfast)
    AW, BW = BM + PAD, BN + PAD     # shapes must be literal constants to numba

    @cuda.jit(cache=True)
    def kernel(a, b, c, bias, has_bias, M, Nc, K, lda, ldb, ldc):
        As = cuda.shared.array((2, BK, AW), ft)
        Bs = cuda.shared.array((2, BK, BW), ft)
        acc = cuda.local.array((TM, TN), ft)
        af = cuda.local.array(TM, ft)
        bf = cuda.local.array(TN, ft)
        ra = cuda.local.array(AL, ft)
        rb = cuda.local.array(BL, ft)
        tid = cuda.threadIdx.x
        tm = tid % SM
        tn = tid // SM
        m0 = cuda.blockIdx.x * BM
        n0 = cuda.blockIdx.y * BN
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = ft(0)
        ntiles = (K + BK - 1) // BK
        # tile 0 into registers
        for slot in range(AL):
            idx = tid + slot * NT
            if AK:
                kk = idx % BK
                mm = idx // BK
            else:
                mm = idx % BM
                kk = idx // BM
            v = ft(0)
            if kk < K and m0 + mm < M and idx < BM * BK:
                v = a[(m0 + mm) * lda + kk] if AK else a[kk * lda + m0 + mm]
            ra[slot] = v
        for slot in range(BL):
            idx = tid + slot * NT
            if BNF:
                nn = idx % BN
                kk = idx // BN
            else:
                kk = idx % BK
                nn = idx // BK
            v = ft(0)
            if kk < K and n0 + nn < Nc and idx < BK * BN:
                v = b[kk * ldb + n0 + nn] if BNF else b[(n0 + nn) * ldb + kk]
            rb[slot] = v
        for tile in range(ntiles):
            buf = tile % 2
            for slot in range(AL):
                idx = tid + slot * NT
                if idx < BM * BK:
                    if AK:
                        As[buf, idx % BK, idx // BK] = ra[slot]
                    else:
                        As[buf, idx // BM, idx % BM] = ra[slot]
            for slot in range(BL):
                idx = tid + slot * NT
                if idx < BK * BN:
                    if BNF:
                        Bs[buf, idx // BN, idx % BN] = rb[slot]
                    else:
                        Bs[buf, idx % BK, idx // BK] = rb[slot]
            cuda.syncthreads()
            k0 = (tile + 1) * BK
            if tile + 1 < ntiles:
                for slot in range(AL):
                    idx = tid + slot * NT
                    if AK:
                        kk = idx % BK
                        mm = idx // BK
                    else:
                        mm = idx % BM
                        kk = idx // BM
                    v = ft(0)
                    if k0 + kk < K and m0 + mm < M and idx < BM * BK:
                        v = a[(m0 + mm) * lda + k0 + kk] if AK else a[(k0 + kk) * lda + m0 + mm]
                    ra[slot] = v
                for slot in range(BL):
                    idx = tid + slot * NT
                    if BNF:
                        nn = idx % BN
                        kk = idx // BN
                    else:
                        kk = idx % BK
                        nn = idx // BK
                    v = ft(0)
                    if k0 + kk < K and n0 + nn < Nc and idx < BK * BN:
                        v = b[(k0 + kk) * ldb + n0 + nn] if BNF else b[(n0 + nn) * ldb + k0 + kk]
                    rb[slot] = v
            for kk in range(BK):
                for i in range(TM):
                    af[i] = As[buf, kk, tm + i * SM]
                for j in range(TN):
                    bf[j] = Bs[buf, kk, tn + j * SN]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += af[i] * bf[j]
        for i in range(TM):
            m = m0 + tm + i * SM
            if m < M:
                for j in range(TN):
                    n = n0 + tn + j * SN
                    if n < Nc:
                        v = acc[i, j]
                        if has_bias:
                            v += bias[n]
                        c[m * ldc + n] = v

    _kernels[key] = kernel
    return kernel


def compiled() -> dict:
    """Every kernel built so far, by its key (tile shape or name, dtype, layout)."""
    return dict(_kernels)


def run_gemm(t: Tiles, a, b, c, bias, M, Nc, K, lda, ldb, ldc, a_kfast, b_nfast):
    """Launch gemm on flat device arrays; bias None for none."""
    k = gemm(t, c.dtype, a_kfast, b_nfast)
    grid = (-(-M // t.BM), -(-Nc // t.BN))
    k[grid, t.threads](a, b, c, c if bias is None else bias, bias is not None,
                       M, Nc, K, lda, ldb, ldc)


def elementwise(name: str, dtype, maker):
    """A cached kernel made by maker(ft) for one dtype (for kernels whose only constant is it)."""
    key = (name, np.dtype(dtype).str)
    if key not in _kernels:
        _kernels[key] = maker(float_type(dtype))
    return _kernels[key]


def _make_fill(ft):
    @cuda.jit(cache=True)
    def fill(a, n):
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            a[i] = ft(0)
    return fill


def _make_colsum(ft):
    @cuda.jit(cache=True)
    def colsum(a, out, rows, cols):
        """out[j] = sum over rows of a[i*cols + j]: one thread per column, coalesced rows."""
        for j in range(cuda.grid(1), cols, cuda.gridsize(1)):
            acc = ft(0)
            for i in range(rows):
                acc += a[i * cols + j]
            out[j] = acc
    return colsum


def _make_sum_slices(ft):
    @cuda.jit(cache=True)
    def sum_slices(ws, out, slices, n):
        """out[i] = sum over s of ws[s*n + i] (partial sums of a split reduction)."""
        for i in range(cuda.grid(1), n, cuda.gridsize(1)):
            acc = ft(0)
            for s in range(slices):
                acc += ws[s * n + i]
            out[i] = acc
    return sum_slices


def launch_1d(kernel, n: int, threads: int, *args):
    """A grid-stride kernel over n elements. The simulator pays per block, so there the grid is
    kept to two blocks (still more than one, so the stride loop is exercised)."""
    blocks = max(1, min(-(-n // threads), 2 if config.ENABLE_CUDASIM else 1 << 16))
    kernel[blocks, threads](*args)


def zero_fill(a, threads: int):
    launch_1d(elementwise("fill", a.dtype, _make_fill), a.size, threads, a, a.size)


def column_sums(a, out, rows: int, cols: int, threads: int):
    launch_1d(elementwise("colsum", a.dtype, _make_colsum), cols, threads, a, out, rows, cols)


def sum_slices(ws, out, slices: int, n: int, threads: int):
    launch_1d(elementwise("sum_slices", out.dtype, _make_sum_slices), n, threads,
              ws, out, slices, n)
