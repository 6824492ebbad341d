"""numba-cuda convolution kernels: implicit GEMM in all three directions, and depthwise kernels.

Loaded on first use (numba_cuda.KERNELS). See _numba_cuda_gemm for the tiling scheme (the
same main loop: registers hold the next K-tile while the block computes on the current one).

Forward and input gradient are one kernel, `igemm`: a GEMM whose rows m are output pixels of one
image, whose columns are output channels of one group (grid z), and whose reduction index j runs
over a table (_numba_cuda_tiles): A[m, j] is gathered from the input (forward) or the output
gradient (input gradient) at a row and column shifted by the table, zero outside; B[j, col] is a
weight. The input gradient runs once per stride phase, so that every table entry is a real tap.

The weight gradient, `wgrad`, is a GEMM with rows k, columns (c, r, s) and a reduction over
(n, p, q), walked as (n, p) rows of q-tiles so the inner loop needs no division; the rows are cut
into slices (grid z) whose partial sums are added by a second kernel.

Depthwise convolutions (groups = C) have one input channel per group, too little reduction for a
GEMM: they get direct kernels, one thread per output (or input, or filter tap).
"""
import numpy as np
from numba import cuda

from convbench.backends._numba_cuda_gemm import (
    PAD,
    _kernels,
    _tile_constants,
    elementwise,
    float_type,
    launch_1d,
    sum_slices,
)
from convbench.backends._numba_cuda_tiles import (
    Tiles,
    forward_table,
    input_gradient_phases,
    weight_grad_splits,
)


def igemm(t: Tiles, dtype):
    """The gathered-A implicit GEMM (forward and input gradient). Grid (ceil(M/BM),
    ceil(Ncol/BN), groups), block t.threads. Row m = (n, i, jj) over (N, Mi, Mj) reads
    a[n*a_n + g*a_g + tab[j,0] + row*cols + col] with row = i*ra + rb + tab[j,1] and
    col = jj*ca + cb + tab[j,2] inside [0, rows) x [0, cols); column col of group g reads
    b[g*b_g + col*b_c + tab[j,3]]; the result goes to
    out[n*o_n + g*o_g + col*o_c + (i*ora + orb)*OW + jj*oca + ocb] (+ bias[g*Ncol + col])."""
    key = ("igemm", t, np.dtype(dtype).str)
    if key in _kernels:
        return _kernels[key]
    BM, BN, BK, TM, TN = t.BM, t.BN, t.BK, t.TM, t.TN
    SM, SN, NT, AL, BL = _tile_constants(t)
    AW, BW = BM + PAD, BN + PAD
    ft = float_type(dtype)

    @cuda.jit(cache=True)
    def kernel(a, b, out, bias, has_bias, tab, J, M, Mi, Mj, a_n, a_g, rows, cols, ra, rb, ca,
               cb, Ncol, b_c, b_g, o_n, o_g, o_c, ora, orb, oca, ocb, OW):
        As = cuda.shared.array((2, BK, AW), ft)
        Bs = cuda.shared.array((2, BK, BW), ft)
        acc = cuda.local.array((TM, TN), ft)
        af = cuda.local.array(TM, ft)
        bf = cuda.local.array(TN, ft)
        va = cuda.local.array(AL, ft)
        vb = cuda.local.array(BL, ft)
        abase = cuda.local.array(AL, np.int64)
        arow = cuda.local.array(AL, np.int64)
        acol = cuda.local.array(AL, np.int64)
        bbase = cuda.local.array(BL, np.int64)
        tid = cuda.threadIdx.x
        tm = tid % SM
        tn = tid // SM
        m0 = cuda.blockIdx.x * BM
        n0 = cuda.blockIdx.y * BN
        g = cuda.blockIdx.z
        MM = Mi * Mj
        # what each of this thread's load slots reads, fixed for the whole reduction
        for slot in range(AL):
            idx = tid + slot * NT
            gm = m0 + idx % BM
            abase[slot] = -1
            if idx < BM * BK and gm < M:
                n = gm // MM
                rem = gm - n * MM
                i = rem // Mj
                abase[slot] = n * a_n + g * a_g
                arow[slot] = i * ra + rb
                acol[slot] = (rem - i * Mj) * ca + cb
        for slot in range(BL):
            idx = tid + slot * NT
            gc = n0 + idx // BK
            bbase[slot] = -1
            if idx < BK * BN and gc < Ncol:
                bbase[slot] = g * b_g + gc * b_c
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = ft(0)
        ntiles = (J + BK - 1) // BK
        for slot in range(AL):
            jr = (tid + slot * NT) // BM
            v = ft(0)
            if abase[slot] >= 0 and jr < J:
                r = arow[slot] + tab[jr, 1]
                c = acol[slot] + tab[jr, 2]
                if r >= 0 and r < rows and c >= 0 and c < cols:
                    v = a[abase[slot] + tab[jr, 0] + r * cols + c]
            va[slot] = v
        for slot in range(BL):
            jr = (tid + slot * NT) % BK
            v = ft(0)
            if bbase[slot] >= 0 and jr < J:
                v = b[bbase[slot] + tab[jr, 3]]
            vb[slot] = v
        for tile in range(ntiles):
            buf = tile % 2
            for slot in range(AL):
                idx = tid + slot * NT
                if idx < BM * BK:
                    As[buf, idx // BM, idx % BM] = va[slot]
            for slot in range(BL):
                idx = tid + slot * NT
                if idx < BK * BN:
                    Bs[buf, idx % BK, idx // BK] = vb[slot]
            cuda.syncthreads()
            if tile + 1 < ntiles:
                j0 = (tile + 1) * BK
                for slot in range(AL):
                    jr = j0 + (tid + slot * NT) // BM
                    v = ft(0)
                    if abase[slot] >= 0 and jr < J:
                        r = arow[slot] + tab[jr, 1]
                        c = acol[slot] + tab[jr, 2]
                        if r >= 0 and r < rows and c >= 0 and c < cols:
                            v = a[abase[slot] + tab[jr, 0] + r * cols + c]
                    va[slot] = v
                for slot in range(BL):
                    jr = j0 + (tid + slot * NT) % BK
                    v = ft(0)
                    if bbase[slot] >= 0 and jr < J:
                        v = b[bbase[slot] + tab[jr, 3]]
                    vb[slot] = v
            for kk in range(BK):
                for i in range(TM):
                    af[i] = As[buf, kk, tm + i * SM]
                for j in range(TN):
                    bf[j] = Bs[buf, kk, tn + j * SN]
                for i in range(TM):
                    for j in range(TN):
                        acc[i, j] += af[i] * bf[j]
        # output offsets first, in a loop of their own: the store loop below then stays small
        # enough to unroll, which keeps `acc` in registers
        obase = cuda.local.array(TM, np.int64)
        for i in range(TM):
            gm = m0 + tm + i * SM
            obase[i] = -1
            if gm < M:
                n = gm // MM
                rem = gm - n * MM
                ii = rem // Mj
                obase[i] = (n * o_n + g * o_g + (ii * ora + orb) * OW + (rem - ii * Mj) * oca
                            + ocb)
        for i in range(TM):
            for j in range(TN):
                gc = n0 + tn + j * SN
                if obase[i] >= 0 and gc < Ncol:
                    v = acc[i, j]
                    if has_bias:
                        v += bias[g * Ncol + gc]
                    out[obase[i] + gc * o_c] = v

    _kernels[key] = kernel
    return kernel


def wgrad(t: Tiles, dtype):
    """The weight gradient as a GEMM: rows k (of one group), columns (c, r, s), reduction over
    rows (n, p) of slice z % slices and q-tiles of BK. Grid (ceil(Kg/BM), ceil(Cg*R*S/BN),
    groups*slices); writes partial sums to out[slice*K*CRS + (g*Kg + k)*CRS + col]."""
    key = ("wgrad", t, np.dtype(dtype).str)
    if key in _kernels:
        return _kernels[key]
    BM, BN, BK, TM, TN = t.BM, t.BN, t.BK, t.TM, t.TN
    SM, SN, NT, AL, BL = _tile_constants(t)
    AW, BW = BM + PAD, BN + PAD
    ft = float_type(dtype)

    @cuda.jit(cache=True)
    def kernel(dy, x, out, slices, rows_per, NP, K, Kg, C, Cg, H, W, P, Q, R, S, sh, sw, pt, pl,
               dh, dw):
        As = cuda.shared.array((2, BK, AW), ft)
        Bs = cuda.shared.array((2, BK, BW), ft)
        acc = cuda.local.array((TM, TN), ft)
        af = cuda.local.array(TM, ft)
        bf = cuda.local.array(TN, ft)
        va = cuda.local.array(AL, ft)
        vb = cuda.local.array(BL, ft)
        aoff = cuda.local.array(AL, np.int64)
        boff = cuda.local.array(BL, np.int64)
        brow = cuda.local.array(BL, np.int64)
        bcol = cuda.local.array(BL, np.int64)
        tid = cuda.threadIdx.x
        tm = tid % SM
        tn = tid // SM
        m0 = cuda.blockIdx.x * BM
        n0 = cuda.blockIdx.y * BN
        g = cuda.blockIdx.z // slices
        sl = cuda.blockIdx.z % slices
        RS = R * S
        CRS = Cg * RS
        PQ = P * Q
        for slot in range(AL):
            idx = tid + slot * NT
            gk = m0 + idx // BK
            aoff[slot] = -1
            if idx < BM * BK and gk < Kg:
                aoff[slot] = (g * Kg + gk) * PQ
        for slot in range(BL):
            idx = tid + slot * NT
            gc = n0 + idx // BK
            boff[slot] = -1
            if idx < BK * BN and gc < CRS:
                c = gc // RS
                rs = gc - c * RS
                r = rs // S
                boff[slot] = (g * Cg + c) * H * W
                brow[slot] = r * dh - pt
                bcol[slot] = (rs - r * S) * dw - pl
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = ft(0)
        row0 = sl * rows_per
        nrows = min(rows_per, NP - row0)
        qtiles = (Q + BK - 1) // BK
        ntiles = nrows * qtiles if nrows > 0 else 0
        for tile in range(ntiles + 1):
            # tile `tile` is loaded into registers here, and stored to shared at the next turn
            if tile > 0:
                buf = (tile - 1) % 2
                for slot in range(AL):
                    idx = tid + slot * NT
                    if idx < BM * BK:
                        As[buf, idx % BK, idx // BK] = va[slot]
                for slot in range(BL):
                    idx = tid + slot * NT
                    if idx < BK * BN:
                        Bs[buf, idx % BK, idx // BK] = vb[slot]
                cuda.syncthreads()
            if tile < ntiles:
                row = row0 + tile // qtiles
                q0 = (tile % qtiles) * BK
                n = row // P
                p = row - n * P
                ybase = n * K * PQ + p * Q
                xbase = n * C * H * W
                hb = p * sh
                for slot in range(AL):
                    q = q0 + (tid + slot * NT) % BK
                    v = ft(0)
                    if aoff[slot] >= 0 and q < Q:
                        v = dy[ybase + aoff[slot] + q]
                    va[slot] = v
                for slot in range(BL):
                    q = q0 + (tid + slot * NT) % BK
                    v = ft(0)
                    if boff[slot] >= 0 and q < Q:
                        h = hb + brow[slot]
                        w = q * sw + bcol[slot]
                        if h >= 0 and h < H and w >= 0 and w < W:
                            v = x[xbase + boff[slot] + h * W + w]
                    vb[slot] = v
            if tile > 0:
                buf = (tile - 1) % 2
                for kk in range(BK):
                    for i in range(TM):
                        af[i] = As[buf, kk, tm + i * SM]
                    for j in range(TN):
                        bf[j] = Bs[buf, kk, tn + j * SN]
                    for i in range(TM):
                        for j in range(TN):
                            acc[i, j] += af[i] * bf[j]
        obase = sl * K * CRS + g * Kg * CRS
        for i in range(TM):
            gk = m0 + tm + i * SM
            if gk < Kg:
                for j in range(TN):
                    gc = n0 + tn + j * SN
                    if gc < CRS:
                        out[obase + gk * CRS + gc] = acc[i, j]

    _kernels[key] = kernel
    return kernel


# --- depthwise (groups = C, one input channel per group) ------------------------------------------
def _make_dw_fwd(ft):
    @cuda.jit(cache=True)
    def dw_fwd(x, w, bias, has_bias, y, total, C, H, W, K, P, Q, R, S, sh, sw, pt, pl, dh, dw):
        mult = K // C
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            plane = idx // (P * Q)
            pq = idx - plane * P * Q
            p = pq // Q
            q = pq - p * Q
            n = plane // K
            k = plane - n * K
            xb = (n * C + k // mult) * H * W
            acc = ft(0)
            for r in range(R):
                h = p * sh - pt + r * dh
                if h >= 0 and h < H:
                    for s in range(S):
                        ww = q * sw - pl + s * dw
                        if ww >= 0 and ww < W:
                            acc += x[xb + h * W + ww] * w[(k * R + r) * S + s]
            if has_bias:
                acc += bias[k]
            y[idx] = acc
    return dw_fwd


def _make_dw_bwd_data(ft):
    @cuda.jit(cache=True)
    def dw_bwd_data(dy, w, dx, total, C, H, W, K, P, Q, R, S, sh, sw, pt, pl, dh, dw):
        mult = K // C
        for idx in range(cuda.grid(1), total, cuda.gridsize(1)):
            plane = idx // (H * W)
            hw = idx - plane * H * W
            h = hw // W
            x = hw - h * W
            n = plane // C
            c = plane - n * C
            acc = ft(0)
            for m in range(mult):
                k = c * mult + m
                yb = (n * K + k) * P * Q
                for r in range(R):
                    ph = h + pt - r * dh
                    if ph >= 0 and ph % sh == 0 and ph // sh < P:
                        for s in range(S):
                            qw = x + pl - s * dw
                            if qw >= 0 and qw % sw == 0 and qw // sw < Q:
                                acc += dy[yb + (ph // sh) * Q + qw // sw] * w[(k * R + r) * S + s]
            dx[idx] = acc
    return dw_bwd_data


def _make_dw_bwd_weights(ft, threads):
    @cuda.jit(cache=True)
    def dw_bwd_weights(dy, x, dwt, N, C, H, W, K, P, Q, R, S, sh, sw, pt, pl, dh, dw):
        # one block per filter tap (k, r, s): its threads stride over (n, p, q), then a tree sum
        part = cuda.shared.array(threads, ft)
        tap = cuda.blockIdx.x
        k = tap // (R * S)
        rs = tap - k * R * S
        r = rs // S
        s = rs - r * S
        c = k // (K // C)
        tid = cuda.threadIdx.x
        acc = ft(0)
        PQ = P * Q
        for idx in range(tid, N * PQ, threads):
            n = idx // PQ
            pq = idx - n * PQ
            p = pq // Q
            q = pq - p * Q
            h = p * sh - pt + r * dh
            ww = q * sw - pl + s * dw
            if h >= 0 and h < H and ww >= 0 and ww < W:
                acc += dy[(n * K + k) * PQ + pq] * x[((n * C + c) * H + h) * W + ww]
        part[tid] = acc
        cuda.syncthreads()
        half = threads // 2
        while half > 0:
            if tid < half:
                part[tid] += part[tid + half]
            cuda.syncthreads()
            half //= 2
        if tid == 0:
            dwt[tap] = part[0]
    return dw_bwd_weights


# --- host drivers: flat device arrays in, flat device arrays out ----------------------------------
class ConvPlans:
    """Device copies of the tables of each problem, made once (uploads stay out of timed calls)."""

    def __init__(self, cuda_module):
        self.cuda = cuda_module
        self._tables: dict = {}

    def forward(self, p):
        key = ("fwd", p)
        if key not in self._tables:
            self._tables[key] = self.cuda.to_device(forward_table(p))
        return self._tables[key]

    def input_gradient(self, p):
        key = ("bwd-data", p)
        if key not in self._tables:
            self._tables[key] = [(ph, self.cuda.to_device(ph.table if len(ph.table) else
                                                          np.zeros((1, 4), np.int32)))
                                 for ph in input_gradient_phases(p)]
        return self._tables[key]


def conv_fwd(plans, p, x, w, b, y, tiles: Tiles):
    """y = conv2d(x, w) + b, all flat device arrays (b None for none)."""
    tab = plans.forward(p)
    (sh, sw), ((pt, _), (pl, _)) = p.stride, p.padding
    M = p.N * p.P * p.Q
    grid = (-(-M // tiles.BM), -(-p.Kg // tiles.BN), p.groups)
    HW, PQ = p.H * p.W, p.P * p.Q
    igemm(tiles, y.dtype)[grid, tiles.threads](
        x, w, y, y if b is None else b, b is not None, tab, p.Cg * p.R * p.S, M, p.P, p.Q,
        p.C * HW, p.Cg * HW, p.H, p.W, sh, -pt, sw, -pl,
        p.Kg, p.Cg * p.R * p.S, p.Kg * p.Cg * p.R * p.S,
        p.K * PQ, p.Kg * PQ, PQ, 1, 0, 1, 0, p.Q)


def conv_bwd_data(plans, p, dy, w, dx, tiles: Tiles):
    """dx = the input gradient of conv2d, one launch per stride phase."""
    (sh, sw) = p.stride
    HW, PQ = p.H * p.W, p.P * p.Q
    k = igemm(tiles, dx.dtype)
    for ph, tab in plans.input_gradient(p):
        M = p.N * ph.rows * ph.cols
        grid = (-(-M // tiles.BM), -(-p.Cg // tiles.BN), p.groups)
        k[grid, tiles.threads](
            dy, w, dx, dx, False, tab, len(ph.table), M, ph.rows, ph.cols,
            p.K * PQ, p.Kg * PQ, p.P, p.Q, 1, ph.hq0, 1, ph.wq0,
            p.Cg, p.R * p.S, p.Kg * p.Cg * p.R * p.S,
            p.C * HW, p.Cg * HW, HW, sh, ph.h0, sw, ph.w0, p.W)


def conv_bwd_weights(p, dy, x, dw, tiles: Tiles, multiprocessors: int, threads: int,
                     workspace=None):
    """dw = the weight gradient of conv2d; slices of the reduction add up in a second kernel
    (a workspace of slices * dw.size, allocated here unless given)."""
    slices = weight_grad_splits(p, tiles, multiprocessors)
    NP = p.N * p.P
    rows_per = -(-NP // slices)
    slices = -(-NP // rows_per)
    out = dw
    if slices > 1:
        out = workspace if workspace is not None else cuda.device_array(slices * dw.size,
                                                                         dw.dtype)
    (sh, sw), ((pt, _), (pl, _)), (dh, dwl) = p.stride, p.padding, p.dilation
    grid = (-(-p.Kg // tiles.BM), -(-(p.Cg * p.R * p.S) // tiles.BN), p.groups * slices)
    wgrad(tiles, dw.dtype)[grid, tiles.threads](
        dy, x, out, slices, rows_per, NP, p.K, p.Kg, p.C, p.Cg, p.H, p.W, p.P, p.Q, p.R, p.S,
        sh, sw, pt, pl, dh, dwl)
    if slices > 1:
        sum_slices(out, dw, slices, dw.size, threads)


def _geometry(p):
    (sh, sw), ((pt, _), (pl, _)), (dh, dw) = p.stride, p.padding, p.dilation
    return (p.C, p.H, p.W, p.K, p.P, p.Q, p.R, p.S, sh, sw, pt, pl, dh, dw)


def depthwise_fwd(p, x, w, b, y, threads: int):
    k = elementwise("dw_fwd", y.dtype, _make_dw_fwd)
    launch_1d(k, y.size, threads, x, w, y if b is None else b, b is not None, y, y.size,
              *_geometry(p))


def depthwise_bwd_data(p, dy, w, dx, threads: int):
    k = elementwise("dw_bwd_data", dx.dtype, _make_dw_bwd_data)
    launch_1d(k, dx.size, threads, dy, w, dx, dx.size, *_geometry(p))


def depthwise_bwd_weights(p, dy, x, dw, threads: int):
    k = elementwise(f"dw_bwd_weights{threads}", dw.dtype,
                    lambda ft: _make_dw_bwd_weights(ft, threads))
    k[p.K * p.R * p.S, threads](dy, x, dw, p.N, *_geometry(p))
