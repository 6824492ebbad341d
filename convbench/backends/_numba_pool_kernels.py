"""Numba kernels of numba-cpu pooling: tasks own whole (image, channel) planes, so they never write
the same memory. Each kernel is a serial `*_planes` loop over a range of planes and a parallel
driver that splits the planes; small problems call the serial loop directly, since waking the
thread pool costs more than they take. The max scan follows PyTorch: row-major window order, a
value replaces the running maximum when greater or NaN."""
import numpy as np
from numba import njit, prange


@njit(cache=True, inline="always")
def _argmax(x, n, c, h0, w0, kh, kw, dh, dw):
    H, W = x.shape[2], x.shape[3]
    best = x[n, c, max(h0, 0), max(w0, 0)]
    bh, bw = -1, -1
    for a in range(kh):
        h = h0 + a * dh
        if h < 0 or h >= H:
            continue
        for b in range(kw):
            w = w0 + b * dw
            if w < 0 or w >= W:
                continue
            v = x[n, c, h, w]
            if bh < 0 or v > best or v != v:
                best, bh, bw = v, h, w
    return best, bh, bw


@njit(cache=True)
def max_fwd_planes(lo, hi, x, y, kh, kw, sh, sw, ph, pw, dh, dw, neg_inf):
    """Separable: the max over the window's rows first, a contiguous pass LLVM vectorises, then
    over its columns. A NaN anywhere in a window makes its output NaN."""
    N, C, P, Q = y.shape
    H, W = x.shape[2], x.shape[3]
    for plane in range(lo, hi):
        n, c = plane // C, plane % C
        m = np.empty(W, dtype=x.dtype)
        for i in range(P):
            m[:] = neg_inf
            h0 = i * sh - ph
            for a in range(kh):
                h = h0 + a * dh
                if h >= 0 and h < H:
                    row = x[n, c, h]
                    for w in range(W):
                        v = row[w]
                        if v > m[w] or v != v:
                            m[w] = v
            for j in range(Q):
                w0 = j * sw - pw
                best = neg_inf
                for b in range(kw):
                    w = w0 + b * dw
                    if w >= 0 and w < W:
                        v = m[w]
                        if v > best or v != v:
                            best = v
                y[n, c, i, j] = best


@njit(parallel=True, cache=True)
def max_fwd(x, y, kh, kw, sh, sw, ph, pw, dh, dw, neg_inf):
    total = y.shape[0] * y.shape[1]
    chunks = min(total, 64)
    for k in prange(chunks):
        max_fwd_planes(
            k * total // chunks, (k + 1) * total // chunks, x, y, kh, kw, sh, sw, ph, pw, dh, dw,
            neg_inf)


@njit(cache=True)
def max_bwd_planes(lo, hi, dy, x, dx, kh, kw, sh, sw, ph, pw, dh, dw):
    N, C, P, Q = dy.shape
    for plane in range(lo, hi):
        n, c = plane // C, plane % C
        for i in range(P):
            for j in range(Q):
                _, h, w = _argmax(x, n, c, i * sh - ph, j * sw - pw, kh, kw, dh, dw)
                dx[n, c, h, w] += dy[n, c, i, j]


@njit(parallel=True, cache=True)
def max_bwd(dy, x, dx, kh, kw, sh, sw, ph, pw, dh, dw):
    total = dy.shape[0] * dy.shape[1]
    chunks = min(total, 64)
    for k in prange(chunks):
        max_bwd_planes(
            k * total // chunks, (k + 1) * total // chunks, dy, x, dx, kh, kw, sh, sw, ph, pw, dh,
            dw)


@njit(cache=True)
def avg_fwd_planes(lo, hi, x, y, div, kh, kw, sh, sw, ph, pw):
    N, C, P, Q = y.shape
    H, W = x.shape[2], x.shape[3]
    for plane in range(lo, hi):
        n, c = plane // C, plane % C
        for i in range(P):
            h0 = i * sh - ph
            for j in range(Q):
                w0 = j * sw - pw
                total = y.dtype.type(0)
                for h in range(max(h0, 0), min(h0 + kh, H)):
                    for w in range(max(w0, 0), min(w0 + kw, W)):
                        total += x[n, c, h, w]
                y[n, c, i, j] = total / div[i, j]


@njit(parallel=True, cache=True)
def avg_fwd(x, y, div, kh, kw, sh, sw, ph, pw):
    total = y.shape[0] * y.shape[1]
    chunks = min(total, 64)
    for k in prange(chunks):
        avg_fwd_planes(
            k * total // chunks, (k + 1) * total // chunks, x, y, div, kh, kw, sh, sw, ph, pw)


@njit(cache=True)
def avg_bwd_planes(lo, hi, dy, dx, div, kh, kw, sh, sw, ph, pw):
    N, C, P, Q = dy.shape
    H, W = dx.shape[2], dx.shape[3]
    for plane in range(lo, hi):
        n, c = plane // C, plane % C
        for i in range(P):
            h0 = i * sh - ph
            for j in range(Q):
                w0 = j * sw - pw
                share = dy[n, c, i, j] / div[i, j]
                for h in range(max(h0, 0), min(h0 + kh, H)):
                    for w in range(max(w0, 0), min(w0 + kw, W)):
                        dx[n, c, h, w] += share


@njit(parallel=True, cache=True)
def avg_bwd(dy, dx, div, kh, kw, sh, sw, ph, pw):
    total = dy.shape[0] * dy.shape[1]
    chunks = min(total, 64)
    for k in prange(chunks):
        avg_bwd_planes(
            k * total // chunks, (k + 1) * total // chunks, dy, dx, div, kh, kw, sh, sw, ph, pw)
