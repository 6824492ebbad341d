"""Layout conversions of the direct convolution (see conv.py): NCHW <-> channel-blocked, and the
weights into the kernels' order. Compiled, parallel; imported on first use.

A blocked array is (N, B, nph, Hb, Wb, L): B blocks of L channels, each split into nph =
sh*sw phase planes of Hb x Wb positions with the L channels of a position adjacent. `chmap[b*L +
l]` names the channel that block b's lane l holds (-1: a zero lane).
"""
import numpy as np
from numba import njit, prange

_FLAGS = {"error_model": "numpy", "boundscheck": False, "nogil": True, "cache": True}


@njit(inline="always")
def fill_plane(x, n, plane, cmap, a, e, sh, sw, pt, pl, i0):
    """plane[i, j, l] = x[n, cmap[l], a + sh*(i0 + i) - pt, e + sw*j - pl] (zero outside x and
    for cmap[l] < 0): rows i0 .. of one phase plane (a, e) of one channel block."""
    _, _, H, W = x.shape
    Hb, Wb, L = plane.shape
    zero = plane.dtype.type(0)
    # columns j whose source column e + sw*j - pl lies in [0, W)
    j0 = min(Wb, max(0, -(-(pl - e) // sw)))
    j1 = min(Wb, max(j0, -(-(W + pl - e) // sw)))
    full = True
    for lane in range(L):
        full = full and cmap[lane] >= 0
    for i in range(Hb):
        h = a + sh * (i0 + i) - pt
        row = plane[i]
        if h < 0 or h >= H:
            for j in range(Wb):
                for lane in range(L):
                    row[j, lane] = zero
            continue
        for j in range(j0):
            for lane in range(L):
                row[j, lane] = zero
        for j in range(j1, Wb):
            for lane in range(L):
                row[j, lane] = zero
        if full:
            # position by position: one contiguous vector's worth of stores from L reads
            # (faster than lane by lane, whose stores are a vector apart)
            for j in range(j0, j1):
                col = e + sw * j - pl
                r = row[j]
                for lane in range(L):
                    r[lane] = x[n, cmap[lane], h, col]
            continue
        for lane in range(L):
            c = cmap[lane]
            if c < 0:
                for j in range(j0, j1):
                    row[j, lane] = zero
            else:
                src = x[n, c, h]
                for j in range(j0, j1):
                    row[j, lane] = src[e + sw * j - pl]


@njit(parallel=True, **_FLAGS)
def to_blocked(x, out, chmap, sh, sw, pt, pl):
    """out[n, b, a*sw + e, i, j, l] = x[n, chmap[b*L + l], a + sh*i - pt, e + sw*j - pl], zero
    where that lies outside x or the lane is a zero lane."""
    N = x.shape[0]
    _, B, nph, _, _, L = out.shape
    for task in prange(N * B * nph):
        ph = task % nph
        r = task // nph
        b = r % B
        n = r // B
        fill_plane(x, n, out[n, b, ph], chmap[b * L:(b + 1) * L], ph // sw, ph % sw, sh, sw, pt,
                   pl, 0)


@njit(**_FLAGS)
def fill_slab(x, n, slab, chmap, sh, sw, pt, pl, i0):
    """slab (B, nph, rows, Wb, L) = rows i0 .. i0 + rows - 1 of image n's blocked phase planes
    (to_blocked's layout, on the calling thread)."""
    B, nph, _, _, L = slab.shape
    for b in range(B):
        for ph in range(nph):
            fill_plane(x, n, slab[b, ph], chmap[b * L:(b + 1) * L], ph // sw, ph % sw, sh, sw,
                       pt, pl, i0)


@njit(parallel=True, **_FLAGS)
def from_blocked(yb, out, pos, sh, sw, bias, add_bias):
    """out[n, k, h, w] = yb[n, pos[k] // L, (h % sh)*sw + w % sw, h // sh, w // sw, pos[k] % L]
    (+ bias[k]): the inverse of to_blocked's layout, cropped to out."""
    N, K, Ho, Wo = out.shape
    L = yb.shape[5]
    for task in prange(N * K):
        n = task // K
        k = task % K
        b = pos[k] // L
        lane = pos[k] % L
        add = bias[k] if add_bias else out.dtype.type(0)
        for h in range(Ho):
            a = h % sh
            i = h // sh
            dst = out[n, k, h]
            for e in range(min(sw, Wo)):
                src = yb[n, b, a * sw + e, i]
                for j in range((Wo - e + sw - 1) // sw):
                    dst[e + sw * j] = src[j, lane] + add


@njit(parallel=True, **_FLAGS)
def block_weights(wsrc, out, taps):
    """out[g, kb, cb, t, ci, kk] = wsrc[g, kb*KK + kk, cb*L + ci, taps[t]] (zero past wsrc's
    output or input channels), with KK = NKB*L: the forward kernels' weight order, for any
    (strided) view wsrc (G, Ko, Ci, T0)."""
    G, Ko, Ci, _ = wsrc.shape
    _, KBG, CB, T, L, KK = out.shape
    zero = out.dtype.type(0)
    for task in prange(G * KBG * CB):
        cb = task % CB
        r = task // CB
        kb = r % KBG
        g = r // KBG
        for t in range(T):
            tt = taps[t]
            for ci in range(L):
                c = cb * L + ci
                dst = out[g, kb, cb, t, ci]
                for kk in range(KK):
                    k = kb * KK + kk
                    dst[kk] = wsrc[g, k, c, tt] if k < Ko and c < Ci else zero


@njit(parallel=True, **_FLAGS)
def sum_splits(acc, out):
    """out[i] = sum over s of acc[s, i], in order of s (acc (S, M), out (M,))."""
    S, M = acc.shape
    chunk = 4096
    for task in prange((M + chunk - 1) // chunk):
        lo = task * chunk
        hi = min(M, lo + chunk)
        for i in range(lo, hi):
            out[i] = acc[0, i]
        for s in range(1, S):
            src = acc[s]
            for i in range(lo, hi):
                out[i] += src[i]


def channel_map(blocks: int, lanes: int, first: np.ndarray, count: np.ndarray,
                step: int = 1) -> np.ndarray:
    """chmap for blocks whose lanes hold channels first[b] + step*l for l < count[b] (-1
    after)."""
    lane = np.arange(lanes)
    m = first[:, None] + step * lane[None, :]
    m[lane[None, :] >= count[:, None]] = -1
    return m.reshape(blocks * lanes).astype(np.int64)


@njit(parallel=True, fastmath={"contract"}, **_FLAGS)
def dw_weight_grad(xf, dyf, acc, toff, N, P, Q, x_img, x_cb, x_row, d_img, d_j, d_cb, d_row):
    """Depthwise weight gradient: acc[s, j, cb, t, l] = sum over split s's share of the N*P
    output rows and the Q positions of a row of dy[n, j*Cb + cb, 0, h, q, l] *
    x[n, cb, ., toff[t] + h row + q, l] (blocked layouts flattened)."""
    S, M, CB, T, L = acc.shape
    total = N * P
    for task in prange(S * M * CB):
        sp = task // (M * CB)
        r = task % (M * CB)
        j = r // CB
        cb = r % CB
        a = acc[sp, j, cb]
        r0 = sp * total // S
        r1 = (sp + 1) * total // S
        for row in range(r0, r1):
            n = row // P
            h = row % P
            xo = n * x_img + cb * x_cb + h * x_row
            d = dyf[n * d_img + j * d_j + cb * d_cb + h * d_row:][:Q * L]
            for t in range(T):
                xs = xf[xo + toff[t]:][:Q * L]
                at = a[t]
                for q in range(Q):
                    for lane in range(L):
                        at[lane] += d[q * L + lane] * xs[q * L + lane]


@njit(**_FLAGS)
def checksum(a):
    """Two 64-bit sums over the words of a (1-D uint32 or uint64): of a[i]*(2i + 1) and of
    a[i]*(a[i] | 1), wrapping; any change to one word changes the first, and changes that
    cancel in it rarely cancel in the second. On the calling thread: it runs at memory speed
    there, and a parallel version of the same loop ran slower (LLVM left it scalar)."""
    s1 = np.uint64(0)
    s2 = np.uint64(0)
    for i in range(a.size):
        v = np.uint64(a[i])
        s1 += v * np.uint64(2 * i + 1)
        s2 += v * (v | np.uint64(1))
    return s1, s2


@njit(inline="always")
def _unblock(acc, first, dw, task):
    S, G, nkt, nct, T, KT, CL = acc.shape
    Cg = dw.shape[2]
    g = task // nkt
    kq = task % nkt
    for kt in range(KT):
        k = first[kq] + kt
        if kq + 1 < nkt and k >= first[kq + 1]:
            continue      # the next KT writes this channel
        dst = dw[g, k]
        for cg in range(nct):
            # one (T, CL) slice of each split, written as CL rows of T: dw's order
            for cl in range(min(CL, Cg - cg * CL)):
                row = dst[cg * CL + cl]
                for t in range(T):
                    row[t] = acc[0, g, kq, cg, t, kt, cl]
                for sp in range(1, S):
                    for t in range(T):
                        row[t] += acc[sp, g, kq, cg, t, kt, cl]


@njit(parallel=True, **_FLAGS)
def unblock_weight_grad(acc, first, dw):
    """dw[g, first[kq] + kt, c, t] = sum over splits s, in order, of acc[s, g, kq, c // CL, t,
    kt, c % CL] (CL = NCB*L): the weight-gradient kernels' partial sums in (G, Kg, Cg, T)
    order; a KT whose first channel was shifted back leaves its channels to the next."""
    for task in prange(acc.shape[1] * acc.shape[2]):
        _unblock(acc, first, dw, task)


@njit(**_FLAGS)
def unblock_weight_grad_serial(acc, first, dw):
    """unblock_weight_grad on the calling thread (small gradients: no threads to wake)."""
    for task in range(acc.shape[1] * acc.shape[2]):
        _unblock(acc, first, dw, task)

