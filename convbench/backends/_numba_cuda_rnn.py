"""numba-cuda recurrent layers (tanh RNN, LSTM, GRU), forward and backpropagation through time.

Loaded on first use (numba_cuda.KERNELS). PyTorch's layout and gate order (ops.rnn).

Forward: the input projection of every step is one GEMM up front, gi = x w_ih^T + b_ih, shape
(T*N, G*H). Each step is then one kernel: a tiled GEMM h_t w_hh^T whose thread owns hidden units
across all G gates, so the gate arithmetic runs in its epilogue and writes h_{t+1} (and c_{t+1})
directly. States live in one array hs (T+1, N, H), hs[0] = h0, so y is hs[1:]; the backward also
keeps the activated gates per step (`ws`).

Backward: per step, one kernel computes dh_{s-1} = dgh_s w_hh (+ GRU's direct z*dh term) as a
tiled GEMM, and in its epilogue the gate gradients of step s-1, element by element. After the
loop the input and weight gradients are three large GEMMs over all steps at once
(dx = dgi w_ih, dw_ih = dgi^T x, dw_hh = dgh^T h_prev, with h_prev = hs[:T]), and the bias
gradients column sums.
"""
import math

import numpy as np
from numba import cuda

from convbench.backends._numba_cuda_gemm import (
    PAD,
    _kernels,
    _tile_constants,
    column_sums,
    elementwise,
    float_type,
    launch_1d,
    run_gemm,
)
from convbench.backends._numba_cuda_tiles import Tiles

CELLS = {"rnn_tanh": 0, "lstm": 1, "gru": 2}
GATES = {"rnn_tanh": 1, "lstm": 4, "gru": 3}
#: Gate activations kept per step for the backward: LSTM i, f, g, o; GRU r, z, n and the
#: recurrent part of n's pre-activation (w_hh h + b_hh, needed for dr).
CACHED = {"rnn_tanh": 0, "lstm": 4, "gru": 4}


@cuda.jit(device=True)
def _sigmoid(a, one):
    return one / (one + math.exp(-a))


# --- gate gradients of step s at (n, u), given dh = dL/dh_{s+1} --------------------------------
@cuda.jit(device=True)
def _tanh_bwd(s, n, u, dh, N, H, hs, dgi, one):
    hn = hs[((s + 1) * N + n) * H + u]
    dgi[(s * N + n) * H + u] = dh * (one - hn * hn)


@cuda.jit(device=True)
def _lstm_bwd(s, n, u, dh, N, H, ws, cs, dgi, dc, one):
    base = (s * N + n) * 4 * H + u
    ig = ws[base]
    fg = ws[base + H]
    gg = ws[base + 2 * H]
    og = ws[base + 3 * H]
    tc = math.tanh(cs[((s + 1) * N + n) * H + u])
    dcn = dc[n * H + u] + dh * og * (one - tc * tc)
    dgi[base] = dcn * gg * ig * (one - ig)
    dgi[base + H] = dcn * cs[(s * N + n) * H + u] * fg * (one - fg)
    dgi[base + 2 * H] = dcn * ig * (one - gg * gg)
    dgi[base + 3 * H] = dh * tc * og * (one - og)
    dc[n * H + u] = dcn * fg


@cuda.jit(device=True)
def _gru_bwd(s, n, u, dh, N, H, ws, hs, dgi, dgh, direct, one):
    base = (s * N + n) * 4 * H + u
    r = ws[base]
    z = ws[base + H]
    nn = ws[base + 2 * H]
    ghn = ws[base + 3 * H]
    dan = dh * (one - z) * (one - nn * nn)
    dar = dan * ghn * r * (one - r)
    daz = dh * (hs[(s * N + n) * H + u] - nn) * z * (one - z)
    b3 = (s * N + n) * 3 * H + u
    dgi[b3] = dar
    dgi[b3 + H] = daz
    dgi[b3 + 2 * H] = dan
    dgh[b3] = dar
    dgh[b3 + H] = daz
    dgh[b3 + 2 * H] = dan * r
    direct[n * H + u] = dh * z


def step_fwd(t: Tiles, dtype, cell: str):
    """One forward step: rows n (batch), columns u (hidden units), each thread all G gates of
    its units. Grid (ceil(N/BM), ceil(H/BN)), block t.threads."""
    key = ("rnn_step_fwd", t, np.dtype(dtype).str, cell)
    if key in _kernels:
        return _kernels[key]
    BM, BN, BK, TM, TN = t.BM, t.BN, t.BK, t.TM, t.TN
    SM, SN, NT, AL, _ = _tile_constants(t)
    G, CELL = GATES[cell], CELLS[cell]
    BL = -(-G * BK * BN // NT)
    AW, BW = BM + PAD, BN + PAD
    ft = float_type(dtype)

    @cuda.jit(cache=True)
    def kernel(hs, cs, gi, w_hh, b_hh, has_bias, ws, store, step, N, H):
        As = cuda.shared.array((2, BK, AW), ft)
        Bs = cuda.shared.array((2, G, BK, BW), ft)
        acc = cuda.local.array((G, TM, TN), ft)
        af = cuda.local.array(TM, ft)
        bf = cuda.local.array((G, TN), ft)
        va = cuda.local.array(AL, ft)
        vb = cuda.local.array(BL, ft)
        tid = cuda.threadIdx.x
        tm = tid % SM
        tn = tid // SM
        m0 = cuda.blockIdx.x * BM
        n0 = cuda.blockIdx.y * BN
        one = ft(1)
        NH = N * H
        hoff = step * NH
        for gg in range(G):
            for i in range(TM):
                for j in range(TN):
                    acc[gg, i, j] = ft(0)
        ntiles = (H + BK - 1) // BK
        for tile in range(ntiles + 1):
            if tile > 0:
                buf = (tile - 1) % 2
                for slot in range(AL):
                    idx = tid + slot * NT
                    if idx < BM * BK:
                        As[buf, idx % BK, idx // BK] = va[slot]
                for slot in range(BL):
                    idx = tid + slot * NT
                    if idx < G * BK * BN:
                        rest = idx // BK
                        Bs[buf, rest // BN, idx % BK, rest % BN] = vb[slot]
                cuda.syncthreads()
            if tile < ntiles:
                k0 = tile * BK
                for slot in range(AL):
                    idx = tid + slot * NT
                    k = k0 + idx % BK
                    m = m0 + idx // BK
                    v = ft(0)
                    if idx < BM * BK and k < H and m < N:
                        v = hs[hoff + m * H + k]
                    va[slot] = v
                for slot in range(BL):
                    idx = tid + slot * NT
                    k = k0 + idx % BK
                    rest = idx // BK
                    u = n0 + rest % BN
                    v = ft(0)
                    if idx < G * BK * BN and k < H and u < H:
                        v = w_hh[((rest // BN) * H + u) * H + k]
                    vb[slot] = v
            if tile > 0:
                buf = (tile - 1) % 2
                for kk in range(BK):
                    for i in range(TM):
                        af[i] = As[buf, kk, tm + i * SM]
                    for gg in range(G):
                        for j in range(TN):
                            bf[gg, j] = Bs[buf, gg, kk, tn + j * SN]
                    for gg in range(G):
                        for i in range(TM):
                            for j in range(TN):
                                acc[gg, i, j] += af[i] * bf[gg, j]
        for i in range(TM):
            n = m0 + tm + i * SM
            for j in range(TN):
                u = n0 + tn + j * SN
                if n < N and u < H:
                    gb = (step * N + n) * G * H + u
                    if has_bias:
                        for gg in range(G):
                            acc[gg, i, j] += b_hh[gg * H + u]
                    o = hoff + NH + n * H + u
                    if CELL == 0:
                        hs[o] = math.tanh(gi[gb] + acc[0, i, j])
                    elif CELL == 1:
                        ig = _sigmoid(gi[gb] + acc[0, i, j], one)
                        fg = _sigmoid(gi[gb + H] + acc[1, i, j], one)
                        gg_ = math.tanh(gi[gb + 2 * H] + acc[2, i, j])
                        og = _sigmoid(gi[gb + 3 * H] + acc[3, i, j], one)
                        c = fg * cs[o - NH] + ig * gg_
                        cs[o] = c
                        hs[o] = og * math.tanh(c)
                        if store:
                            wb = (step * N + n) * 4 * H + u
                            ws[wb] = ig
                            ws[wb + H] = fg
                            ws[wb + 2 * H] = gg_
                            ws[wb + 3 * H] = og
                    else:
                        r = _sigmoid(gi[gb] + acc[0, i, j], one)
                        z = _sigmoid(gi[gb + H] + acc[1, i, j], one)
                        nn = math.tanh(gi[gb + 2 * H] + r * acc[2, i, j])
                        hs[o] = (one - z) * nn + z * hs[o - NH]
                        if store:
                            wb = (step * N + n) * 4 * H + u
                            ws[wb] = r
                            ws[wb + H] = z
                            ws[wb + 2 * H] = nn
                            ws[wb + 3 * H] = acc[2, i, j]

    _kernels[key] = kernel
    return kernel


def step_bwd(t: Tiles, dtype, cell: str):
    """dh_{s-1} = dgh_s w_hh (+ direct) as a tiled GEMM (rows n, columns u, reduction G*H); its
    epilogue runs step s-1's gate gradients, or, when `final`, writes dh0. Grid
    (ceil(N/BM), ceil(H/BN)), block t.threads."""
    key = ("rnn_step_bwd", t, np.dtype(dtype).str, cell)
    if key in _kernels:
        return _kernels[key]
    BM, BN, BK, TM, TN = t.BM, t.BN, t.BK, t.TM, t.TN
    SM, SN, NT, AL, BL = _tile_constants(t)
    G, CELL = GATES[cell], CELLS[cell]
    AW, BW = BM + PAD, BN + PAD
    ft = float_type(dtype)

    @cuda.jit(cache=True)
    def kernel(dgh, w_hh, direct, s, final, dh0, dy, dgi, dc, ws, hs, cs, N, H):
        As = cuda.shared.array((2, BK, AW), ft)
        Bs = cuda.shared.array((2, BK, BW), ft)
        acc = cuda.local.array((TM, TN), ft)
        af = cuda.local.array(TM, ft)
        bf = cuda.local.array(TN, ft)
        va = cuda.local.array(AL, ft)
        vb = cuda.local.array(BL, ft)
        tid = cuda.threadIdx.x
        tm = tid % SM
        tn = tid // SM
        m0 = cuda.blockIdx.x * BM
        n0 = cuda.blockIdx.y * BN
        one = ft(1)
        GH = G * H
        aoff = s * N * GH
        for i in range(TM):
            for j in range(TN):
                acc[i, j] = ft(0)
        ntiles = (GH + BK - 1) // BK
        for tile in range(ntiles + 1):
            if tile > 0:
                buf = (tile - 1) % 2
                for slot in range(AL):
                    idx = tid + slot * NT
                    if idx < BM * BK:
                        As[buf, idx % BK, idx // BK] = va[slot]
                for slot in range(BL):
                    idx = tid + slot * NT
                    if idx < BK * BN:
                        Bs[buf, idx // BN, idx % BN] = vb[slot]
                cuda.syncthreads()
            if tile < ntiles:
                k0 = tile * BK
                for slot in range(AL):
                    idx = tid + slot * NT
                    k = k0 + idx % BK
                    m = m0 + idx // BK
                    v = ft(0)
                    if idx < BM * BK and k < GH and m < N:
                        v = dgh[aoff + m * GH + k]
                    va[slot] = v
                for slot in range(BL):
                    idx = tid + slot * NT
                    k = k0 + idx // BN
                    u = n0 + idx % BN
                    v = ft(0)
                    if idx < BK * BN and k < GH and u < H:
                        v = w_hh[k * H + u]
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
        for i in range(TM):
            n = m0 + tm + i * SM
            for j in range(TN):
                u = n0 + tn + j * SN
                if n < N and u < H:
                    v = acc[i, j]
                    if CELL == 2:
                        v += direct[n * H + u]
                    if final:
                        dh0[n * H + u] = v
                    else:
                        dh = v + dy[((s - 1) * N + n) * H + u]
                        if CELL == 0:
                            _tanh_bwd(s - 1, n, u, dh, N, H, hs, dgi, one)
                        elif CELL == 1:
                            _lstm_bwd(s - 1, n, u, dh, N, H, ws, cs, dgi, dc, one)
                        else:
                            _gru_bwd(s - 1, n, u, dh, N, H, ws, hs, dgi, dgh, direct, one)

    _kernels[key] = kernel
    return kernel


def _make_gates_bwd_last(cell):
    CELL = CELLS[cell]

    def make(ft):
        @cuda.jit(cache=True)
        def gates_bwd_last(dy, dhT, has_dhT, dcT, has_dcT, dgi, dgh, dc, direct, ws, hs, cs,
                           T, N, H):
            """The gate gradients of the last step, from dy[T-1] (+ dhT) and dcT."""
            one = ft(1)
            s = T - 1
            for idx in range(cuda.grid(1), N * H, cuda.gridsize(1)):
                n = idx // H
                u = idx - n * H
                dh = dy[s * N * H + idx]
                if has_dhT:
                    dh += dhT[idx]
                if CELL == 0:
                    _tanh_bwd(s, n, u, dh, N, H, hs, dgi, one)
                elif CELL == 1:
                    dc[idx] = dcT[idx] if has_dcT else ft(0)
                    _lstm_bwd(s, n, u, dh, N, H, ws, cs, dgi, dc, one)
                else:
                    _gru_bwd(s, n, u, dh, N, H, ws, hs, dgi, dgh, direct, one)
        return gates_bwd_last
    return make


def _make_flip_steps(ft):
    @cuda.jit(cache=True)
    def flip_steps(a, out, T, M):
        """out[t] = a[T-1-t], M values a step: a reversed layer runs on the flipped sequence."""
        for idx in range(cuda.grid(1), T * M, cuda.gridsize(1)):
            t = idx // M
            out[idx] = a[idx + (T - 1 - 2 * t) * M]
    return flip_steps


def flip_steps(a, T: int, M: int, threads: int):
    """A new flat array with the T steps of a (M values each) in reverse order."""
    out = cuda.device_array(T * M, a.dtype)
    launch_1d(elementwise("flip_steps", a.dtype, _make_flip_steps), T * M, threads, a, out, T, M)
    return out


# --- host drivers: flat device arrays -------------------------------------------------------------
def forward(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh, gemm_tiles, step_tiles, store=False):
    """(hs (T+1)*N*H, cs or None, ws or None): the states of every step, flat."""
    T, N, H, I, G = p.T, p.N, p.H, p.I, p.gates  # noqa: E741 - PyTorch's name for the input size
    dt = x.dtype
    gi = cuda.device_array(T * N * G * H, dt)
    run_gemm(gemm_tiles, x, w_ih, gi, b_ih, T * N, G * H, I, I, I, G * H, True, False)
    hs = cuda.device_array((T + 1) * N * H, dt)
    hs[:N * H].copy_to_device(h0)
    cs = None
    if p.cell == "lstm":
        cs = cuda.device_array((T + 1) * N * H, dt)
        cs[:N * H].copy_to_device(c0)
    ws = cuda.device_array(max(1, T * N * CACHED[p.cell] * H if store else 1), dt)
    k = step_fwd(step_tiles, dt, p.cell)
    grid = (-(-N // step_tiles.BM), -(-H // step_tiles.BN))
    has_bias = b_hh is not None
    for t in range(T):
        k[grid, step_tiles.threads](hs, hs if cs is None else cs, gi,
                                    w_hh, b_hh if has_bias else gi, has_bias,
                                    ws, store and CACHED[p.cell] > 0, t, N, H)
    return hs, cs, ws


def backward(p, dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh, gemm_tiles, step_tiles,
             threads):
    """(dx, dh0, dc0 or None, dw_ih, dw_hh, db_ih or None, db_hh or None), flat."""
    T, N, H, I, G = p.T, p.N, p.H, p.I, p.gates  # noqa: E741 - PyTorch's name for the input size
    GH = G * H
    dt = x.dtype
    hs, cs, ws = forward(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh, gemm_tiles, step_tiles, True)
    cs_ = hs if cs is None else cs
    dgi = cuda.device_array(T * N * GH, dt)
    dgh = cuda.device_array(T * N * GH, dt) if p.cell == "gru" else dgi
    state = cuda.device_array(N * H, dt)       # LSTM's dc, or GRU's direct z*dh term
    dh0 = cuda.device_array(N * H, dt)
    last = elementwise(f"rnn_gates_bwd_last_{p.cell}", dt, _make_gates_bwd_last(p.cell))
    launch_1d(last, N * H, threads, dy, dy if dhT is None else dhT, dhT is not None,
              dy if dcT is None else dcT, dcT is not None, dgi, dgh, state, state, ws, hs, cs_,
              T, N, H)
    k = step_bwd(step_tiles, dt, p.cell)
    grid = (-(-N // step_tiles.BM), -(-H // step_tiles.BN))
    for s in range(T - 1, -1, -1):
        k[grid, step_tiles.threads](dgh, w_hh, state, s, s == 0, dh0, dy, dgi, state, ws, hs,
                                    cs_, N, H)
    dx = cuda.device_array(T * N * I, dt)
    run_gemm(gemm_tiles, dgi, w_ih, dx, None, T * N, I, GH, GH, I, I, True, True)
    dw_ih = cuda.device_array(GH * I, dt)
    run_gemm(gemm_tiles, dgi, x, dw_ih, None, GH, I, T * N, GH, I, I, False, True)
    dw_hh = cuda.device_array(GH * H, dt)
    run_gemm(gemm_tiles, dgh, hs, dw_hh, None, GH, H, T * N, GH, H, H, False, True)
    db_ih = db_hh = None
    if b_ih is not None:
        db_ih = cuda.device_array(GH, dt)
        db_hh = cuda.device_array(GH, dt)
        column_sums(dgi, db_ih, T * N, GH, threads)
        column_sums(dgh, db_hh, T * N, GH, threads)
    return dx, dh0, state if p.cell == "lstm" else None, dw_ih, dw_hh, db_ih, db_hh
