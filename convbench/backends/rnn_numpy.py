"""Recurrent layers in NumPy, in the input's dtype: the input projection of the whole sequence is
one GEMM, each step one GEMM for the hidden state plus the gate arithmetic (ExactSteps, or the
fused Numba kernels of numba-cpu); in the backward pass only dh needs a GEMM per step, the input
and weight gradients are one GEMM each. The equations are in ops.rnn's docstring.

The matrix products go through a `products` object: BlasProducts (NumPy's BLAS, the numpy
backend) or numba-cpu's, on convbench's own GEMM with the recurrent weights packed once per call.

A reversed layer runs the steps from last to first. The original GRU (linear_before_reset=False)
needs two hidden GEMMs per step, the r and z rows on h and the n rows on r*h, with the gate
arithmetic split around the second (ExactSteps.gru0_*)."""
from __future__ import annotations

import numpy as np


def sigmoid(a):
    # for large |a| both branches are exact to rounding; the split keeps exp from overflowing
    out = np.empty_like(a)
    pos = a >= 0
    out[pos] = 1 / (1 + np.exp(-a[pos]))
    e = np.exp(a[~pos])
    out[~pos] = e / (1 + e)
    return out


class ExactSteps:
    """One time step's gate arithmetic in NumPy, for any dtype. `FusedSteps` (numba-cpu) has the
    same interface on compiled kernels."""

    @staticmethod
    def step_forward(cell: str, gi, gh, h, c):
        """gi, gh (N, G*H) -> (h', c' or None, cache for the backward)."""
        H = h.shape[1]
        if cell == "rnn_tanh":
            hn = np.tanh(gi + gh)
            return hn, None, (hn,)
        if cell == "lstm":
            a = gi + gh
            i, f, o = sigmoid(a[:, :H]), sigmoid(a[:, H:2 * H]), sigmoid(a[:, 3 * H:])
            g = np.tanh(a[:, 2 * H:3 * H])
            cn = f * c + i * g
            tc = np.tanh(cn)
            return o * tc, cn, (i, f, g, o, c, tc)
        r = sigmoid(gi[:, :H] + gh[:, :H])
        z = sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
        ghn = gh[:, 2 * H:]
        n = np.tanh(gi[:, 2 * H:] + r * ghn)
        return (1 - z) * n + z * h, None, (r, z, n, ghn, h)

    @staticmethod
    def step_backward(cell: str, dh, dc, cache):
        """dh, dc: gradients w.r.t. h' and c' (dc None unless LSTM) ->
        (d gi, d gh, direct part of d h_prev (None if only through w_hh), d c_prev or None)."""
        if cell == "rnn_tanh":
            (hn,) = cache
            da = dh * (1 - hn * hn)
            return da, da, None, None
        if cell == "lstm":
            i, f, g, o, c, tc = cache
            dcn = dc + dh * o * (1 - tc * tc)
            da = np.concatenate([dcn * g * i * (1 - i), dcn * c * f * (1 - f),
                                 dcn * i * (1 - g * g), dh * tc * o * (1 - o)], axis=1)
            return da, da, None, dcn * f
        r, z, n, ghn, h = cache
        dan = dh * (1 - z) * (1 - n * n)
        dar = dan * ghn * r * (1 - r)
        daz = dh * (h - n) * z * (1 - z)
        dgi = np.concatenate([dar, daz, dan], axis=1)
        dgh = np.concatenate([dar, daz, dan * r], axis=1)
        return dgi, dgh, dh * z, None


    # --- the original GRU (Cho et al. 2014): gates split around the second hidden GEMM --------
    @staticmethod
    def gru0_reset(gi, gh_rz, h):
        """-> r, z, r*h."""
        H = h.shape[1]
        r = sigmoid(gi[:, :H] + gh_rz[:, :H])
        z = sigmoid(gi[:, H:2 * H] + gh_rz[:, H:])
        return r, z, r * h

    @staticmethod
    def gru0_update(gi, gh_n, z, h):
        """-> h', n (gh_n = (r*h) w_hn^T + b_hn)."""
        H = h.shape[1]
        n = np.tanh(gi[:, 2 * H:] + gh_n)
        return (1 - z) * n + z * h, n

    @staticmethod
    def gru0_grad_update(dh, z, n, h):
        """dh' -> (d a_n, d a_z, the part of d h_prev through z*h)."""
        return dh * (1 - z) * (1 - n * n), dh * (h - n) * z * (1 - z), dh * z

    @staticmethod
    def gru0_grad_reset(d_rh, r, h):
        """d(r*h) -> (d a_r, the part of d h_prev through r*h)."""
        return d_rh * h * r * (1 - r), d_rh * r


class BlasProducts:
    """The driver's matrix products through NumPy's BLAS. `right(w, trans, rows)` prepares op(w)
    (w.T with trans) as the right operand of many products with `rows`-row left operands (the
    recurrent weights over the time steps); `mm(x, r, trans_x)` is op(x) @ r, with r prepared or
    a plain array."""

    @staticmethod
    def right(w, trans: bool, rows: int):
        return w.T if trans else w

    @staticmethod
    def mm(x, r, trans_x: bool = False):
        return (x.T if trans_x else x) @ r


def _plus(y, b):
    """y + b in place (y is a fresh product)."""
    y += b
    return y


def _gru0_step(steps, mm, gi, h, w_rz, w_n, b_hh):
    H = h.shape[1]
    r, z, rh = steps.gru0_reset(gi, _plus(mm(h, w_rz), b_hh[:2 * H]), h)
    hn, n = steps.gru0_update(gi, _plus(mm(rh, w_n), b_hh[2 * H:]), z, h)
    return hn, (r, z, n, h, rh)


def _gru0_step_grad(steps, mm, dh, cache, w_rz, w_n):
    """-> (d gi, d gh with gh's n rows meaning (r*h) w_hn^T, d h_prev); w_rz and w_n are the
    prepared right operands w_hh[:2H] and w_hh[2H:]."""
    r, z, n, h, _ = cache
    H = h.shape[1]
    dan, daz, dh_z = steps.gru0_grad_update(dh, z, n, h)
    d_rh = mm(dan, w_n)
    dar, dh_r = steps.gru0_grad_reset(d_rh, r, h)
    da = np.concatenate([dar, daz, dan], axis=1)
    return da, da, _plus(_plus(mm(da[:, :2 * H], w_rz), dh_z), dh_r)


#: Arrays of (N, H) [and of (N, G*H)] each step keeps for the backward, per cell: ExactSteps
#: keeps the gates (GRU's (N, G*H) gh whole, through a view of it), FusedSteps the activations.
EXACT_CACHE = {"rnn_tanh": (1, 0), "lstm": (6, 0), "gru": (4, 1)}
FUSED_CACHE = {"rnn_tanh": (1, 0), "lstm": (2, 1), "gru": (1, 2)}


def workspace_bytes(p, direction: str, itemsize: int, fused: bool = False) -> int:
    """Peak scratch bytes of forward/backward below: the input projection of the whole sequence
    (its GEMM and the bias sum), a step's GEMM and gate arithmetic, and for the backward the
    outputs and per-step caches of the forward it reruns, the gate gradients of every step and
    the stacked previous states."""
    s, N, H, T = itemsize, p.N, p.H, p.T
    GH = p.gates * H
    step = (3 * N * GH + 12 * N * H) * s
    if direction == "fwd":
        return 2 * T * N * GH * s + step
    if getattr(p, "original_gru", False):    # (r, z, n, h, r*h), and r*h of every step stacked
        nh, ngh = 6, 0
    else:
        nh, ngh = (FUSED_CACHE if fused else EXACT_CACHE)[p.cell]
    caches = T * (nh * N * H + ngh * N * GH) * s
    return (2 * T * N * H + 2 * T * N * GH) * s + caches + step


def _bias(b, n, dtype):
    return np.zeros(n, dtype) if b is None else b


def _run_forward(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh, keep, steps, products):
    GH = w_ih.shape[0]
    mm = products.mm
    gi_all = _plus(mm(x.reshape(-1, p.I), products.right(w_ih, True, p.T * p.N)),
                   _bias(b_ih, GH, x.dtype)).reshape(p.T, p.N, GH)
    b_hh = _bias(b_hh, GH, x.dtype)
    y = np.empty(p.y_shape, dtype=x.dtype)
    h, c, caches = h0, c0, [None] * p.T
    if p.original_gru:
        H2 = 2 * p.H
        w_rz = products.right(w_hh[:H2], True, p.N)
        w_n = products.right(w_hh[H2:], True, p.N)
    else:
        w_hh_t = products.right(w_hh, True, p.N)
    for t in p.steps:
        if p.original_gru:
            h, cache = _gru0_step(steps, mm, gi_all[t], h, w_rz, w_n, b_hh)
        else:
            h, c, cache = steps.step_forward(p.cell, gi_all[t], _plus(mm(h, w_hh_t), b_hh), h, c)
        y[t] = h
        if keep:
            caches[t] = cache
    return y, h, c, caches


def forward(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh, steps=ExactSteps, products=BlasProducts):
    """steps: the gate arithmetic, ExactSteps or numba-cpu's FusedSteps; products: the GEMMs."""
    y, h, c, _ = _run_forward(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh, False, steps, products)
    return y, h, c


def backward(p, dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh, steps=ExactSteps,
             products=BlasProducts):
    y, _, _, caches = _run_forward(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh, True, steps, products)
    mm = products.mm
    GH = w_ih.shape[0]
    dgi_all = np.empty((p.T, p.N, GH), dtype=x.dtype)
    dgh_all = np.empty((p.T, p.N, GH), dtype=x.dtype)
    dh = np.zeros(p.h_shape, x.dtype) if dhT is None else dhT
    dc = (np.zeros(p.h_shape, x.dtype) if dcT is None else dcT) if p.has_cell_state else None
    H2 = 2 * p.H
    if p.original_gru:
        w_rz = products.right(w_hh[:H2], False, p.N)
        w_n = products.right(w_hh[H2:], False, p.N)
    else:
        w_back = products.right(w_hh, False, p.N)
    for t in reversed(p.steps):
        if p.original_gru:
            dgi, dgh, dh = _gru0_step_grad(steps, mm, dy[t] + dh, caches[t], w_rz, w_n)
        else:
            dgi, dgh, dh_direct, dc = steps.step_backward(p.cell, dy[t] + dh, dc, caches[t])
            dh = mm(dgh, w_back)
            if dh_direct is not None:
                dh += dh_direct
        dgi_all[t], dgh_all[t] = dgi, dgh
    # the state each step read: the previous step's output, h0 for the first step run
    if p.reverse:
        h_prev = np.concatenate([y[1:], h0[None]]).reshape(-1, p.H)
    else:
        h_prev = np.concatenate([h0[None], y[:-1]]).reshape(-1, p.H)
    dgi2, dgh2 = dgi_all.reshape(-1, GH), dgh_all.reshape(-1, GH)
    dx = mm(dgi2, w_ih).reshape(p.x_shape)
    if b_ih is None:
        db_ih = db_hh = None
    else:
        db_ih, db_hh = dgi2.sum(axis=0), dgh2.sum(axis=0)
    if p.original_gru:          # the n rows of w_hh multiply r*h
        rh = np.stack([cache[4] for cache in caches]).reshape(-1, p.H)
        dw_hh = np.concatenate([mm(dgh2[:, :H2], h_prev, True), mm(dgh2[:, H2:], rh, True)])
    else:
        dw_hh = mm(dgh2, h_prev, True)
    return dx, dh, dc, mm(dgi2, x.reshape(-1, p.I), True), dw_hh, db_ih, db_hh
