"""Numba kernels of the im2col backends: the unfold (im2col) and its adjoint (col2im), each
parallel (im2col-numba, whose GEMM runs in the same Numba thread pool) and serial, on the calling
thread (im2col, whose GEMM is the BLAS's: a Numba parallel region between BLAS calls would leave
one pool's idle workers busy-waiting beside the other's).

cols[(c*R + r)*S + s, (n*P + i)*Q + j] = xpad[n, c, i*sh + r*dh, j*sw + s*dw], with the padding
never materialised: positions outside the input are written as zeros (unfold) or skipped (fold).
"""
from numba import njit, prange


@njit(cache=True, inline="always")
def _inside(Q, sw, off, W):
    """[j0, j1): the output columns j whose input column j*sw + off lies inside [0, W)."""
    j0 = 0
    while j0 < Q and j0 * sw + off < 0:
        j0 += 1
    j1 = Q
    while j1 > j0 and (j1 - 1) * sw + off >= W:
        j1 -= 1
    return j0, j1


@njit(cache=True, inline="always")
def _unfold_row(x, cols, row, R, S, sh, sw, pt, pl, dh, dw, P, Q):
    N, C, H, W = x.shape
    c = row // (R * S)
    r = (row // S) % R
    s = row % S
    out = cols[row]
    off = s * dw - pl
    j0, j1 = _inside(Q, sw, off, W)
    for n in range(N):
        for i in range(P):
            base = (n * P + i) * Q
            h = i * sh + r * dh - pt
            if h < 0 or h >= H:
                for j in range(Q):
                    out[base + j] = 0
                continue
            src = x[n, c, h]
            for j in range(j0):
                out[base + j] = 0
            if sw == 1:
                for j in range(j0, j1):
                    out[base + j] = src[j + off]
            elif sw == 2:                  # a constant stride LLVM vectorises
                for j in range(j0, j1):
                    out[base + j] = src[j * 2 + off]
            else:
                for j in range(j0, j1):
                    out[base + j] = src[j * sw + off]
            for j in range(j1, Q):
                out[base + j] = 0


@njit(parallel=True, cache=True)
def unfold(x, cols, R, S, sh, sw, pt, pl, dh, dw, P, Q):
    for row in prange(cols.shape[0]):
        _unfold_row(x, cols, row, R, S, sh, sw, pt, pl, dh, dw, P, Q)


@njit(cache=True)
def unfold_serial(x, cols, R, S, sh, sw, pt, pl, dh, dw, P, Q):
    for row in range(cols.shape[0]):
        _unfold_row(x, cols, row, R, S, sh, sw, pt, pl, dh, dw, P, Q)


@njit(cache=True, inline="always")
def _fold_channel(cols, dx, c, R, S, sh, sw, pt, pl, dh, dw, P, Q):
    N, C, H, W = dx.shape
    for r in range(R):
        for s in range(S):
            row = cols[(c * R + r) * S + s]
            off = s * dw - pl
            j0, j1 = _inside(Q, sw, off, W)
            for n in range(N):
                for i in range(P):
                    h = i * sh + r * dh - pt
                    if h < 0 or h >= H:
                        continue
                    dst = dx[n, c, h]
                    base = (n * P + i) * Q
                    for j in range(j0, j1):
                        dst[j * sw + off] += row[base + j]


@njit(parallel=True, cache=True)
def fold(cols, dx, R, S, sh, sw, pt, pl, dh, dw, P, Q):
    """dx[n, c, h, w] = sum of the cols entries unfold took from (n, c, h, w); dx zeroed."""
    for c in prange(dx.shape[1]):
        _fold_channel(cols, dx, c, R, S, sh, sw, pt, pl, dh, dw, P, Q)


@njit(cache=True)
def fold_serial(cols, dx, R, S, sh, sw, pt, pl, dh, dw, P, Q):
    for c in range(dx.shape[1]):
        _fold_channel(cols, dx, c, R, S, sh, sw, pt, pl, dh, dw, P, Q)
