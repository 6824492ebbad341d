"""CUDA kernels of the numba-cuda backend (imported on first use, after numba_cuda._cuda()).

Kept in their own module so that `cuda` is a module global: the CUDA simulator swaps module
globals for its fake `cuda`, not closure variables.
"""
import math

from numba import cuda


@cuda.jit(device=True)
def _unravel(idx, d1, d2, d3):
    """(i0, i1, i2, i3) of a flat row-major index into an array of shape (., d1, d2, d3)."""
    return idx // (d1 * d2 * d3), (idx // (d2 * d3)) % d1, (idx // d3) % d2, idx % d3

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
        n, k, p, q = _unravel(idx, K, P, Q)
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
        n, c, xh, xw = _unravel(idx, C, H, W)
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
        k, c, r, s = _unravel(idx, Cg, R, S)
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


# --- pooling --------------------------------------------------------------------------------------
@cuda.jit(device=True)
def _window_argmax(x, n, c, h0, w0, kh, kw, dh, dw):
    H, W = x.shape[2], x.shape[3]
    best = x[n, c, 0, 0]
    bh, bw = -1, -1
    for a in range(kh):
        h = h0 + a * dh
        if h >= 0 and h < H:
            for b in range(kw):
                w = w0 + b * dw
                if w >= 0 and w < W:
                    v = x[n, c, h, w]
                    if bh < 0 or v > best or v != v:
                        best = v
                        bh = h
                        bw = w
    return best, bh, bw


@cuda.jit
def max_pool_fwd(x, y, kh, kw, sh, sw, ph, pw, dh, dw):
    N, C, P, Q = y.shape
    for idx in range(cuda.grid(1), N * C * P * Q, cuda.gridsize(1)):
        n, c, i, j = _unravel(idx, C, P, Q)
        best, bh, bw = _window_argmax(x, n, c, i * sh - ph, j * sw - pw, kh, kw, dh, dw)
        y[n, c, i, j] = best


@cuda.jit
def max_pool_bwd(dy, x, dx, kh, kw, sh, sw, ph, pw, dh, dw, zero):
    # one thread per input element, gathering from every window that holds it: no atomics
    N, C, H, W = dx.shape
    P, Q = dy.shape[2], dy.shape[3]
    for idx in range(cuda.grid(1), N * C * H * W, cuda.gridsize(1)):
        n, c, h, w = _unravel(idx, C, H, W)
        acc = zero
        for a in range(kh):
            hh = h + ph - a * dh
            if hh >= 0 and hh % sh == 0 and hh // sh < P:
                i = hh // sh
                for b in range(kw):
                    ww = w + pw - b * dw
                    if ww >= 0 and ww % sw == 0 and ww // sw < Q:
                        j = ww // sw
                        best, bh, bw = _window_argmax(x, n, c, i * sh - ph, j * sw - pw,
                                                      kh, kw, dh, dw)
                        if bh == h and bw == w:
                            acc += dy[n, c, i, j]
        dx[n, c, h, w] = acc


@cuda.jit
def avg_pool_fwd(x, y, div, kh, kw, sh, sw, ph, pw, zero):
    N, C, P, Q = y.shape
    H, W = x.shape[2], x.shape[3]
    for idx in range(cuda.grid(1), N * C * P * Q, cuda.gridsize(1)):
        n, c, i, j = _unravel(idx, C, P, Q)
        h0 = i * sh - ph
        w0 = j * sw - pw
        acc = zero
        for h in range(max(h0, 0), min(h0 + kh, H)):
            for w in range(max(w0, 0), min(w0 + kw, W)):
                acc += x[n, c, h, w]
        y[n, c, i, j] = acc / div[i, j]


@cuda.jit
def avg_pool_bwd(dy, dx, div, kh, kw, sh, sw, ph, pw, zero):
    N, C, H, W = dx.shape
    P, Q = dy.shape[2], dy.shape[3]
    for idx in range(cuda.grid(1), N * C * H * W, cuda.gridsize(1)):
        n, c, h, w = _unravel(idx, C, H, W)
        acc = zero
        for a in range(kh):
            hh = h + ph - a
            if hh >= 0 and hh % sh == 0 and hh // sh < P:
                i = hh // sh
                for b in range(kw):
                    ww = w + pw - b
                    if ww >= 0 and ww % sw == 0 and ww // sw < Q:
                        j = ww // sw
                        acc += dy[n, c, i, j] / div[i, j]
        dx[n, c, h, w] = acc


# --- recurrent cells: a tiled GEMM and one fused gate kernel per step ----------------------------
TILE = 16


@cuda.jit
def matmul_bt_bias(a, b, bias, out, zero):
    """out = a @ b.T + bias; a (M, K), b (Nc, K), bias (Nc,). 16x16 tiles in shared memory."""
    ta = cuda.shared.array((16, 16), dtype=a.dtype)
    tb = cuda.shared.array((16, 16), dtype=a.dtype)
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    row = cuda.blockIdx.y * TILE + ty
    col = cuda.blockIdx.x * TILE + tx
    M, K = a.shape
    Nc = b.shape[0]
    acc = zero
    for k0 in range(0, K, TILE):
        if row < M and k0 + tx < K:
            ta[ty, tx] = a[row, k0 + tx]
        else:
            ta[ty, tx] = 0
        if col < Nc and k0 + ty < K:
            tb[ty, tx] = b[col, k0 + ty]
        else:
            tb[ty, tx] = 0
        cuda.syncthreads()
        for kk in range(TILE):
            acc += ta[ty, kk] * tb[kk, tx]
        cuda.syncthreads()
    if row < M and col < Nc:
        out[row, col] = acc + bias[col]


@cuda.jit(device=True)
def _sigmoid(a, one):
    return one / (one + math.exp(-a))


@cuda.jit
def lstm_gates(gi, gh, c, hn, cn, one):
    N, H = c.shape
    for idx in range(cuda.grid(1), N * H, cuda.gridsize(1)):
        n = idx // H
        j = idx % H
        i = _sigmoid(gi[n, j] + gh[n, j], one)
        f = _sigmoid(gi[n, H + j] + gh[n, H + j], one)
        g = math.tanh(gi[n, 2 * H + j] + gh[n, 2 * H + j])
        o = _sigmoid(gi[n, 3 * H + j] + gh[n, 3 * H + j], one)
        cc = f * c[n, j] + i * g
        cn[n, j] = cc
        hn[n, j] = o * math.tanh(cc)


@cuda.jit
def gru_gates(gi, gh, h, hn, one):
    N, H = h.shape
    for idx in range(cuda.grid(1), N * H, cuda.gridsize(1)):
        b = idx // H
        j = idx % H
        r = _sigmoid(gi[b, j] + gh[b, j], one)
        z = _sigmoid(gi[b, H + j] + gh[b, H + j], one)
        nn = math.tanh(gi[b, 2 * H + j] + r * gh[b, 2 * H + j])
        hn[b, j] = (one - z) * nn + z * h[b, j]


@cuda.jit
def tanh_gates(gi, gh, h, hn, one):
    N, H = h.shape
    for idx in range(cuda.grid(1), N * H, cuda.gridsize(1)):
        b = idx // H
        j = idx % H
        hn[b, j] = math.tanh(gi[b, j] + gh[b, j])
