"""Recurrent layers in NumPy, in the input's dtype: the input projection of the whole sequence is
one GEMM, each step one GEMM for the hidden state plus the gate arithmetic (ExactSteps, or the
fused Numba kernels of numba-cpu); in the backward pass only dh needs a GEMM per step, the input
and weight gradients are one GEMM each. The equations are in ops.rnn's docstring."""
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


def _bias(b, n, dtype):
    return np.zeros(n, dtype) if b is None else b


def _run_forward(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh, keep, step_forward):
    GH = w_ih.shape[0]
    gi_all = (x.reshape(-1, p.I) @ w_ih.T + _bias(b_ih, GH, x.dtype)).reshape(p.T, p.N, GH)
    b_hh = _bias(b_hh, GH, x.dtype)
    y = np.empty(p.y_shape, dtype=x.dtype)
    h, c, caches = h0, c0, []
    for t in range(p.T):
        h, c, cache = step_forward(p.cell, gi_all[t], h @ w_hh.T + b_hh, h, c)
        y[t] = h
        if keep:
            caches.append(cache)
    return y, h, c, caches


def forward(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh, steps=ExactSteps):
    """steps: the gate arithmetic, ExactSteps or numba-cpu's FusedSteps."""
    y, h, c, _ = _run_forward(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh, False, steps.step_forward)
    return y, h, c


def backward(p, dy, dhT, dcT, x, h0, c0, w_ih, w_hh, b_ih, b_hh, steps=ExactSteps):
    y, _, _, caches = _run_forward(p, x, h0, c0, w_ih, w_hh, b_ih, b_hh, True, steps.step_forward)
    GH = w_ih.shape[0]
    dgi_all = np.empty((p.T, p.N, GH), dtype=x.dtype)
    dgh_all = np.empty((p.T, p.N, GH), dtype=x.dtype)
    dh = np.zeros(p.h_shape, x.dtype) if dhT is None else dhT
    dc = (np.zeros(p.h_shape, x.dtype) if dcT is None else dcT) if p.has_cell_state else None
    for t in reversed(range(p.T)):
        dgi, dgh, dh_direct, dc = steps.step_backward(p.cell, dy[t] + dh, dc, caches[t])
        dgi_all[t], dgh_all[t] = dgi, dgh
        dh = dgh @ w_hh
        if dh_direct is not None:
            dh += dh_direct
    h_prev = np.concatenate([h0[None], y[:-1]]).reshape(-1, p.H)
    dgi2, dgh2 = dgi_all.reshape(-1, GH), dgh_all.reshape(-1, GH)
    dx = (dgi2 @ w_ih).reshape(p.x_shape)
    if b_ih is None:
        db_ih = db_hh = None
    else:
        db_ih, db_hh = dgi2.sum(axis=0), dgh2.sum(axis=0)
    return dx, dh, dc, dgi2.T @ x.reshape(-1, p.I), dgh2.T @ h_prev, db_ih, db_hh
