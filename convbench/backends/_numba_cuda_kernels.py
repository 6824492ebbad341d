"""CUDA kernels of the numba-cuda backend (imported on first use, after numba_cuda._cuda()).

Kept in their own module so that `cuda` is a module global: the CUDA simulator swaps module
globals for its fake `cuda`, not closure variables.
"""
from numba import cuda

@cuda.jit
def conv_fwd(x, w, b, has_bias, y, sh, sw, pt, pl, dh, dw, groups, zero):
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    P, Q = y.shape[2], y.shape[3]
    Kg = K // groups
    total = N * K * P * Q
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for idx in range(start, total, step):
        q = idx % Q
        p = (idx // Q) % P
        k = (idx // (Q * P)) % K
        n = idx // (Q * P * K)
        c0 = (k // Kg) * Cg
        acc = zero
        for c in range(Cg):
            for r in range(R):
                h = p * sh - pt + r * dh
                if h < 0 or h >= H:
                    continue
                for s in range(S):
                    ww = q * sw - pl + s * dw
                    if ww >= 0 and ww < W:
                        acc += x[n, c0 + c, h, ww] * w[k, c, r, s]
        if has_bias:
            acc += b[k]
        y[n, k, p, q] = acc

@cuda.jit
def conv_bwd_data(dy, w, dx, sh, sw, pt, pl, dh, dw, groups, zero):
    N, C, H, W = dx.shape
    K, Cg, R, S = w.shape
    P, Q = dy.shape[2], dy.shape[3]
    Kg = K // groups
    total = N * C * H * W
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for idx in range(start, total, step):
        xw = idx % W
        xh = (idx // W) % H
        c = (idx // (W * H)) % C
        n = idx // (W * H * C)
        g = c // Cg
        cc = c - g * Cg
        acc = zero
        for r in range(R):
            ph = xh + pt - r * dh
            if ph < 0 or ph % sh != 0:
                continue
            p = ph // sh
            if p >= P:
                continue
            for s in range(S):
                qw = xw + pl - s * dw
                if qw < 0 or qw % sw != 0:
                    continue
                q = qw // sw
                if q >= Q:
                    continue
                for k in range(g * Kg, g * Kg + Kg):
                    acc += dy[n, k, p, q] * w[k, cc, r, s]
        dx[n, c, xh, xw] = acc

@cuda.jit
def conv_bwd_weights(dy, x, dwt, sh, sw, pt, pl, dh, dw, groups, zero):
    N, C, H, W = x.shape
    K, Cg, R, S = dwt.shape
    P, Q = dy.shape[2], dy.shape[3]
    Kg = K // groups
    total = K * Cg * R * S
    start = cuda.grid(1)
    step = cuda.gridsize(1)
    for idx in range(start, total, step):
        s = idx % S
        r = (idx // S) % R
        c = (idx // (S * R)) % Cg
        k = idx // (S * R * Cg)
        ci = (k // Kg) * Cg + c
        acc = zero
        for n in range(N):
            for p in range(P):
                h = p * sh - pt + r * dh
                if h < 0 or h >= H:
                    continue
                for q in range(Q):
                    ww = q * sw - pl + s * dw
                    if ww >= 0 and ww < W:
                        acc += dy[n, k, p, q] * x[n, ci, h, ww]
        dwt[k, c, r, s] = acc
